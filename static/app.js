// The Integrations page. Every action works without this script (forms that
// post and come back to the card's anchor); the script adds:
// - Connect and Reconnect in a popup opened on the submit itself (so browsers
//   allow it), the card marked pending while it is open, and every ending of
//   it (approved, declined, failed, closed by hand) told on the card;
// - buttons that show they are working and cannot be sent twice;
// - times in the viewer's own zone, relative ("in 58 min") and kept current;
// - focus moved to the card an action's outcome is shown on.
// Only messages from our own origin are believed.
(function () {
  "use strict";

  var POPUP = "tether-oauth";
  var POLL_MS = 300;

  // ---- Times -------------------------------------------------------------

  function relative(secs) {
    var n = Math.abs(secs);
    if (n < 60) return "just now";
    var count, unit;
    if (n < 3600) { count = Math.floor(n / 60); unit = "min"; }
    else if (n < 86400) { count = Math.floor(n / 3600); unit = "h"; }
    else { count = Math.floor(n / 86400); unit = count < 2 ? "day" : "days"; }
    return secs > 0 ? "in " + count + " " + unit : count + " " + unit + " ago";
  }

  function localTimes(root) {
    var now = Date.now();
    root.querySelectorAll("time[data-rel]").forEach(function (el) {
      var at = Date.parse(el.getAttribute("datetime"));
      if (isNaN(at)) return;
      el.textContent = relative(Math.round((at - now) / 1000));
      el.title = new Date(at).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
    });
  }

  // ---- Messages on a card --------------------------------------------------

  function cardOf(provider) {
    return document.querySelector('article.card[data-provider="' + CSS.escape(provider) + '"]');
  }

  // Shows `message` on the provider's card (or at the top of the page when
  // it has none) and moves focus there, so the outcome is where the admin is.
  function tell(provider, message, ok, actions, keepFocus) {
    var card = provider ? cardOf(provider) : null;
    var region = card ? card.querySelector("[data-card-message]") : document.getElementById("flash");
    if (!region) return;
    var p = document.createElement("p");
    p.className = "flash " + (ok ? "flash-ok" : "flash-warn");
    p.setAttribute("role", ok ? "status" : "alert");
    p.textContent = message;
    (actions || []).forEach(function (a) {
      var b = document.createElement("button");
      b.type = "button";
      b.className = "link";
      b.textContent = a.label;
      b.addEventListener("click", a.run);
      p.appendChild(document.createTextNode(" "));
      p.appendChild(b);
    });
    region.replaceChildren(p);
    if (keepFocus) return;
    var focusable = card || region;
    if (!focusable.hasAttribute("tabindex")) focusable.setAttribute("tabindex", "-1");
    focusable.focus({ preventScroll: true });
    focusable.scrollIntoView({ block: "nearest" });
  }

  // Draws the page's board again (what needs attention, the sections, every
  // card) from the server, keeping the top of the page.
  function refreshBoard() {
    return fetch(window.location.pathname, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (res) {
        if (res.redirected || !res.ok) throw new Error("HTTP " + res.status);
        return res.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("board");
        var board = document.getElementById("board");
        if (!fresh || !board) throw new Error("no board");
        board.replaceChildren.apply(board, Array.prototype.slice.call(fresh.childNodes).map(function (n) {
          return document.importNode(n, true);
        }));
        localTimes(board);
      });
  }

  // ---- Connect in a popup --------------------------------------------------

  // The flow in progress: {provider, name, popup, timer, button}.
  var pending = null;

  function providerName(form) {
    var card = cardOf(form.dataset.provider || "");
    var title = card && card.querySelector(".card-head h3");
    return title ? title.textContent.trim() : "the service";
  }

  function endPending() {
    if (!pending) return null;
    var p = pending;
    pending = null;
    window.clearInterval(p.timer);
    var card = cardOf(p.provider);
    if (card) card.classList.remove("pending");
    if (p.button) {
      p.button.removeAttribute("aria-busy");
      p.button.removeAttribute("aria-disabled");
      p.button.classList.remove("busy");
    }
    return p;
  }

  function watch(form, popup) {
    var provider = form.dataset.provider || "";
    var button = form.querySelector('button[type="submit"]');
    var name = providerName(form);
    endPending();
    var seenClosed = false;
    pending = { provider: provider, name: name, popup: popup, button: button };
    var card = cardOf(provider);
    if (card) card.classList.add("pending");
    if (button) {
      button.setAttribute("aria-busy", "true");
      button.setAttribute("aria-disabled", "true");
      button.classList.add("busy");
    }
    tell(provider, "Finishing in the " + name + " window…", true, [
      { label: "Reopen window", run: function () { if (!popup.closed) popup.focus(); } },
      {
        label: "Cancel",
        run: function () {
          endPending();
          popup.close();
          tell(provider, "Not connected: you cancelled. Nothing changed.", false);
        }
      }
    ], true);
    // A closed popup is "closed" one look later: a message it posted just
    // before closing is delivered first.
    pending.timer = window.setInterval(function () {
      if (!popup.closed) return;
      if (!seenClosed) { seenClosed = true; return; }
      var p = endPending();
      if (!p) return;
      tell(p.provider, "Not connected: the " + p.name + " window was closed before it finished. Nothing changed.", false, [
        { label: "Try again", run: function () { form.requestSubmit(); } }
      ]);
    }, POLL_MS);
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.matches('form[data-form="connect"]')) {
      var flag = form.querySelector('input[name="popup"]');
      var popup = window.open("", POPUP, "popup=yes,width=560,height=720");
      if (popup) {
        flag.value = "1";
        form.target = POPUP;
        popup.focus();
        watch(form, popup);
      } else {
        // Blocked: the flow goes on in this tab and comes back to the card.
        flag.value = "0";
        form.removeAttribute("target");
      }
      return;
    }
    // Any other form that posts: sent once, its button saying so.
    if (form.method.toLowerCase() !== "post") return;
    if (form.dataset.sending === "1") {
      event.preventDefault();
      return;
    }
    form.dataset.sending = "1";
    var button = event.submitter || form.querySelector('button[type="submit"]');
    if (button) {
      button.setAttribute("aria-busy", "true");
      button.setAttribute("aria-disabled", "true");
      button.classList.add("busy");
      if (form.dataset.busy) {
        var hidden = button.querySelector(".sr-only");
        button.textContent = form.dataset.busy;
        if (hidden) button.appendChild(hidden);
      }
    }
  });

  // A page restored from the back/forward cache may hold a sent form.
  window.addEventListener("pageshow", function () {
    document.querySelectorAll('form[data-sending="1"]').forEach(function (f) { delete f.dataset.sending; });
  });

  window.addEventListener("message", function (event) {
    if (event.origin !== window.location.origin) return;
    var data = event.data;
    if (!data || data.type !== "tether:oauth" || typeof data.provider !== "string") return;
    var p = endPending();
    var provider = data.provider || (p && p.provider) || "";
    var message = String(data.message || "");
    refreshBoard()
      .then(function () { tell(provider, message, !!data.ok); })
      .catch(function () { window.location.reload(); });
  });

  // ---- Small things --------------------------------------------------------

  document.addEventListener("click", function (event) {
    var cancel = event.target.closest('[data-action="cancel-disconnect"]');
    if (!cancel) return;
    var details = cancel.closest("details");
    if (details) {
      details.open = false;
      var summary = details.querySelector("summary");
      if (summary) summary.focus();
    }
  });

  function start() {
    localTimes(document);
    window.setInterval(function () { localTimes(document); }, 30000);
    // Back from an action: the card it was on says how it went.
    var told = document.querySelector("[data-card-message] .flash");
    if (told) {
      var card = told.closest("article.card");
      if (card) {
        card.focus({ preventScroll: true });
        card.scrollIntoView({ block: "start" });
      }
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
