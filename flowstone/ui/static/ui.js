// FlowStone UI: live pages fetch their own content again every few seconds (no reload, no build step).
// A page opts in with <main data-live="MS">; the server answers `X-Fragment: 1` with the main block only.
// Nothing is refreshed while the person is typing in a field, so a reason being written is never lost.
// The partition calendar: one <rect class="c-STATE" data-p="KEY"> per day (no link or tooltip
// element each, which keeps a 3,650-day page small): hovering shows the day, a click opens it, a
// shift-click selects it (and a chip) for the Queue button, which sends them as `partitions`.
(function () {
  "use strict";
  var selected = [];
  function toggle(cell) {
    var key = cell.getAttribute("data-p");
    var at = selected.indexOf(key);
    if (at < 0) { selected.push(key); cell.classList.add("sel"); } else { selected.splice(at, 1); cell.classList.remove("sel"); }
    var field = document.getElementById("selected-partitions");
    var list = document.getElementById("selected-list");
    if (field) { field.value = selected.join("\n"); }
    if (list) { list.textContent = selected.length ? selected.join(", ") : "none selected"; }
  }
  document.addEventListener("click", function (event) {
    var cell = event.target.closest ? event.target.closest("[data-p]") : null;
    if (!cell) { return; }
    if (event.shiftKey) { event.preventDefault(); toggle(cell); return; }
    if (cell.tagName.toLowerCase() === "rect") {
      window.location.search = "?partition=" + encodeURIComponent(cell.getAttribute("data-p"));
    }
  });
  document.addEventListener("mouseover", function (event) {
    var cell = event.target.closest ? event.target.closest("rect[data-p]") : null;
    var out = document.getElementById("grid-hover");
    if (cell && out) { out.textContent = cell.getAttribute("data-p") + ": " + cell.getAttribute("class").replace("c-", ""); }
  });
})();

(function () {
  "use strict";
  var main = document.getElementById("main");
  if (!main) { return; }
  var every = parseInt(main.getAttribute("data-live") || "0", 10);
  if (!every) { return; }
  function busy() {
    var active = document.activeElement;
    if (active && (active.tagName === "INPUT" || active.tagName === "TEXTAREA" || active.tagName === "SELECT")) {
      return true;
    }
    var fields = main.querySelectorAll("input[name=reason], input[name=start], input[name=end]");
    for (var i = 0; i < fields.length; i++) { if (fields[i].value) { return true; } }
    return false;
  }
  function refresh() {
    if (document.hidden || busy()) { return; }
    fetch(window.location.href, { headers: { "X-Fragment": "1" }, credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) { if (html !== null && !busy()) { main.innerHTML = html; } })
      .catch(function () { /* the next tick tries again */ });
  }
  window.setInterval(refresh, every);
})();
