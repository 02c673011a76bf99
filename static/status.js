// Status page poller: asks /o/{id}/status every 2 s and reloads when the status changes.
// Without JavaScript the page's <noscript> meta refresh does the same.
(function () {
  var el = document.getElementById("result");
  if (!el) return;
  var url = el.getAttribute("data-poll");
  var shown = el.getAttribute("data-status");
  function poll() {
    fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) {
        if (s && s.status !== shown) { location.reload(); } else { setTimeout(poll, 2000); }
      })
      .catch(function () { setTimeout(poll, 4000); });
  }
  setTimeout(poll, 2000);
})();
