(function () {
  var table = document.getElementById('board');
  var body = table.tBodies[0];
  function sortBy(col, descending) {
    var rows = Array.prototype.slice.call(body.rows);
    var text = col < 2;
    rows.sort(function (a, b) {
      var p = a.cells[col].dataset.value, q = b.cells[col].dataset.value;
      if (text) return (descending ? -1 : 1) * p.localeCompare(q);
      var x = parseFloat(p), y = parseFloat(q);
      if (isNaN(x)) x = -Infinity;
      if (isNaN(y)) y = -Infinity;
      if (x === y) return a.cells[0].dataset.value.localeCompare(b.cells[0].dataset.value);
      return descending ? y - x : x - y;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    table.dataset.sortedBy = (descending ? '-' : '') + col;
  }
  function showLevel(level) {
    table.dataset.level = level;
    var radio = document.querySelector('input[name=level][value="' + level + '"]');
    if (radio) radio.checked = true;
  }
  Array.prototype.forEach.call(table.querySelectorAll('th[data-col]'), function (th) {
    th.addEventListener('click', function () {
      var col = parseInt(th.dataset.col, 10);
      sortBy(col, table.dataset.sortedBy !== '-' + col);
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll('input[name=level]'), function (radio) {
    radio.addEventListener('change', function () { showLevel(radio.value); });
  });
  var level = /level=([a-z-]+)/.exec(window.location.hash);
  if (level) {
    showLevel(level[1]);
  } else if (table.dataset.level !== 'both' && document.querySelector('input[name=level][value=both]')) {
    var fallback = table.dataset.level;  // both levels side by side, where they fit the window
    showLevel('both');
    if (document.documentElement.scrollWidth > document.documentElement.clientWidth) showLevel(fallback);
  }
  var m = /sort=(-?)(\d+)/.exec(window.location.hash);
  if (m) sortBy(parseInt(m[2], 10), m[1] === '-');
})();
