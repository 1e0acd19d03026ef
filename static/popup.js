// Popup end page: tell the window that opened us, at exactly the origin the
// page names (ours for the dashboard, a listed CRM page's for connect.js),
// then close. With no origin named, or no opener left (a provider's
// Cross-Origin-Opener-Policy cuts it), nothing is posted and the page stays.
(function () {
  var el = document.getElementById("result");
  if (!el || !window.opener) return;
  var target = el.dataset.target === "self" ? window.location.origin : el.dataset.target;
  if (!target) return;
  window.opener.postMessage(
    {
      type: "tether:oauth",
      provider: el.dataset.provider,
      ok: el.dataset.ok === "true",
      account: el.dataset.account || null,
      message: el.dataset.message
    },
    target
  );
  window.close();
})();
