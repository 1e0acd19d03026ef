// Dashboard: Connect opens a popup on the click itself (so browsers allow it);
// if the popup is blocked the link is followed as a full-page redirect. The
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

  document.addEventListener("click", function (event) {
    var link = event.target.closest('a[data-action="connect"]');
    if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
    var url = link.getAttribute("href") + "&popup=1";
    var popup = window.open(url, "tether-oauth", "popup=yes,width=560,height=720");
    if (popup) {
      event.preventDefault();
      popup.focus();
    }
    // Blocked: the browser follows the link in this window.
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
