// Filters for the disagreement table. Reads its data from the JSON block and the rows' data-*
// attributes; writes only textContent, hidden and option elements (never innerHTML).
(function () {
  "use strict";
  var table = document.getElementById("dis-table");
  var dataEl = document.getElementById("report-data");
  if (!table || !dataEl) { return; }
  var data = JSON.parse(dataEl.textContent);
  var rows = Array.prototype.slice.call(table.tBodies[0].rows);
  var texts = rows.map(function (r) { return r.textContent.toLowerCase(); });
  var search = document.getElementById("f-search");
  var task = document.getElementById("f-task");
  var group = document.getElementById("f-group");
  var side = document.getElementById("f-side");
  var cand = document.getElementById("f-candidate");
  var count = document.getElementById("f-count");

  function fillGroups() {
    var keep = group.value;
    var names = [];
    Object.keys(data.groups).forEach(function (t) {
      if (task.value === "" || task.value === t) {
        data.groups[t].forEach(function (g) { if (names.indexOf(g) < 0) { names.push(g); } });
      }
    });
    names.sort();
    while (group.options.length > 1) { group.remove(1); }
    names.forEach(function (g) {
      var opt = document.createElement("option");
      opt.value = g;
      opt.textContent = g;
      group.appendChild(opt);
    });
    group.value = names.indexOf(keep) >= 0 ? keep : "";
  }

  function apply() {
    var terms = search.value.toLowerCase().split(/\s+/).filter(function (s) { return s.length > 0; });
    var shown = 0;
    var bySide = {};
    rows.forEach(function (r, i) {
      var ok = (task.value === "" || r.dataset.task === task.value) &&
        (group.value === "" || r.dataset.group === group.value) &&
        (side.value === "" || r.dataset.side === side.value) &&
        (!cand || cand.value === "" || r.dataset.differs.split(" ").indexOf(cand.value) >= 0) &&
        terms.every(function (t) { return texts[i].indexOf(t) >= 0; });
      r.hidden = !ok;
      if (ok) {
        shown += 1;
        bySide[r.dataset.side] = (bySide[r.dataset.side] || 0) + 1;
      }
    });
    count.textContent = shown + " of " + rows.length + " shown";
    Object.keys(data.sides).forEach(function (key) {
      var el = document.getElementById("f-n-" + key);
      if (el) { el.textContent = String(bySide[key] || 0); }
    });
  }

  search.addEventListener("input", apply);
  task.addEventListener("change", function () { fillGroups(); apply(); });
  [group, side, cand].forEach(function (el) { if (el) { el.addEventListener("change", apply); } });
  document.getElementById("f-reset").addEventListener("click", function () {
    search.value = ""; task.value = ""; side.value = "";
    if (cand) { cand.value = ""; }
    fillGroups(); group.value = ""; apply();
  });
  fillGroups();
  apply();
}());
