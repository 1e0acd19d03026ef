// Tether Connect for the CRM's own pages (README, "Connect from your own
// page"). Call it from a click handler, so the browser allows the popup:
//
//   TetherConnect.open({session: sessionToken, provider: "hubspot"}).then(...)
//   TetherConnect.open(connectLinkUrl).then(function (outcome) { ... });
//
// A connect session (POST /api/v1/tenants/{t}/connect-sessions, fetched by
// the CRM's backend when the page loads) serves every Connect button of the
// page, as many times as it allows; a connect link serves one connect.
// It opens the connect link in a popup, adding this page's origin, which
// Tether checks against TETHER_EMBED_ORIGINS. The popup's last page posts the
// outcome to exactly that origin. The promise resolves once, with
//   {status: "connected" | "failed", provider, account, message}  (told by the popup)
//   {status: "closed"}   the popup closed, or the provider's pages cut it off
//                        from this page (Cross-Origin-Opener-Policy), untold
//   {status: "blocked"}  the browser refused to open a popup
// It never carries a token. After "closed", ask your backend for the status.
(function (root) {
  "use strict";

  var POLL_MS = 300;
  // Where this script came from: Tether, which serves the session's pages.
  var script = root.document.currentScript;
  var TETHER = script && script.src ? new URL(script.src).origin : root.location.origin;

  // The page a target opens: a connect link as it is, or a session's page
  // for one of its providers.
  function pageOf(target) {
    if (target && typeof target === "object") {
      return new URL(
        "/connect/session/" + encodeURIComponent(String(target.session)) +
          "/" + encodeURIComponent(String(target.provider)),
        TETHER
      );
    }
    return new URL(target, root.location.href);
  }

  function outcomeOf(data) {
    return {
      status: data.ok === true ? "connected" : "failed",
      provider: String(data.provider || ""),
      account: typeof data.account === "string" ? data.account : null,
      message: String(data.message || "")
    };
  }

  function open(target, options) {
    var onResult = options && options.onResult;
    var link = pageOf(target);
    link.searchParams.set("embed", root.location.origin);
    var popup = root.open(link.href, "", "popup=yes,width=560,height=720");

    var result = new Promise(function (resolve) {
      if (!popup) {
        resolve({ status: "blocked" });
        return;
      }
      var settled = false;
      var seenClosed = false;
      function settle(outcome) {
        if (settled) return;
        settled = true;
        root.removeEventListener("message", onMessage);
        root.clearInterval(timer);
        resolve(outcome);
      }
      // Only our popup, on the link's own origin, is believed.
      function onMessage(event) {
        var data = event.data;
        if (event.origin !== link.origin || event.source !== popup) return;
        if (!data || data.type !== "tether:oauth") return;
        settle(outcomeOf(data));
      }
      root.addEventListener("message", onMessage);
      // A closed popup is "closed" one look later: a message it posted just
      // before closing is delivered first.
      var timer = root.setInterval(function () {
        if (!popup.closed) return;
        if (seenClosed) settle({ status: "closed" });
        seenClosed = true;
      }, POLL_MS);
      popup.focus();
    });
    if (typeof onResult === "function") result.then(onResult);
    return result;
  }

  root.TetherConnect = { open: open };
})(window);
