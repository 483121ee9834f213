/* The dashboard's Experiments page: reads GET /experiments/ and GET /experiments/<id>/results/
   (same origin, session cookie) and draws them. Every name, key and sentence from the API is set
   with textContent, never parsed as HTML. */
(function () {
  "use strict";

  // The shared DOM helpers (analytics/static/analytics/dom.js, loaded first).
  var dom = window.clickserverDom;
  var el = dom.el, td = dom.td, num = dom.num, clear = dom.clear, message = dom.message;

  var configNode = document.getElementById("dashboard-config");
  if (!configNode) return;
  var config = JSON.parse(configNode.textContent);
  if (config.page !== "experiments") return;

  var PALETTE = ["#4f46e5", "#06b6d4", "#f59e0b", "#db2777", "#16a34a"];
  var PROPORTIONS = { conversion: true, add_to_cart_rate: true, bounce: true };
  var MONEY = { revenue_per_unit: true, aov: true };

  var money = new Intl.NumberFormat(undefined, { style: "currency", currency: config.currency });
  var integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  var decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 3 });
  var percent = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 1 });
  var signedPercent = new Intl.NumberFormat(undefined, {
    style: "percent", maximumFractionDigits: 1, signDisplay: "exceptZero"
  });
  var dateFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });
  var dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });


  function api(path) {
    return fetch(path + "?" + new URLSearchParams({ shop: config.shop }).toString(), {
      credentials: "same-origin", headers: { Accept: "application/json" }
    }).then(function (response) {
      if (!response.ok) throw new Error(path + " answered " + response.status);
      return response.json();
    });
  }

  function kindOf(metric) { return String(metric).split(":")[0]; }
  function fmtMean(metric, value) {
    if (value === null || value === undefined) return "—";
    var kind = kindOf(metric);
    if (PROPORTIONS[kind]) return percent.format(value);
    if (MONEY[kind]) return money.format(value);
    return decimal.format(value);
  }
  function fmtInterval(interval) {
    if (!interval) return "—";
    return signedPercent.format(interval.estimate) + " (" + percent.format(interval.ci_low) +
      " to " + percent.format(interval.ci_high) + ")";
  }
  function fmtP(value) { return value === null || value === undefined ? "—" : value < 0.001 ? "< 0.001" : value.toFixed(3); }
  function fmtChance(value) { return value === null || value === undefined ? "—" : percent.format(value); }
  function armName(arm) {
    var name = arm.name ? arm.name + " (" + arm.variant + ")" : arm.variant;
    return arm.is_control && name !== "control" ? name + " · control" : name;
  }

  var experiments = [];
  var selected = null;

  function list() {
    var tbody = document.querySelector("#experiments-table tbody");
    api("/experiments/").then(function (rows) {
      experiments = rows;
      if (!rows.length) {
        message(tbody, 5, "No experiments yet. Create one in the admin or through POST /experiments/.");
        return;
      }
      clear(tbody);
      rows.forEach(function (experiment) {
        var headline = config.headlines[String(experiment.id)];
        var row = el("tr", { className: "selectable", "data-id": String(experiment.id) }, [
          td(experiment.name, "wrap"),
          el("td", {}, [el("span", { className: "tag " + experiment.status, text: experiment.status })]),
          td(headline ? headline.metric : kindOf(experiment.primary_metric.kind)),
          num(headline && headline.uplift ? (headline.variant + ": " + fmtInterval(headline.uplift)) : "—"),
          td(headline ? headline.verdict : (experiment.status === "draft" ? "Draft: not started." : "No results yet."), "wrap")
        ]);
        row.addEventListener("click", function () { select(experiment.id, true); });
        tbody.appendChild(row);
      });
      var wanted = rows.filter(function (e) { return e.id === config.experiment; })[0];
      select((wanted || rows[0]).id, false);
    }).catch(function (e) { message(tbody, 5, "Could not load the experiments (" + e.message + "). Reload to retry."); });
  }

  function select(id, push) {
    selected = id;
    document.querySelectorAll("#experiments-table tbody tr").forEach(function (row) {
      row.classList.toggle("selected", row.dataset.id === String(id));
    });
    if (push) {
      var params = new URLSearchParams(window.location.search);
      params.set("experiment", String(id));
      window.history.replaceState(null, "", "?" + params.toString());
    }
    var experiment = experiments.filter(function (e) { return e.id === id; })[0];
    var detail = document.getElementById("experiment-detail");
    detail.hidden = false;
    document.getElementById("experiment-name").textContent = experiment.name;
    document.getElementById("experiment-meta").textContent = "Key " + experiment.key + " · " +
      experiment.status + " · unit: " + experiment.unit + " · phase " + experiment.phase +
      (experiment.started_at ? " · started " + dateTimeFormat.format(new Date(experiment.started_at)) : "") +
      (experiment.hypothesis ? " · " + experiment.hypothesis : "");
    var csv = document.getElementById("experiment-csv");
    csv.href = "/experiments/" + id + "/results/?" + new URLSearchParams({ shop: config.shop, format: "csv" }).toString();
    if (experiment.status === "draft") {
      csv.hidden = true;
      showResults(null, "A draft has no results: start the experiment to collect exposures.");
      return;
    }
    csv.hidden = false;
    document.getElementById("experiment-verdict").textContent = "Loading…";
    api("/experiments/" + id + "/results/").then(function (result) {
      if (selected === id) showResults(result);
    }).catch(function (e) {
      if (selected === id) showResults(null, "Could not load the results (" + e.message + "). Reload to retry.");
    });
  }

  function showResults(result, why) {
    var armsBody = document.querySelector("#arms-table tbody");
    var metricsBody = document.querySelector("#metrics-table tbody");
    var alerts = document.getElementById("experiment-alerts");
    clear(alerts);
    var canvas = document.getElementById("uplift-chart");
    var previous = Chart.getChart(canvas);
    if (previous) previous.destroy();
    if (!result) {
      document.getElementById("experiment-verdict").textContent = why;
      message(armsBody, 8, why);
      message(metricsBody, 6, why);
      return;
    }
    document.getElementById("experiment-verdict").textContent = result.verdict;
    var level = Math.round(100 * (1 - result.alpha)) + " %";
    var primary = result.primary_metric;
    document.getElementById("arms-note").textContent = "Units analysed, units with an order, and " +
      result.metrics[0].label + " per variant against the control (" + level + " interval" +
      (result.is_sequential ? ", sequential" : "") + "). Computed " +
      dateTimeFormat.format(new Date(result.computed_at)) + ".";
    alertsFill(alerts, result);
    armsFill(armsBody, result, primary);
    metricsFill(metricsBody, result);
    chartDraw(canvas, result);
  }

  function alertsFill(list, result) {
    function add(text, className) { list.appendChild(el("li", { className: className, text: text })); }
    if (result.srm && result.srm.is_mismatch) {
      add("Sample ratio mismatch (p = " + result.srm.p_value.toPrecision(2) + "): the split between " +
        "variants is not what the weights ask for. Do not trust these numbers until the cause is found.", "bad");
    }
    var labels = {};
    (result.guardrail_metrics || []).forEach(function (m) { labels[m.name] = m.label; });
    (result.guardrails || []).forEach(function (g) {
      add("Guardrail: variant " + g.variant + " worsens " + (labels[g.metric] || g.metric) + " significantly (p = " +
        fmtP(g.p_value) + ").", "bad");
    });
    (result.warnings || []).forEach(function (w) { add("Variant " + w.variant + ": " + w.detail, "warn"); });
  }

  function armsFill(tbody, result, primary) {
    clear(tbody);
    result.arms.forEach(function (arm) {
      var row = arm.metrics[primary] || {};
      tbody.appendChild(el("tr", { "data-variant": arm.variant }, [
        td(armName(arm)),
        num(integer.format(arm.exposed)), num(integer.format(arm.units)), num(integer.format(arm.conversions)),
        num(fmtMean(primary, row.mean)),
        num(arm.is_control ? "—" : fmtInterval(row.relative)),
        num(arm.is_control ? "—" : fmtP(row.p_value)),
        num(arm.is_control ? "—" : fmtChance(row.chance_to_beat_control))
      ]));
    });
  }

  function metricsFill(tbody, result) {
    clear(tbody);
    var metrics = result.metrics.concat((result.guardrail_metrics || []).map(function (m) {
      return Object.assign({}, m, { label: m.label + " (guardrail)" });
    }));
    metrics.forEach(function (metric) {
      result.arms.forEach(function (arm) {
        var row = arm.metrics[metric.name] || {};
        tbody.appendChild(el("tr", {}, [
          td(metric.label), td(armName(arm)),
          num(fmtMean(metric.name, row.mean)),
          num(arm.is_control ? "—" : fmtInterval(row.relative)),
          num(arm.is_control ? "—" : fmtP(row.p_value)),
          num(arm.is_control ? "—" : fmtChance(row.chance_to_beat_control))
        ]));
      });
    });
  }

  /* Per treatment arm: the uplift line and its interval as a band (filled between two lines). */
  function chartDraw(canvas, result) {
    var box = canvas.parentNode;
    var empty = box.querySelector(".empty-state");
    if (empty) empty.remove();
    var points = (result.timeline || []).filter(function (p) { return p.relative; });
    if (!points.length) {
      box.appendChild(el("div", { className: "empty-state", text: "No uplift to chart yet: too few units in an arm." }));
      return;
    }
    var days = Array.from(new Set(points.map(function (p) { return p.day; }))).sort();
    var variants = Array.from(new Set(points.map(function (p) { return p.variant; })));
    var datasets = [];
    variants.forEach(function (variant, i) {
      var colour = PALETTE[i % PALETTE.length];
      var byDay = {};
      points.filter(function (p) { return p.variant === variant; }).forEach(function (p) { byDay[p.day] = p.relative; });
      function series(key) { return days.map(function (d) { return byDay[d] ? byDay[d][key] * 100 : null; }); }
      datasets.push({ label: variant + " interval high", data: series("ci_high"), borderColor: "transparent",
        pointRadius: 0, fill: false, band: true });
      datasets.push({ label: variant + " interval low", data: series("ci_low"), borderColor: "transparent",
        backgroundColor: colour + "26", pointRadius: 0, fill: "-1", band: true });
      datasets.push({ label: variant, data: series("estimate"), borderColor: colour, backgroundColor: colour,
        pointRadius: 2, fill: false, tension: 0.2 });
    });
    datasets.push({ label: "no difference", data: days.map(function () { return 0; }), borderColor: "#98a2b3",
      borderDash: [4, 4], pointRadius: 0, fill: false, band: true });
    new Chart(canvas, {
      type: "line",
      data: { labels: days.map(function (d) {
        var parts = d.split("-");
        return dateFormat.format(new Date(Number(parts[0]), Number(parts[1]) - 1, Number(parts[2])));
      }), datasets: datasets },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false, spanGaps: true,
        interaction: { mode: "index", intersect: false },
        scales: { y: { ticks: { callback: function (v) { return v + " %"; } },
          title: { display: true, text: result.metrics[0].label + " uplift" } } },
        plugins: {
          legend: { labels: { filter: function (item, data) { return !data.datasets[item.datasetIndex].band; } } },
          tooltip: { callbacks: { label: function (c) {
            return c.dataset.label + ": " + (c.raw === null ? "—" : c.raw.toFixed(1) + " %");
          } } }
        }
      }
    });
  }

  list();
})();
