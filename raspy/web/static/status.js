// Refetch the page's content every few seconds, without reloading the page.
(function () {
  "use strict";
  var main = document.getElementById("status");
  var note = document.getElementById("updated");
  var every = (parseFloat(main.getAttribute("data-refresh")) || 5) * 1000;
  function refresh() {
    fetch("fragment", {cache: "no-store"})
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.text(); })
      .then(function (html) {
        main.innerHTML = html;
        note.textContent = "as of " + new Date().toLocaleTimeString();
        note.className = "muted live";
      })
      .catch(function (err) { note.textContent = "offline (" + err.message + "), retrying"; note.className = "bad"; })
      .then(function () { setTimeout(refresh, every); });
  }
  setTimeout(refresh, every);
})();
