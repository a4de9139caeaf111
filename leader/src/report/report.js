// Click a heading of a sortable table to sort by that column (again to
// reverse). Cells with data-v sort by number, the rest by text. The page
// reads the same without this script.
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0];
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var dir = th.getAttribute("data-dir") === "desc" ? 1 : -1;
    th.setAttribute("data-dir", dir === 1 ? "asc" : "desc");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col], y = b.cells[col];
      var u = x.getAttribute("data-v"), v = y.getAttribute("data-v");
      if (u !== null && v !== null) return (parseFloat(u) - parseFloat(v)) * dir;
      return x.textContent.localeCompare(y.textContent) * dir;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
