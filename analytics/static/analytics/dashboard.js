/* clickserver dashboard: reads the analytics API (same origin, session cookie) and draws it. */
(function () {
  "use strict";

  // The shared DOM helpers (analytics/static/analytics/dom.js, loaded first).
  var dom = window.clickserverDom;
  var el = dom.el, td = dom.td, num = dom.num;

  var configNode = document.getElementById("dashboard-config");
  var periodForm = document.getElementById("period-form");
  var switcher = document.getElementById("shop-switcher");
  if (switcher && periodForm) {
    switcher.addEventListener("change", function () { periodForm.submit(); });
  }
  if (!configNode) return;
  var config = JSON.parse(configNode.textContent);

  var ACCENT = "#4f46e5";
  var ACCENT_SOFT = "rgba(79, 70, 229, 0.15)";
  var ACCENT_MID = "rgba(79, 70, 229, 0.55)";
  var CYAN = "#06b6d4";
  var AMBER = "#f59e0b";
  var WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
  var EVENT_LABELS = {
    page_view: "Page view", product_view: "Product view", add_to_cart: "Add to cart",
    remove_from_cart: "Remove from cart", checkout_started: "Checkout", purchase: "Purchase",
    identify: "Sign-in", alias: "Alias"
  };
  var STEP_LABELS = {
    page_view: "Visited", product_view: "Viewed a product", add_to_cart: "Added to cart",
    checkout_started: "Started checkout", purchase: "Purchased"
  };

  var money = new Intl.NumberFormat(undefined, { style: "currency", currency: config.currency });
  var moneyShort = new Intl.NumberFormat(undefined, {
    style: "currency", currency: config.currency, notation: "compact", maximumFractionDigits: 1
  });
  var integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  var percent = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 1 });
  var dateFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });
  var timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  var dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

  function fmtMoney(value) { return money.format(Number(value || 0)); }
  function fmtInt(value) { return integer.format(Number(value || 0)); }
  function fmtPct(value) { return percent.format(Number(value || 0)); }
  function fmtDay(iso) {
    var parts = String(iso).slice(0, 10).split("-");
    return dateFormat.format(new Date(Number(parts[0]), Number(parts[1]) - 1, Number(parts[2])));
  }
  function fmtHour(hour) { return String(hour).padStart(2, "0") + ":00"; }


  function query(extra) {
    var params = new URLSearchParams({ shop: config.shop, start: config.start, end: config.end });
    Object.keys(extra || {}).forEach(function (key) { params.set(key, extra[key]); });
    return params.toString();
  }

  function api(path, extra) {
    return fetch(path + "?" + query(extra), {
      credentials: "same-origin", headers: { Accept: "application/json" }
    }).then(function (response) {
      if (!response.ok) throw new Error(path + " answered " + response.status);
      return response.json();
    });
  }

  function analytics(name, extra) { return api("/analytics/" + name + "/", extra); }

  function failed(target, error) {
    var box = typeof target === "string" ? document.getElementById(target) : target;
    if (box) showEmpty(box, "Could not load these figures (" + error.message + "). Reload to retry.");
  }

  /* A chart container shows a friendly message instead of an empty chart. */
  function showEmpty(canvasOrBox, message) {
    var box = canvasOrBox.tagName === "CANVAS" ? canvasOrBox.parentNode : canvasOrBox;
    if (box.tagName === "TBODY" || box.tagName === "TABLE" || box.tagName === "UL") {
      var body = box.tagName === "TABLE" ? (box.tBodies[0] || box.appendChild(el("tbody"))) : box;
      body.innerHTML = "";
      var cols = box.tagName === "UL" ? 0 : (box.closest("table").querySelectorAll("thead th").length || 1);
      body.appendChild(box.tagName === "UL"
        ? el("li", { className: "muted", text: message })
        : el("tr", {}, [el("td", { colspan: String(cols), className: "muted wrap", text: message })]));
      return;
    }
    var existing = box.querySelector(".empty-state");
    if (!existing) box.appendChild(el("div", { className: "empty-state", text: message }));
  }

  function clearEmpty(canvas) {
    var existing = canvas.parentNode.querySelector(".empty-state");
    if (existing) existing.remove();
  }

  var NO_DATA = "No data in this period. Try a longer date range.";

  function draw(canvasId, spec, hasData, emptyMessage) {
    var canvas = document.getElementById(canvasId);
    if (!canvas) return null;
    var previous = Chart.getChart(canvas);
    if (previous) previous.destroy();
    if (!hasData) {
      showEmpty(canvas, emptyMessage || NO_DATA);
      return null;
    }
    clearEmpty(canvas);
    spec.options = Object.assign({ responsive: true, maintainAspectRatio: false, animation: false }, spec.options || {});
    return new Chart(canvas, spec);
  }

  function fillTable(id, rows, render, emptyMessage) {
    var table = document.getElementById(id);
    if (!table) return;
    if (!rows.length) { showEmpty(table, emptyMessage || NO_DATA); return; }
    var body = table.tBodies[0];
    body.innerHTML = "";
    rows.forEach(function (row) { body.appendChild(el("tr", {}, render(row))); });
  }


  function anyPositive(values) { return values.some(function (v) { return Number(v) > 0; }); }

  var moneyAxis = { ticks: { callback: function (v) { return moneyShort.format(v); } }, beginAtZero: true };
  var countAxis = { ticks: { precision: 0 }, beginAtZero: true };

  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.color = "#667085";
  Chart.defaults.plugins.legend.labels.boxWidth = 12;

  /* ---------------------------------------------------------------- Overview */

  function delta(node, current, previous, lowerIsBetter) {
    var out = node.querySelector(".kpi-delta");
    current = Number(current || 0);
    previous = Number(previous || 0);
    if (!previous) {
      out.textContent = current ? "new in this period" : "no change";
      out.className = "kpi-delta";
      return;
    }
    var change = (current - previous) / previous;
    var better = lowerIsBetter ? change < 0 : change > 0;
    out.textContent = (change > 0 ? "▲ " : change < 0 ? "▼ " : "") + percent.format(Math.abs(change)) + " vs previous";
    out.className = "kpi-delta" + (change === 0 ? "" : better ? " up" : " down");
  }

  var KPI_FORMAT = {
    revenue: fmtMoney, orders: fmtInt, aov: fmtMoney, visit_conversion: fmtPct,
    cart_abandonment: fmtPct, clv: fmtMoney, sessions: fmtInt, visitors: fmtInt
  };

  /* The forecast days that continue the trend: those after its last day, when the first of
     them is the next day (the period ends today or yesterday); none otherwise. */
  function forecastAhead(rows, forecast) {
    if (!forecast || !forecast.days || !forecast.days.length || !rows.length) return [];
    var lastDay = String(rows[rows.length - 1].bucket).slice(0, 10);
    var ahead = forecast.days.filter(function (d) { return d.date > lastDay; });
    if (!ahead.length) return [];
    var gap = (Date.parse(ahead[0].date) - Date.parse(lastDay)) / 86400000;
    return gap === 1 ? ahead : [];
  }

  /* The money axis's top with a forecast: the larger of the highest bar and the highest 80 %
     bound, plus a margin, so a wide 95 % band on a thin history does not flatten the bars (the
     band is clipped at the top; its values stay in the tooltip). */
  function forecastCap(rows, ahead) {
    if (!ahead.length) return {};
    var top = Math.max.apply(null, rows.map(function (r) { return Number(r.revenue); })
      .concat(ahead.map(function (d) { return d.revenue.upper_80; })));
    return top > 0 ? { max: top * 1.15 } : {};
  }

  function forecastNote(forecast, ahead) {
    if (!forecast) return "The revenue forecast could not be loaded.";
    if (!forecast.days.length) return "No revenue forecast: " + forecast.reason;
    if (!ahead.length) return "The revenue forecast (28 days from today) shows when the period ends today.";
    return "Dashed: the revenue forecast for the next " + ahead.length + " days, with 80 % (darker) and 95 % bands, " +
      "from the last " + forecast.window_days + " days' trend and weekdays (the axis stops just above the 80 % band).";
  }

  function overview() {
    analytics("kpis", { compare: "previous" }).then(function (data) {
      document.querySelectorAll("[data-kpi]").forEach(function (node) {
        var key = node.dataset.kpi;
        node.querySelector(".kpi-value").textContent = KPI_FORMAT[key](data[key]);
        delta(node, data[key], data.previous[key], node.dataset.lowerIsBetter);
      });
      var visitorsNode = document.querySelector('[data-kpi="visitors"] .kpi-delta');
      var visitors = data.new_visitors + data.returning_visitors;
      draw("overview-visitors", {
        type: "doughnut",
        data: {
          labels: ["New", "Returning"],
          datasets: [{ data: [data.new_visitors, data.returning_visitors], backgroundColor: [ACCENT, CYAN] }]
        },
        options: {
          cutout: "62%",
          plugins: {
            legend: { position: "bottom" },
            tooltip: { callbacks: { label: function (c) {
              return c.label + ": " + fmtInt(c.raw) + " (" + fmtPct(visitors ? c.raw / visitors : 0) + ")";
            } } }
          }
        }
      }, visitors > 0);
      if (visitorsNode && visitors) {
        visitorsNode.parentNode.appendChild(el("span", {
          className: "kpi-sub", text: fmtInt(data.new_visitors) + " new · " + fmtInt(data.returning_visitors) + " returning"
        }));
      }
    }).catch(function (e) { failed("overview-visitors", e); });

    // The revenue forecast (GET /segments/forecast/, docs/customers.md) continues the revenue
    // bars as a dashed line with its 80 % and 95 % bands when the period reaches today; a
    // failed forecast leaves the chart as it was.
    var forecast = api("/segments/forecast/").catch(function () { return null; });
    Promise.all([analytics("trends", { interval: "day" }), forecast]).then(function (answers) {
      var rows = answers[0].rows;
      var ahead = forecastAhead(rows, answers[1]);
      var note = document.getElementById("overview-forecast-note");
      if (note) note.textContent = forecastNote(answers[1], ahead);
      var blanks = ahead.map(function () { return null; });
      var pad = rows.map(function () { return null; });
      var last = rows.length ? Number(rows[rows.length - 1].revenue) : null;
      function band(key) {
        // Starts at the last actual day so the band opens from the bar, not from nowhere.
        return ahead.length ? pad.slice(1).concat([last], ahead.map(function (d) { return d.revenue[key]; })) : [];
      }
      var datasets = [
        { type: "bar", label: "Revenue", data: rows.map(function (r) { return Number(r.revenue); }).concat(blanks),
          backgroundColor: ACCENT_MID, borderColor: ACCENT, borderWidth: 1, yAxisID: "money", order: 2 },
        { type: "line", label: "Sessions", data: rows.map(function (r) { return r.sessions; }).concat(blanks),
          borderColor: CYAN, backgroundColor: CYAN, tension: 0.3, pointRadius: 2, yAxisID: "count", order: 1 }
      ];
      if (ahead.length) {
        var bandLine = { type: "line", borderWidth: 0, pointRadius: 0, yAxisID: "money", order: 3, forecastBand: true };
        datasets.push(
          Object.assign({ label: "95 % low", data: band("lower_95"), fill: false }, bandLine),
          Object.assign({ label: "95 % interval", data: band("upper_95"), fill: "-1", backgroundColor: "rgba(245, 158, 11, 0.12)" }, bandLine),
          Object.assign({ label: "80 % low", data: band("lower_80"), fill: false }, bandLine),
          Object.assign({ label: "80 % interval", data: band("upper_80"), fill: "-1", backgroundColor: "rgba(245, 158, 11, 0.28)" }, bandLine),
          { type: "line", label: "Revenue forecast", data: band("point"), borderColor: AMBER, backgroundColor: AMBER,
            borderDash: [6, 4], borderWidth: 2, pointRadius: 0, yAxisID: "money", order: 0, forecast: true }
        );
      }
      draw("overview-trend", {
        data: {
          labels: rows.map(function (r) { return fmtDay(r.bucket); }).concat(ahead.map(function (d) { return fmtDay(d.date); })),
          datasets: datasets
        },
        options: {
          interaction: { mode: "index", intersect: false },
          scales: {
            money: Object.assign({ position: "left", title: { display: true, text: "Revenue" } }, moneyAxis, forecastCap(rows, ahead)),
            count: Object.assign({ position: "right", grid: { drawOnChartArea: false },
              title: { display: true, text: "Sessions" } }, countAxis)
          },
          plugins: {
            legend: { labels: { filter: function (item, chart) {
              var set = chart.datasets[item.datasetIndex];
              return !set.forecastBand || / interval$/.test(set.label);
            } } },
            tooltip: {
              filter: function (c) { return c.raw !== null && !/ low$/.test(c.dataset.label); },
              callbacks: { label: function (c) {
                if (c.dataset.forecastBand) {
                  var low = c.chart.data.datasets[c.datasetIndex - 1].data[c.dataIndex];
                  return c.dataset.label + ": " + fmtMoney(low) + " – " + fmtMoney(c.raw);
                }
                return c.dataset.label + ": " + (c.dataset.yAxisID === "money" ? fmtMoney(c.raw) : fmtInt(c.raw));
              } }
            }
          }
        }
      }, anyPositive(rows.map(function (r) { return r.sessions + Number(r.revenue); })));
    }).catch(function (e) { failed("overview-trend", e); });

    analytics("insights").then(function (data) {
      var list = document.getElementById("insights");
      list.innerHTML = "";
      if (!data.findings.length) {
        list.appendChild(el("li", { className: "muted", text: "Nothing stands out in this period yet." }));
      }
      data.findings.forEach(function (text) { list.appendChild(el("li", { text: text })); });
    }).catch(function (e) { failed("insights", e); });
  }

  /* ---------------------------------------------------------------- Traffic */

  function heatColour(share) {
    if (!share) return "background:#f2f4f7";
    return "background:rgba(79,70,229," + (0.08 + 0.92 * share).toFixed(3) + ")";
  }

  function heatMap(data) {
    var table = document.getElementById("heatmap");
    var body = table.tBodies[0];
    body.innerHTML = "";
    var max = 0;
    data.heat_map.forEach(function (row) { row.forEach(function (v) { max = Math.max(max, v); }); });
    if (!max) { showEmpty(table, NO_DATA); return; }
    var head = el("tr", {}, [el("th")]);
    for (var h = 0; h < 24; h++) head.appendChild(el("th", { text: h % 3 === 0 ? String(h).padStart(2, "0") : "" }));
    body.appendChild(head);
    data.heat_map.forEach(function (row, weekday) {
      var tr = el("tr", {}, [el("th", { className: "row", text: WEEKDAYS[weekday] })]);
      row.forEach(function (value, hour) {
        tr.appendChild(el("td", {
          style: heatColour(value / max), text: String(value),
          title: WEEKDAYS[weekday] + " " + fmtHour(hour) + "–" + fmtHour((hour + 1) % 24) + ": " + fmtInt(value) + " sessions"
        }));
      });
      body.appendChild(tr);
    });
    var wrap = table.parentNode;
    if (!wrap.parentNode.querySelector(".legend")) {
      wrap.parentNode.appendChild(el("div", { className: "legend" }, ["fewer", el("span", { className: "scale" }), "more sessions"]));
    }
    var peak = document.getElementById("peak");
    if (peak && data.peak_weekday !== null && data.peak_hour !== null) {
      peak.textContent = "Busiest: " + data.peak_weekday + "s around " + fmtHour(data.peak_hour);
    }
  }

  function bucketLabel(bucket, interval) {
    if (interval === "hour") {
      var d = new Date(bucket);
      return isNaN(d) ? bucket : dateFormat.format(d) + " " + fmtHour(d.getHours());
    }
    if (interval === "month") return String(bucket).slice(0, 7);
    return fmtDay(bucket);
  }

  function traffic() {
    var select = document.getElementById("interval");
    var csv = document.getElementById("trends-csv");
    function load() {
      var interval = select.value;
      if (csv) csv.href = "/analytics/trends/?" + query({ interval: interval, format: "csv" });
      analytics("trends", { interval: interval }).then(function (data) {
        var rows = data.rows;
        var labels = rows.map(function (r) { return bucketLabel(r.bucket, interval); });
        draw("traffic-chart", {
          type: "line",
          data: {
            labels: labels,
            datasets: [
              { label: "Sessions", data: rows.map(function (r) { return r.sessions; }), borderColor: ACCENT,
                backgroundColor: ACCENT_SOFT, fill: true, tension: 0.3, pointRadius: 2 },
              { label: "Visitors", data: rows.map(function (r) { return r.visitors; }), borderColor: CYAN,
                backgroundColor: CYAN, tension: 0.3, pointRadius: 2 }
            ]
          },
          options: { interaction: { mode: "index", intersect: false }, scales: { y: countAxis } }
        }, anyPositive(rows.map(function (r) { return r.sessions; })));
        draw("revenue-chart", {
          data: {
            labels: labels,
            datasets: [
              { type: "bar", label: "Revenue", data: rows.map(function (r) { return Number(r.revenue); }),
                backgroundColor: ACCENT, yAxisID: "money", order: 2 },
              { type: "line", label: "Orders", data: rows.map(function (r) { return r.orders; }),
                borderColor: AMBER, backgroundColor: AMBER, tension: 0, pointRadius: 2, yAxisID: "count", order: 1 }
            ]
          },
          options: {
            interaction: { mode: "index", intersect: false },
            scales: {
              money: Object.assign({ position: "left" }, moneyAxis),
              count: Object.assign({ position: "right", grid: { drawOnChartArea: false } }, countAxis)
            },
            plugins: { tooltip: { callbacks: { label: function (c) {
              return c.dataset.label + ": " + (c.dataset.yAxisID === "money" ? fmtMoney(c.raw) : fmtInt(c.raw));
            } } } }
          }
        }, anyPositive(rows.map(function (r) { return r.orders + Number(r.revenue); })),
        "No orders recorded in this period.");
        heatMap(data);
      }).catch(function (e) { failed("traffic-chart", e); });
    }
    select.addEventListener("change", load);
    load();
  }

  /* ---------------------------------------------------------------- Funnel */

  var FUNNEL_STEPS = "page_view,product_view,add_to_cart,checkout_started,purchase";

  function funnel() {
    analytics("funnel", { steps: FUNNEL_STEPS }).then(function (data) {
      var steps = data.steps;
      var labels = steps.map(function (s) { return STEP_LABELS[s.step] || s.step; });
      draw("funnel-chart", {
        type: "bar",
        data: {
          labels: labels,
          datasets: [{ label: "Sessions", data: steps.map(function (s) { return s.count; }),
            backgroundColor: [ACCENT, "#6366f1", "#818cf8", "#a5b4fc", "#12b76a"] }]
        },
        options: {
          indexAxis: "y",
          scales: { x: countAxis },
          plugins: {
            legend: { display: false },
            tooltip: { callbacks: { label: function (c) {
              var s = steps[c.dataIndex];
              return fmtInt(s.count) + " sessions · " + fmtPct(s.conversion) + " of visitors";
            } } }
          }
        }
      }, data.units > 0);
      fillTable("funnel-table", data.units ? steps : [], function (s, i) {
        return [
          td(labels[steps.indexOf(s)]), num(fmtInt(s.count)), num(fmtPct(s.conversion)),
          num(steps.indexOf(s) === 0 ? "—" : fmtPct(s.step_conversion)),
          num(steps.indexOf(s) === 0 ? "—" : fmtInt(s.drop_off) + " (" + fmtPct(1 - s.step_conversion) + ")")
        ];
      });
      var median = document.getElementById("funnel-median");
      if (median && data.median_seconds_to_convert !== null) {
        median.textContent = "Buyers took a median of " + Math.round(data.median_seconds_to_convert / 60) + " minutes from landing to purchase.";
      }
    }).catch(function (e) { failed("funnel-chart", e); });
  }

  /* ---------------------------------------------------------------- Products */

  function productName(row) { return row.product_name || row.product_id; }

  function products() {
    analytics("products", { order_by: "purchases", limit: 20 }).then(function (data) {
      var top = data.rows.filter(function (r) { return r.views > 0 || r.purchases > 0; });
      var chartRows = top.slice(0, 10);
      draw("products-chart", {
        type: "bar",
        data: {
          labels: chartRows.map(productName),
          datasets: [
            { label: "Views", data: chartRows.map(function (r) { return r.views; }), backgroundColor: "#c7d2fe" },
            { label: "Added to cart", data: chartRows.map(function (r) { return r.carts; }), backgroundColor: AMBER },
            { label: "Purchases", data: chartRows.map(function (r) { return r.purchases; }), backgroundColor: "#12b76a" }
          ]
        },
        options: { indexAxis: "y", scales: { x: countAxis } }
      }, chartRows.length > 0);
      fillTable("products-table", top, function (r) {
        return [td(productName(r), "wrap"), num(fmtInt(r.views)), num(fmtInt(r.carts)), num(fmtInt(r.purchases)),
          num(fmtInt(r.units)), num(fmtMoney(r.revenue)), num(fmtPct(r.view_to_purchase_rate))];
      });
    }).catch(function (e) { failed("products-chart", e); });
    analytics("products", { order_by: "abandoned_carts", limit: 10 }).then(function (data) {
      var rows = data.rows.filter(function (r) { return r.abandoned_carts > 0; });
      fillTable("abandoned-products-table", rows, function (r) {
        return [td(productName(r), "wrap"), num(fmtInt(r.carts)), num(fmtInt(r.abandoned_carts)), num(fmtInt(r.purchases))];
      }, "No abandoned carts in this period.");
    }).catch(function (e) { failed("abandoned-products-table", e); });
  }

  /* ---------------------------------------------------------------- Abandoned carts */

  function carts() {
    analytics("abandoned_carts", { limit: 100, compare: "previous" }).then(function (data) {
      var formats = { rate: fmtPct, abandoned_sessions: fmtInt, cart_sessions: fmtInt, value: fmtMoney };
      document.querySelectorAll("[data-cart]").forEach(function (node) {
        var key = node.dataset.cart;
        node.querySelector(".kpi-value").textContent = formats[key](data[key]);
        delta(node, data[key], data.previous[key], key !== "cart_sessions");
      });
      var rows = data.products.filter(function (r) { return r.abandoned_carts > 0; }).slice(0, 10);
      draw("carts-chart", {
        type: "bar",
        data: {
          labels: rows.map(productName),
          datasets: [
            { label: "Abandoned", data: rows.map(function (r) { return r.abandoned_carts; }), backgroundColor: AMBER },
            { label: "Purchased", data: rows.map(function (r) { return r.purchases; }), backgroundColor: "#12b76a" }
          ]
        },
        options: { indexAxis: "y", scales: { x: countAxis } }
      }, rows.length > 0, "No abandoned carts in this period.");
      fillTable("recovery-table", data.rows, function (r) {
        return [td(r.user_id), num("#" + r.session_id), td(dateTimeFormat.format(new Date(r.abandoned_at)))];
      }, "No identified shopper left a cart in this period.");
    }).catch(function (e) { failed("carts-chart", e); });
  }

  /* ---------------------------------------------------------------- Retention */

  function retention() {
    analytics("retention").then(function (data) {
      var rows = data.rows.filter(function (r) { return r.size > 0; });
      var width = rows.reduce(function (m, r) { return Math.max(m, r.retention.length); }, 0);
      var average = [];
      for (var i = 1; i < width; i++) {
        var people = 0, active = 0;
        rows.forEach(function (r) { if (r.active.length > i) { people += r.size; active += r.active[i]; } });
        average.push(people ? active / people : 0);
      }
      draw("retention-chart", {
        type: "line",
        data: {
          labels: average.map(function (_, i) { return "Week " + (i + 1); }),
          datasets: [{ label: "Came back", data: average, borderColor: ACCENT, backgroundColor: ACCENT_SOFT,
            fill: true, tension: 0.3 }]
        },
        options: {
          scales: { y: { beginAtZero: true, ticks: { callback: function (v) { return fmtPct(v); } } } },
          plugins: { legend: { display: false }, tooltip: { callbacks: { label: function (c) { return fmtPct(c.raw) + " came back"; } } } }
        }
      }, average.length > 0, "Retention needs visitors from at least two weeks. Try a longer date range.");

      var table = document.getElementById("cohort-table");
      if (!rows.length) { showEmpty(table, NO_DATA); return; }
      var body = table.tBodies[0];
      body.innerHTML = "";
      var head = el("tr", {}, [el("th", { className: "row", text: "First visit week" }), el("th", { text: "People" })]);
      for (var w = 0; w < width; w++) head.appendChild(el("th", { text: w === 0 ? "Week 0" : "+" + w }));
      body.appendChild(head);
      rows.forEach(function (r) {
        var tr = el("tr", {}, [el("th", { className: "row", text: "Week of " + fmtDay(r.cohort_week) }),
          el("td", { className: "size", text: fmtInt(r.size) })]);
        for (var w = 0; w < width; w++) {
          var share = r.retention[w];
          tr.appendChild(share === undefined ? el("td") : el("td", {
            text: fmtPct(share), style: heatColour(share) + (share > 0.55 ? ";color:#fff" : ""),
            title: fmtInt(r.active[w]) + " of " + fmtInt(r.size) + " people"
          }));
        }
        body.appendChild(tr);
      });
    }).catch(function (e) { failed("retention-chart", e); });
  }

  /* ---------------------------------------------------------------- Geography */

  var countryNames = typeof Intl.DisplayNames === "function" ? new Intl.DisplayNames(undefined, { type: "region" }) : null;
  function countryName(code) {
    if (!code) return "Unknown";
    try { return countryNames ? countryNames.of(code) : code; } catch (e) { return code; }
  }

  function geography() {
    analytics("geography").then(function (data) {
      var rows = data.rows.slice().sort(function (a, b) { return b.sessions - a.sessions; });
      var chartRows = rows.slice(0, 12);
      draw("geo-chart", {
        type: "bar",
        data: {
          labels: chartRows.map(function (r) { return countryName(r.country); }),
          datasets: [
            { label: "Sessions", data: chartRows.map(function (r) { return r.sessions; }), backgroundColor: ACCENT },
            { label: "Converted", data: chartRows.map(function (r) { return r.converted_sessions; }), backgroundColor: "#12b76a" }
          ]
        },
        options: { indexAxis: "y", scales: { x: countAxis } }
      }, anyPositive(rows.map(function (r) { return r.sessions; })));
      fillTable("geo-table", rows, function (r) {
        return [td(countryName(r.country)), num(fmtInt(r.sessions)), num(fmtInt(r.converted_sessions)), num(fmtPct(r.conversion))];
      });
    }).catch(function (e) { failed("geo-chart", e); });
  }

  /* ---------------------------------------------------------------- Audience */

  function audience() {
    [["age_band", "audience-age-table"], ["visitor_type", "audience-visitor-table"]].forEach(function (pair) {
      analytics("audience", { breakdown: pair[0] }).then(function (data) {
        fillTable(pair[1], data.rows, function (r) {
          return [td(r.value), num(fmtInt(r.sessions)), num(fmtInt(r.visitors)), num(fmtPct(r.conversion)),
            num(fmtInt(r.orders)), num(fmtMoney(r.revenue)), num(fmtMoney(r.aov))];
        });
      }).catch(function (e) { failed(pair[1], e); });
    });
  }

  /* ---------------------------------------------------------------- Live */

  function describe(event) {
    if (event.product_name) return event.product_name;
    if (event.product_id) return "Product " + event.product_id;
    try { return new URL(event.url).pathname; } catch (e) { return event.url || "—"; }
  }

  function live() {
    var table = document.getElementById("live-table");
    var body = table.tBodies[0];
    var lastId = 0;
    var first = true;
    function poll() {
      fetch("/analytics/live/?" + new URLSearchParams({ shop: config.shop, since_id: lastId, limit: 50 }), {
        credentials: "same-origin", headers: { Accept: "application/json" }
      }).then(function (r) {
        if (!r.ok) throw new Error("live answered " + r.status);
        return r.json();
      }).then(function (data) {
        if (data.rows.length) {
          var placeholder = body.querySelector(".placeholder");
          if (placeholder) placeholder.remove();
        } else if (first) {
          body.querySelector(".placeholder td").textContent = "No events yet. New ones appear here within seconds.";
        }
        data.rows.forEach(function (e) {
          var at = new Date(e.occurred_at).getTime();
          var tr = el("tr", { className: first ? "" : "fresh", "data-id": String(e.id), "data-at": String(at) }, [
            td(timeFormat.format(new Date(e.occurred_at))),
            el("td", {}, [el("span", { className: "tag " + e.type, text: EVENT_LABELS[e.type] || e.type })]),
            td(e.user_id || (e.anonymous_id ? e.anonymous_id.slice(0, 8) + "…" : "—")),
            td(describe(e), "wrap"),
            td(e.country || "—")
          ]);
          // Newest first by event time: an event can arrive after a later one (batched or
          // offline senders), so it goes above the first row that happened before it.
          var before = null;
          for (var i = 0; i < body.rows.length; i++) {
            var row = body.rows[i];
            if (row.dataset.at && Number(row.dataset.at) <= at) { before = row; break; }
          }
          body.insertBefore(tr, before);
        });
        while (body.rows.length > 200) body.deleteRow(body.rows.length - 1);
        lastId = data.last_id;
        first = false;
      }).catch(function () { /* a missed poll is retried two seconds later */ })
        .then(function () { setTimeout(poll, 2000); });
    }
    poll();

    function scores() {
      api("/notifications/scores/live/", { page_size: 20 }).then(function (data) {
        var rows = data.results || [];
        fillTable("scores-table", rows, function (s) {
          // A session that has bought is no prospect: it is listed as bought, without a score.
          var likelihood = s.status === "bought"
            ? el("td", { className: "num" }, [el("span", { className: "tag purchase", text: "Bought" })])
            : el("td", { className: "num" }, [
              el("span", { className: "bar", style: "width:" + Math.round(s.score * 60) + "px" }), fmtPct(s.score)]);
          return [td("#" + s.session), likelihood,
            td(s.scored_at ? timeFormat.format(new Date(s.scored_at)) : "—")];
        }, "No live sessions scored right now. Scores appear once a conversion model is trained and shoppers are active.");
      }).catch(function (e) { failed("scores-table", e); })
        .then(function () { setTimeout(scores, 5000); });
    }
    scores();
  }

  /* ---------------------------------------------------------------- Install and demo */

  function install() {
    var button = document.getElementById("copy-snippet");
    if (!button) return;
    button.addEventListener("click", function () {
      var text = document.getElementById("snippet").textContent;
      var done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy"; }, 2000); };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () { selectSnippet(); });
      } else {
        selectSnippet();
        try { if (document.execCommand("copy")) done(); } catch (e) { /* the text stays selected */ }
      }
    });
  }

  function selectSnippet() {
    var range = document.createRange();
    range.selectNodeContents(document.getElementById("snippet"));
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function demoButtons() {
    var tokenInput = document.querySelector(".demo input[name=csrfmiddlewaretoken]");
    var result = document.getElementById("demo-result");
    document.querySelectorAll("[data-demo]").forEach(function (button) {
      button.addEventListener("click", function () {
        button.disabled = true;
        result.textContent = "Sending…";
        fetch(button.dataset.demo, {
          method: "POST", credentials: "same-origin",
          headers: { "X-CSRFToken": tokenInput.value, "Content-Type": "application/x-www-form-urlencoded" },
          body: new URLSearchParams({ shop: config.shop })
        }).then(function (r) {
          return r.json().then(function (data) {
            if (!r.ok) throw new Error(data.detail || r.status);
            return data;
          });
        }).then(function (data) {
          result.textContent = "Sent " + fmtInt(data.accepted) + " events from " + fmtInt(data.visits) +
            " visits. Figures update once the workers have processed them.";
        }).catch(function (e) { result.textContent = "Failed: " + e.message; })
          .then(function () { button.disabled = false; });
      });
    });
  }


  /* ---------------------------------------------------------------- Alerts */

  var METRIC_LABELS = {
    sessions: "Sessions", events: "Events", orders: "Orders", revenue: "Revenue",
    conversion_rate: "Visit conversion", order_value: "Order", bot: "Bot",
    shared_network: "Shared network", rejected_share: "Rejected events",
    pipeline_lag: "Processing lag", eventless_day: "Day without events"
  };

  function metricLabel(metric) {
    var match = /^(.*)_(hourly|daily)$/.exec(metric);
    if (match) return (METRIC_LABELS[match[1]] || match[1]) + (match[2] === "hourly" ? " per hour" : " per day");
    return METRIC_LABELS[metric] || metric;
  }

  function windowLabel(row) {
    return dateTimeFormat.format(new Date(row.window_start));
  }

  function alerts() {
    var csrf = document.getElementById("alerts-csrf").value;
    var list = document.getElementById("open-anomalies");

    function act(id, action) {
      return fetch("/analytics/anomalies/" + id + "/" + action + "/", {
        method: "POST", credentials: "same-origin",
        headers: { "X-CSRFToken": csrf, Accept: "application/json" }
      }).then(function (response) {
        if (!response.ok) throw new Error(action + " answered " + response.status);
        return response.json();
      });
    }

    function badge(open) {
      var count = (open.warning || 0) + (open.critical || 0);
      var node = document.getElementById("alerts-badge");
      if (node && count) node.textContent = String(count);
      else if (node) node.remove();
    }

    function chart(row, canvas) {
      analytics("anomalies/" + row.id + "/chart").then(function (data) {
        var points = data.points || [];
        var hourly = data.frequency === "hour";
        var labels = points.map(function (p) {
          return hourly ? dateTimeFormat.format(new Date(p.at)) : fmtDay(p.at);
        });
        var pick = function (key) { return points.map(function (p) { return p[key]; }); };
        draw(canvas.id, {
          type: "line",
          data: {
            labels: labels,
            datasets: [
              { label: "Normal band (low)", data: pick("low"), borderWidth: 0, pointRadius: 0, fill: false },
              { label: "Normal band", data: pick("high"), borderWidth: 0, pointRadius: 0,
                backgroundColor: ACCENT_SOFT, fill: "-1" },
              { label: "Usual", data: pick("expected"), borderColor: CYAN, borderDash: [4, 4],
                borderWidth: 1.5, pointRadius: 0 },
              { label: "Observed", data: pick("observed"), borderColor: ACCENT, borderWidth: 2,
                pointRadius: points.map(function (p) { return p.at.slice(0, 13) === row.window_start.slice(0, 13) ? 5 : 0; }),
                pointBackgroundColor: AMBER }
            ]
          },
          options: {
            plugins: { legend: { labels: { filter: function (item) { return item.text !== "Normal band (low)"; } } } },
            scales: { x: { ticks: { maxTicksLimit: 8 } }, y: { beginAtZero: true } }
          }
        }, points.length > 0, "No series to draw for this anomaly.");
      }).catch(function (e) { failed(canvas, e); });
    }

    function card(row) {
      var buttons = [];
      if (row.status === "open") {
        buttons.push(el("button", { type: "button", className: "btn secondary", "data-action": "acknowledge", text: "Acknowledge" }));
      }
      buttons.push(el("button", { type: "button", className: "btn", "data-action": "resolve", text: "Resolve" }));
      var node = el("article", { className: "anomaly", "data-id": String(row.id) }, [
        el("div", { className: "anomaly-head" }, [
          el("span", { className: "tag " + row.severity, text: row.severity }),
          el("strong", { text: metricLabel(row.metric) }),
          el("span", { className: "when", text: windowLabel(row) }),
          row.status === "acknowledged" ? el("span", { className: "tag acknowledged", text: "acknowledged" }) : "",
          el("span", { className: "anomaly-actions" }, buttons)
        ]),
        // Shop and shopper text (order ids, user agents) only ever as text.
        el("p", { text: row.explanation })
      ]);
      if (/_(hourly|daily)$/.test(row.metric) && row.kind !== "threshold") {
        var canvas = el("canvas", { id: "anomaly-chart-" + row.id, "aria-label": "Chart of " + metricLabel(row.metric) });
        node.appendChild(el("div", { className: "anomaly-chart" }, [canvas]));
        chart(row, canvas);
      }
      buttons.forEach(function (button) {
        button.addEventListener("click", function () {
          buttons.forEach(function (b) { b.disabled = true; });
          act(row.id, button.dataset.action).then(load).catch(function (e) {
            node.appendChild(el("p", { className: "muted", text: "Failed: " + e.message }));
            buttons.forEach(function (b) { b.disabled = false; });
          });
        });
      });
      return node;
    }

    function load() {
      analytics("anomalies", { status: "open,acknowledged", limit: 50 }).then(function (data) {
        badge(data.open);
        list.innerHTML = "";
        if (!data.rows.length) {
          list.appendChild(el("p", { className: "muted", id: "no-open-anomalies", text: "Nothing open: the shop looks as usual." }));
          return;
        }
        data.rows.forEach(function (row) { list.appendChild(card(row)); });
      }).catch(function (e) { failed(list, e); });
      analytics("anomalies", { limit: 100 }).then(function (data) {
        fillTable("history-table", data.rows, function (row) {
          return [td(windowLabel(row)), td(metricLabel(row.metric)),
            el("td", {}, [el("span", { className: "tag " + row.severity, text: row.severity })]),
            el("td", {}, [el("span", { className: "tag " + row.status, text: row.status })]),
            td(row.explanation, "wrap")];
        }, "No anomalies yet. Detection runs within a minute of new data.");
      }).catch(function (e) { failed("history-table", e); });
      analytics("alert_deliveries", { limit: 50 }).then(function (data) {
        fillTable("deliveries-table", data.rows, function (row) {
          return [td(dateTimeFormat.format(new Date(row.created_at))), td(row.rule), td(metricLabel(row.metric)),
            el("td", { title: row.error || "" }, [el("span", { className: "tag " + row.status, text: row.status })]),
            num(fmtInt(row.attempts))];
        }, "Nothing sent yet.");
      }).catch(function (e) { failed("deliveries-table", e); });
    }

    analytics("alert_rules").then(function (data) {
      fillTable("rules-table", data.rows, function (rule) {
        var sends = rule.threshold_metric
          ? metricLabel(rule.threshold_metric) + " " + rule.threshold_direction + " " + rule.threshold_value
          : (rule.kinds.length ? rule.kinds.join(", ") : "every kind") + ", " + rule.min_severity + " or worse";
        var to = rule.channel === "email" ? rule.emails.join(", ") : rule.webhook_url;
        return [td(rule.name + (rule.is_active ? "" : " (paused)")), td(sends, "wrap"),
          td(rule.channel + ": " + to, "wrap"), num(rule.cooldown_minutes + " min")];
      }, "No rules yet: anomalies are listed here but sent nowhere.");
    }).catch(function (e) { failed("rules-table", e); });
    load();
    setInterval(load, 30000);
  }

  var PAGES = {
    overview: overview, traffic: traffic, funnel: funnel, products: products, carts: carts,
    retention: retention, geography: geography, audience: audience, live: live, install: install, alerts: alerts
  };
  (PAGES[config.page] || function () {})();
  if (config.isStaff) demoButtons();
})();
