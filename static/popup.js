// Popup end page: tell the window that opened us (same origin only), then close.
(function () {
  var el = document.getElementById("result");
  if (!el || !window.opener) return;
  window.opener.postMessage(
    { type: "tether:oauth", provider: el.dataset.provider, ok: el.dataset.ok === "true", message: el.dataset.message },
    window.location.origin
  );
  window.close();
})();
