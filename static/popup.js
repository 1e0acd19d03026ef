// The last page of a popup: a result page (#result) or an error page
// (#problem). A result page tells the window that opened it, at exactly the
// origin the page names (ours for the dashboard, a listed CRM page's for
// connect.js), then closes. An error page in the dashboard's popup (its
// window name) tells the dashboard the same way and closes; in any other
// popup it offers "Close this window" instead of a way into the dashboard.
// With no opener left (a provider's Cross-Origin-Opener-Policy cuts it),
// nothing is posted and the page stays, with its own button.
(function () {
  "use strict";
  var DASHBOARD_POPUP = "tether-oauth";

  function tell(target, data) {
    if (!window.opener || !target) return false;
    try {
      window.opener.postMessage(data, target);
      return true;
    } catch (e) {
      return false;
    }
  }

  function offerClose(page) {
    var close = page.querySelector('[data-action="close-window"]');
    var back = page.querySelector('[data-action="back"]');
    if (close) {
      close.hidden = false;
      close.addEventListener("click", function () { window.close(); });
    }
    if (back) back.hidden = true;
  }

  var result = document.getElementById("result");
  if (result) {
    var target = result.dataset.target === "self" ? window.location.origin : result.dataset.target;
    var told = tell(target, {
      type: "tether:oauth",
      provider: result.dataset.provider,
      ok: result.dataset.ok === "true",
      account: result.dataset.account || null,
      message: result.dataset.message
    });
    offerClose(result);
    if (told) window.close();
    return;
  }

  var problem = document.getElementById("problem");
  if (!problem) return;
  var inPopup = !!window.opener || window.name === DASHBOARD_POPUP;
  if (!inPopup) return;
  offerClose(problem);
  if (window.name !== DASHBOARD_POPUP) return;
  var match = window.location.pathname.match(/^\/oauth\/([^\/]+)\//);
  var told = tell(window.location.origin, {
    type: "tether:oauth",
    provider: match ? decodeURIComponent(match[1]) : "",
    ok: false,
    account: null,
    message: problem.dataset.message || ""
  });
  if (told) window.close();
})();
