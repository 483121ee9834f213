/* The dashboard's Model page: reads GET /notifications/model/health/ (same origin, session
   cookie) and draws the active version's card, the daily checks with their thresholds and the
   latest calibration curve. Every text from the API is set with textContent. */
(function () {
  "use strict";

  // The shared DOM helpers (analytics/static/analytics/dom.js, loaded first).
  var dom = window.clickserverDom;
  var el = dom.el, td = dom.td, clear = dom.clear;

  var configNode = document.getElementById("dashboard-config");
  if (!configNode) return;
  var config = JSON.parse(configNode.textContent);
  if (config.page !== "model") return;

  var decimal = new Intl.NumberFormat(undefined, { minimumFractionDigits: 3, maximumFractionDigits: 3 });
  var integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  var percent = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 1 });
  var dateFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });
  var dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  var STATUS = { healthy: "Healthy", degraded: "Degraded", insufficient: "Too few finished sessions" };

  function fmt(value) { return value === null || value === undefined ? "—" : decimal.format(value); }
  function dayLabel(day) {
    var parts = day.split("-");
    return dateFormat.format(new Date(Number(parts[0]), Number(parts[1]) - 1, Number(parts[2])));
  }
  function setFigure(name, value, sub) {
    var box = document.querySelector('#model-kpis [data-figure="' + name + '"]');
    box.querySelector(".kpi-value").textContent = value;
    box.querySelector(".kpi-sub").textContent = sub;
  }
  function noData(canvas, text) {
    var box = canvas.parentNode;
    box.setAttribute("hidden", "");
    box.parentNode.appendChild(el("p", { className: "muted", text: text }));
  }

  function aucBound(thresholds, card) {
    var reference = card && card.test_prefix_roc_auc;
    var bound = thresholds.auc_floor;
    if (reference !== null && reference !== undefined) bound = Math.max(bound, reference - thresholds.auc_margin);
    return bound;
  }

  function drawCard(active) {
    var tbody = document.querySelector("#card-table tbody");
    clear(tbody);
    if (!active) {
      tbody.appendChild(el("tr", {}, [td("No model is active for this shop yet: train one (manage.py train_conversion_model).", "muted wrap")]));
      return;
    }
    var card = active.card;
    var rows = [
      ["Trained", dateTimeFormat.format(new Date(active.trained_at))],
      ["Test ROC-AUC (whole sessions)", fmt(card.test_roc_auc)],
      ["Test ROC-AUC (every prefix, what live scoring sees)", fmt(card.test_prefix_roc_auc)],
      ["Test ROC-AUC after 3 / 5 / 10 events", ["3", "5", "10"].map(function (k) { return fmt(card.test_roc_auc_at[k]); }).join(" / ")],
      ["Test PR-AUC", fmt(card.test_pr_auc)],
      ["Test Brier score", fmt(card.test_brier)],
      ["Test ECE (target " + fmt(card.target_ece) + ")", fmt(card.test_ece)],
      ["Sessions train / validation / test", ["train", "validation", "test"].map(function (k) {
        return card.sizes[k] === undefined ? "—" : integer.format(card.sizes[k]);
      }).join(" / ")],
      ["Bought in the test split", card.class_balance.test === undefined ? "—" : percent.format(card.class_balance.test)],
      ["Activation", card.promotion ? card.promotion.reason : "—"]
    ];
    rows.forEach(function (row) {
      tbody.appendChild(el("tr", {}, [el("th", { text: row[0] }), td(row[1], "wrap")]));
    });
  }

  function drawFigures(data, latest) {
    var t = data.thresholds;
    var card = data.active_model && data.active_model.card;
    setFigure("version", data.active_model ? "v" + data.active_model.version : "none",
      data.active_model ? "trained " + dateTimeFormat.format(new Date(data.active_model.trained_at)) : "");
    setFigure("auc", latest ? fmt(latest.roc_auc) : "—", "alert below " + fmt(aucBound(t, card)));
    setFigure("ece", latest ? fmt(latest.ece) : "—", "alert above " + fmt(t.ece_max));
    setFigure("psi", latest ? fmt(latest.psi) : "—", "alert above " + fmt(t.psi_max));
    var status = document.getElementById("model-status");
    if (!latest) {
      status.textContent = "No daily check of the active version yet: it needs live scores of sessions that have ended.";
      return;
    }
    var text = STATUS[latest.status] + " on " + dayLabel(latest.day) + ": " + integer.format(latest.sample_count) +
      " scores of " + integer.format(latest.session_count) + " finished sessions over the last " + t.window_days + " days";
    if (latest.problems.length) text += ". " + latest.problems.map(function (p) {
      return p.metric + " " + fmt(p.observed) + " " + p.detail + " (" + fmt(p.threshold) + ")";
    }).join("; ");
    status.textContent = text + ".";
    status.setAttribute("data-status", latest.status);
  }

  function lineChart(canvas, labels, datasets, yTitle) {
    return new Chart(canvas, {
      type: "line",
      data: { labels: labels, datasets: datasets },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false, spanGaps: true,
        interaction: { mode: "index", intersect: false },
        scales: { y: { title: { display: true, text: yTitle } } },
        plugins: { tooltip: { callbacks: { label: function (c) {
          return c.dataset.label + ": " + (c.raw === null ? "—" : decimal.format(c.raw));
        } } } }
      }
    });
  }
  function constant(value, count) { var out = []; for (var i = 0; i < count; i++) out.push(value); return out; }
  function threshold(label, value, count, color) {
    return { label: label, data: constant(value, count), borderColor: color, borderDash: [6, 4], pointRadius: 0, borderWidth: 1.5 };
  }

  function drawCharts(data, rows, latest) {
    var t = data.thresholds;
    var card = data.active_model && data.active_model.card;
    var labels = rows.map(function (r) { return dayLabel(r.day); });
    var aucCanvas = document.getElementById("auc-chart");
    var driftCanvas = document.getElementById("drift-chart");
    var calibrationCanvas = document.getElementById("calibration-chart");
    if (!rows.length) {
      noData(aucCanvas, "No daily check yet.");
      noData(driftCanvas, "No daily check yet.");
      noData(calibrationCanvas, "No daily check yet.");
      return;
    }
    lineChart(aucCanvas, labels, [
      { label: "Live ROC-AUC", data: rows.map(function (r) { return r.roc_auc; }), borderColor: "#4f46e5", backgroundColor: "#4f46e5" },
      threshold("Alert below", aucBound(t, card), rows.length, "#dc2626")
    ], "ROC-AUC");
    lineChart(driftCanvas, labels, [
      { label: "ECE", data: rows.map(function (r) { return r.ece; }), borderColor: "#06b6d4", backgroundColor: "#06b6d4" },
      { label: "PSI", data: rows.map(function (r) { return r.psi; }), borderColor: "#f59e0b", backgroundColor: "#f59e0b" },
      threshold("ECE bound", t.ece_max, rows.length, "#0e7490"),
      threshold("PSI bound", t.psi_max, rows.length, "#b45309")
    ], "ECE / PSI");
    var bins = latest ? latest.bins : [];
    new Chart(calibrationCanvas, {
      type: "scatter",
      data: { datasets: [
        { label: "Bought (share) at the mean score given", data: bins.map(function (b) { return { x: b.mean_predicted, y: b.observed_rate }; }),
          borderColor: "#4f46e5", backgroundColor: "#4f46e5", showLine: true, pointRadius: 4 },
        { label: "Perfect calibration", data: [{ x: 0, y: 0 }, { x: 1, y: 1 }], borderColor: "#94a3b8",
          borderDash: [6, 4], showLine: true, pointRadius: 0 }
      ] },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        scales: { x: { min: 0, max: 1, title: { display: true, text: "mean score given" } },
          y: { min: 0, max: 1, title: { display: true, text: "share that bought" } } }
      }
    });
  }

  function drawHistory(rows) {
    var tbody = document.querySelector("#history-table tbody");
    clear(tbody);
    if (!rows.length) {
      tbody.appendChild(el("tr", {}, [el("td", { colspan: "11", className: "muted wrap", text: "No daily check yet." })]));
      return;
    }
    rows.slice().reverse().forEach(function (r) {
      tbody.appendChild(el("tr", { "data-status": r.status }, [
        td(dayLabel(r.day)), td("v" + r.model_version), td(STATUS[r.status] || r.status),
        td(integer.format(r.sample_count), "num"), td(integer.format(r.session_count), "num"),
        td(integer.format(r.positive_count), "num"), td(fmt(r.roc_auc), "num"), td(fmt(r.brier), "num"),
        td(fmt(r.ece), "num"), td(fmt(r.psi), "num"),
        td(r.problems.map(function (p) { return p.metric + " " + fmt(p.observed); }).join("; ") || "—", "wrap")
      ]));
    });
  }

  function drawVersions(versions) {
    var tbody = document.querySelector("#versions-table tbody");
    clear(tbody);
    versions.forEach(function (v) {
      tbody.appendChild(el("tr", {}, [
        td("v" + v.version), td(dateTimeFormat.format(new Date(v.trained_at))), td(v.is_active ? "yes" : "no"),
        td(fmt(v.card.test_roc_auc), "num"), td(fmt(v.card.test_ece), "num"),
        td(v.card.promotion ? v.card.promotion.reason : "—", "wrap")
      ]));
    });
  }

  fetch("/notifications/model/health/?" + new URLSearchParams({ shop: config.shop, days: "30" }).toString(), {
    credentials: "same-origin", headers: { Accept: "application/json" }
  }).then(function (response) {
    if (!response.ok) throw new Error("/notifications/model/health/ answered " + response.status);
    return response.json();
  }).then(function (data) {
    var rows = data.history.filter(function (r) { return r.is_active_version; });
    var latest = rows.length ? rows[rows.length - 1] : null;
    drawCard(data.active_model);
    drawFigures(data, latest);
    drawCharts(data, rows, latest);
    drawHistory(data.history);
    drawVersions(data.versions);
  }).catch(function (error) {
    document.getElementById("model-status").textContent = String(error.message);
  });
})();
