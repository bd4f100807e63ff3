// While a run's jobs run, its page reloads the datasets' status every two seconds (only
// that part, announced politely to screen readers) and the whole page once they are done.
(function () {
  "use strict";
  var section = document.getElementById("ingestion");
  if (!section || !section.dataset.refresh) {
    return;
  }
  var url = section.dataset.refresh;

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok || response.redirected) {
          window.location.reload(); // signed out, or the run is gone: let the page say so
          return null;
        }
        return response.text();
      })
      .then(function (html) {
        if (html === null) {
          return;
        }
        var next = new DOMParser().parseFromString(html, "text/html").querySelector(".datasets");
        if (!next) {
          return;
        }
        section.replaceChildren(document.importNode(next, true));
        if (next.dataset.done === "1") {
          window.location.reload();
        } else {
          window.setTimeout(poll, 2000);
        }
      })
      .catch(function () {
        window.setTimeout(poll, 5000);
      });
  }

  window.setTimeout(poll, 2000);
})();
