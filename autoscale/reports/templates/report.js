"use strict";
(function () {
  var PLOTLY_CONFIG = {displaylogo: false, responsive: true};
  document.querySelectorAll("script.plot-spec").forEach(function (block) {
    var spec = JSON.parse(block.textContent);
    Plotly.newPlot(document.getElementById(block.dataset.target), spec.data, spec.layout, PLOTLY_CONFIG);
  });

  var copyButton = document.getElementById("copy-ds-config");
  if (copyButton) {
    copyButton.addEventListener("click", function () {
      var text = document.getElementById("ds-config").textContent;
      var done = function () {
        copyButton.textContent = "Copied ✓";
        setTimeout(function () { copyButton.textContent = "Copy ds_config.json"; }, 1500);
      };
      var fallback = function () {
        var area = document.createElement("textarea");
        area.value = text;
        document.body.appendChild(area);
        area.select();
        document.execCommand("copy");
        area.remove();
        done();
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, fallback);
      } else {
        fallback();
      }
    });
  }

  var dataBlock = document.getElementById("trials-data");
  if (!dataBlock) { return; }
  var table = JSON.parse(dataBlock.textContent);
  var columns = table.columns, rows = table.rows;
  var TEXT = {status: 1, reason: 1, config: 1, precision: 1, checkpointing: 1, offload: 1, kernels: 1, started_at: 1,
              is_baseline: 1};
  var EXTRA = {};
  (table.extra || []).forEach(function (name) { EXTRA[name] = 1; });
  function classes(name) { return [TEXT[name] ? "text" : "", EXTRA[name] ? "extra" : ""].join(" ").trim(); }
  var GIB = {peak_bytes: 1, pred_peak_bytes: 1};
  var bestNumber = document.body.dataset.best;
  var sortColumn = columns.indexOf("number"), sortDescending = false;
  var statusAt = columns.indexOf("status"), numberAt = columns.indexOf("number");
  var baselineAt = columns.indexOf("is_baseline");

  function show(name, value, row) {
    if (name === "number" && value === null && baselineAt >= 0 && row[baselineAt] === true) { return "baseline"; }
    if (value === null || value === undefined) { return ""; }
    if (GIB[name]) { return (value / 1073741824).toFixed(2) + " GiB"; }
    if (name === "mfu") { return (value * 100).toFixed(1) + "%"; }
    if (typeof value === "number" && !Number.isInteger(value)) {
      return Math.abs(value) >= 100 ? value.toLocaleString("en-US", {maximumFractionDigits: 0})
                                    : value.toPrecision(3);
    }
    if (typeof value === "number" && name !== "number") { return value.toLocaleString("en-US"); }
    return String(value);
  }
  var searchable = rows.map(function (row) {
    return row.map(function (value, i) { return show(columns[i], value, row); }).join(" ").toLowerCase();
  });

  var head = document.querySelector("#trials thead"), body = document.querySelector("#trials tbody");
  var headRow = document.createElement("tr");
  columns.forEach(function (name, i) {
    var th = document.createElement("th");
    th.textContent = name;
    th.className = classes(name);
    th.addEventListener("click", function () {
      sortDescending = sortColumn === i ? !sortDescending : !TEXT[name] && name !== "number";
      sortColumn = i;
      render();
    });
    headRow.appendChild(th);
  });
  head.appendChild(headRow);

  function compare(a, b) {
    var x = a[sortColumn], y = b[sortColumn];
    if (x === null) { return y === null ? 0 : 1; }
    if (y === null) { return -1; }
    var order = x < y ? -1 : x > y ? 1 : 0;
    return sortDescending ? -order : order;
  }

  function render() {
    var words = document.getElementById("trial-filter").value.toLowerCase().split(/\s+/).filter(Boolean);
    var status = document.getElementById("status-filter").value;
    var picked = [];
    rows.forEach(function (row, r) {
      if (status && row[statusAt] !== status) { return; }
      for (var w = 0; w < words.length; w++) { if (searchable[r].indexOf(words[w]) < 0) { return; } }
      picked.push(row);
    });
    picked.sort(compare);
    var fragment = document.createDocumentFragment();
    picked.forEach(function (row) {
      var tr = document.createElement("tr");
      tr.className = "status-" + row[statusAt];
      if (bestNumber !== undefined && String(row[numberAt]) === bestNumber) { tr.className += " best-row"; }
      row.forEach(function (value, i) {
        var td = document.createElement("td"), name = columns[i];
        td.className = classes(name);
        if (name === "reason") { td.className += " reason"; td.title = value || ""; }
        if (name === "status") {
          var pill = document.createElement("span");
          pill.className = "pill " + value;
          pill.textContent = value;
          td.appendChild(pill);
        } else {
          td.textContent = show(name, value, row);
        }
        tr.appendChild(td);
      });
      fragment.appendChild(tr);
    });
    body.replaceChildren(fragment);
    headRow.querySelectorAll("th").forEach(function (th, i) {
      th.classList.toggle("sorted-asc", i === sortColumn && !sortDescending);
      th.classList.toggle("sorted-desc", i === sortColumn && sortDescending);
    });
    document.getElementById("trial-count").textContent = picked.length + " of " + rows.length + " trials";
  }
  document.getElementById("trial-filter").addEventListener("input", render);
  document.getElementById("status-filter").addEventListener("change", render);
  document.getElementById("all-columns").addEventListener("change", function (event) {
    document.getElementById("trials-wrap").classList.toggle("all-columns", event.target.checked);
  });
  render();
})();
