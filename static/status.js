// Status page poller: asks /o/{id}/status and reloads when the status changes. It
// backs off (every 2 s for ten seconds, then 5 s, then 10 s), honours Retry-After on
// 429, and stops when the answer says there is nothing more to watch. Without
// JavaScript the page's <noscript> meta refresh does the same job.
(function () {
  var el = document.getElementById("result");
  if (!el || !el.getAttribute("data-poll")) return;
  var url = el.getAttribute("data-poll");
  var shown = el.getAttribute("data-status");
  var polls = 0;
  function delay() {
    polls += 1;
    return polls <= 5 ? 2000 : polls <= 11 ? 5000 : 10000;
  }
  function later(ms) { setTimeout(poll, ms); }
  function poll() {
    fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (r) {
        if (r.status === 429) {
          var wait = parseInt(r.headers.get("Retry-After"), 10);
          later((wait > 0 ? wait : 30) * 1000);
          return null;
        }
        if (!r.ok) { later(10000); return null; }
        return r.json().then(function (s) {
          if (s.status !== shown) { location.reload(); } else if (s.watch) { later(delay()); }
        });
      })
      .catch(function () { later(10000); });
  }
  later(delay());
})();
