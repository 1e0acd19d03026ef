// Dashboard: Connect opens a popup on the submit itself (so browsers allow
// it); if the popup is blocked the form is sent as a full-page redirect. The
// popup reports back by postMessage; only messages from our own origin count.
(function () {
  "use strict";

  function announce(message, ok) {
    var flash = document.getElementById("flash");
    if (!flash) return;
    var p = document.createElement("p");
    p.className = "flash " + (ok ? "flash-ok" : "flash-warn");
    p.setAttribute("role", "status");
    p.textContent = message;
    flash.replaceChildren(p);
  }

  function reloadCard(provider) {
    var card = document.querySelector('[data-provider="' + CSS.escape(provider) + '"].card');
    if (!card) return Promise.resolve();
    return fetch("/settings/integrations/cards/" + encodeURIComponent(provider), { credentials: "same-origin" })
      .then(function (res) {
        if (!res.ok) throw new Error("HTTP " + res.status);
        return res.text();
      })
      .then(function (html) {
        var tpl = document.createElement("template");
        tpl.innerHTML = html.trim();
        var fresh = tpl.content.firstElementChild;
        if (fresh) card.replaceWith(fresh);
      })
      .catch(function () { window.location.reload(); });
  }

  // Connect and Reconnect are forms (a POST with the CSRF token). On submit
  // an empty popup is opened and the form is sent into it; if the popup is
  // blocked, the form is sent in this window as a full-page redirect.
  document.addEventListener("submit", function (event) {
    var form = event.target.closest('form[data-form="connect"]');
    if (!form) return;
    var popup = window.open("", "tether-oauth", "popup=yes,width=560,height=720");
    var flag = form.querySelector('input[name="popup"]');
    if (popup) {
      flag.value = "1";
      form.target = "tether-oauth";
      popup.focus();
    } else {
      flag.value = "0";
      form.removeAttribute("target");
    }
  });

  window.addEventListener("message", function (event) {
    if (event.origin !== window.location.origin) return;
    var data = event.data;
    if (!data || data.type !== "tether:oauth" || typeof data.provider !== "string") return;
    reloadCard(data.provider).then(function () {
      announce(String(data.message || ""), !!data.ok);
    });
  });
})();
