/* The dashboard's Customers page: reads GET /segments/customers/ (list) and
   GET /segments/customers/<id>/ (profile, with a session's events on demand) with the session
   cookie, and draws them. Every id, trait, segment name and URL from the API is set with
   textContent, never parsed as HTML. */
(function () {
  "use strict";

  // The shared DOM helpers (analytics/static/analytics/dom.js, loaded first).
  var dom = window.clickserverDom;
  var el = dom.el, td = dom.td, clear = dom.clear, message = dom.message;

  var configNode = document.getElementById("dashboard-config");
  if (!configNode) return;
  var config = JSON.parse(configNode.textContent);
  if (config.page !== "customers") return;

  var PAGE_SIZE = 25;
  var DAY_MS = 86400000;
  var money = new Intl.NumberFormat(undefined, { style: "currency", currency: config.currency });
  var integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  var decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
  var percent = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 0 });
  var dateFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", year: "numeric" });
  var dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

  function fmtMoney(value) { return value === null || value === undefined ? "—" : money.format(Number(value)); }
  function fmtDate(value) { return value ? dateFormat.format(new Date(value)) : "—"; }
  function fmtWhen(value) { return value ? dateTimeFormat.format(new Date(value)) : "—"; }
  function fmtShare(value) { return value === null || value === undefined ? "—" : percent.format(value); }
  function customerName(row) { return row.user_id || "Person " + row.person_id; }

  function api(path, params) {
    var query = new URLSearchParams(Object.assign({ shop: config.shop }, params || {}));
    return fetch(path + "?" + query.toString(), {
      credentials: "same-origin", headers: { Accept: "application/json" }
    }).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) throw new Error(body.detail || (path + " answered " + response.status));
        return body;
      });
    });
  }

  var MODEL_NAMES = { bgnbd_gg: "BG/NBD + Gamma-Gamma", rfm_gbm: "Gradient-boosted RFM model", baseline: "Baseline (last 90 days repeated)" };
  var BAND_NAMES = { "none": "Not sent" };
  var state = { page: 1, sort: "-revenue", q: "", band: "", selected: null };
  var params = new URLSearchParams(window.location.search);
  if (/^\d+$/.test(params.get("customer") || "")) state.selected = Number(params.get("customer"));

  function listParams() {
    var p = { sort: state.sort, page: String(state.page), page_size: String(PAGE_SIZE) };
    if (state.q) p.q = state.q;
    if (state.band) p.age_band = state.band;
    return p;
  }

  function list() {
    var tbody = document.querySelector("#customers-table tbody");
    var csv = new URLSearchParams(Object.assign({ shop: config.shop, format: "csv" }, listParams()));
    csv.delete("page"); csv.delete("page_size");
    document.getElementById("customers-csv").setAttribute("href", "/segments/customers/?" + csv.toString());
    api("/segments/customers/", listParams()).then(function (body) {
      var pages = Math.max(1, Math.ceil(body.count / PAGE_SIZE));
      document.getElementById("customers-page").textContent =
        "Page " + state.page + " of " + pages + " · " + integer.format(body.count) + " customers";
      document.getElementById("customers-prev").disabled = !body.previous;
      document.getElementById("customers-next").disabled = !body.next;
      if (!body.results.length) {
        message(tbody, 8, state.q ? "No customer has exactly this identifier." : state.band ? "No customer in this age band." :
          "No customers yet: persons with an order appear after the nightly refresh.");
        return;
      }
      clear(tbody);
      body.results.forEach(function (row) {
        var band = row.churn_band ? el("span", { className: "tag churn-" + row.churn_band, text: row.churn_band }) :
          el("span", { className: "muted", text: "—" });
        var tr = el("tr", { className: "selectable", "data-id": String(row.person_id) }, [
          td(customerName(row), "wrap"),
          td(integer.format(row.order_count), "num"),
          td(fmtMoney(row.revenue), "num"),
          td(fmtMoney(row.predicted_clv), "num"),
          el("td", {}, [band]),
          td(fmtShare(row.purchase_probability_30), "num"),
          td(fmtDate(row.next_order_at)),
          td(fmtDate(row.last_seen_at))
        ]);
        tr.addEventListener("click", function () { select(row.person_id, true); });
        tbody.appendChild(tr);
      });
      if (state.selected === null) select(body.results[0].person_id, false);
      else highlight();
    }).catch(function (e) { message(tbody, 8, "Could not load the customers (" + e.message + ")."); });
  }

  function model() {
    api("/segments/customers/model/").then(describeModel).catch(function (e) {
      document.getElementById("model-note").textContent = "Could not load the model's state (" + e.message + ").";
    });
  }

  function highlight() {
    document.querySelectorAll("#customers-table tbody tr").forEach(function (row) {
      row.classList.toggle("selected", row.dataset.id === String(state.selected));
    });
  }

  function fact(list, label, value) {
    list.appendChild(el("li", {}, [el("strong", { text: label + ": " }), value]));
  }

  function select(id, push) {
    state.selected = id;
    highlight();
    if (push) {
      var p = new URLSearchParams(window.location.search);
      p.set("customer", String(id));
      window.history.replaceState(null, "", "?" + p.toString());
    }
    api("/segments/customers/" + id + "/", { sessions: "50" }).then(draw).catch(function (e) {
      document.getElementById("customer-detail").hidden = false;
      document.getElementById("customer-name").textContent = "Could not load this customer";
      document.getElementById("customer-meta").textContent = e.message;
    });
  }

  function fmtFigure(value, digits) {
    return value === null || value === undefined ? "—" : Number(value).toFixed(digits);
  }

  function describeChoice(fit) {
    var choice = document.getElementById("model-choice");
    var wrap = document.getElementById("model-backtest-wrap");
    var bt = fit.backtest || {};
    if (fit.kind === "none") { choice.textContent = ""; wrap.hidden = true; return; }
    if (!bt.ran) {
      choice.textContent = "Model choice: " + (bt.reason || "not run yet.");
      wrap.hidden = true;
      return;
    }
    var wins = Object.keys(bt.wins).filter(function (k) { return bt.wins[k]; }).length;
    choice.textContent = "Model choice: " + MODEL_NAMES[bt.winner] + " (the gradient-boosted model won " + wins +
      " of 3 revenue metrics on the holdout " + bt.cutoff + " to " + bt.holdout_end + ", " +
      integer.format(bt.customers) + " customers, " + integer.format(bt.holdout_buyers) + " of them buying). " + fit.choice_rule;
    var tbody = document.querySelector("#model-backtest tbody");
    clear(tbody);
    ["bgnbd_gg", "rfm_gbm", "baseline"].forEach(function (name) {
      var f = bt.figures[name];
      if (!f) return;
      var label = MODEL_NAMES[name] + (name === bt.winner ? " (used)" : "");
      tbody.appendChild(el("tr", { "data-model": name, className: name === bt.winner ? "selected" : "" }, [
        td(label, "wrap"),
        td(fmtMoney(f.revenue_mae), "num"),
        td(fmtFigure(f.revenue_spearman, 3), "num"),
        td(fmtFigure(f.revenue_gini, 3), "num"),
        td(fmtFigure(f.orders_mae, 3), "num"),
        td(fmtFigure(f.purchase_auc_30, 3), "num")
      ]));
    });
    wrap.hidden = false;
  }

  function ageBands() {
    var tbody = document.querySelector("#age-bands-table tbody");
    api("/segments/customers/age-bands/").then(function (rows) {
      clear(tbody);
      rows.forEach(function (row) {
        var tr = el("tr", { className: "selectable", "data-band": row.age_band }, [
          td(BAND_NAMES[row.age_band] || row.age_band),
          td(integer.format(row.customers), "num"),
          td(fmtMoney(row.revenue), "num"),
          td(fmtMoney(row.predicted_clv), "num")
        ]);
        tr.addEventListener("click", function () {
          state.band = row.age_band;
          document.getElementById("customer-age-band").value = row.age_band;
          state.page = 1;
          list();
        });
        tbody.appendChild(tr);
      });
    }).catch(function (e) { message(tbody, 4, "Could not load the age bands (" + e.message + ")."); });
  }

  function describeModel(fit) {
    var note = document.getElementById("model-note");
    describeChoice(fit);
    if (fit.kind === "none") {
      note.textContent = "No predictions for this shop yet. " + fit.reason + " (minimums: " +
        fit.minimums.customers + " customers with an order, " + fit.minimums.repeat_customers +
        " of them with a repeat purchase, " + fit.minimums.history_days + " days of orders).";
    } else {
      note.textContent = MODEL_NAMES[fit.kind] + (fit.kind === "rfm_gbm" ? " (90-day figures and purchase probability; BG/NBD + Gamma-Gamma for P(alive), churn risk and the next order)" : "") +
        " fitted on " + integer.format(fit.customer_count) +
        " customers (" + integer.format(fit.repeat_customer_count) + " repeat) over " +
        integer.format(fit.history_days) + " days, " + fmtWhen(fit.fitted_at) +
        ". Churn risk is the chance of no order in the next 365 days: low under 40 %, high from 70 %.";
    }
  }

  function draw(profile) {
    document.getElementById("customer-detail").hidden = false;
    var ids = profile.identities;
    document.getElementById("customer-name").textContent = ids.user_id || "Person " + profile.person_id;
    document.getElementById("customer-meta").textContent = "First seen " + fmtWhen(profile.first_seen_at) +
      " · last seen " + fmtWhen(profile.last_seen_at) + " · " + integer.format(profile.session_count) +
      " sessions · " + integer.format(profile.order_count) + " orders · " + fmtMoney(profile.revenue) + " net";
    var facts = document.getElementById("customer-facts");
    clear(facts);
    if (ids.anonymous_ids.length) fact(facts, "Anonymous ids", ids.anonymous_ids.join(", "));
    if (ids.email_hashes.length) fact(facts, "Email (SHA-256)", ids.email_hashes.join(", "));
    if (ids.shopify_customer_ids.length) fact(facts, "Shopify customer", ids.shopify_customer_ids.join(", "));
    var p = profile.prediction;
    if (p && p.model !== "none") {
      fact(facts, "Predicted CLV", fmtMoney(p.predicted_clv) + " (next 365 days " + fmtMoney(p.expected_revenue_365) + ")");
      fact(facts, "Expected orders", decimal.format(p.expected_orders_90) + " in 90 days, " + decimal.format(p.expected_orders_365) + " in 365");
      fact(facts, "Still a customer", fmtShare(p.alive_probability) + "; order in 30 days " + fmtShare(p.purchase_probability_30));
      fact(facts, "Churn risk", (p.churn_band || "—") + " (" + fmtShare(p.churn_risk) + ")");
      fact(facts, "Next order expected", p.next_order_at ? fmtDate(p.next_order_at) : "not within two years");
    } else {
      fact(facts, "Predictions", p ? "none: " + profile.model.reason : "none: no order yet, or not refreshed since the first");
    }
    if (profile.conversion_score) fact(facts, "Live conversion score", fmtShare(profile.conversion_score.score));
    profile.experiments.forEach(function (x) { fact(facts, "Experiment " + x.name, x.variant + " since " + fmtDate(x.first_exposed_at)); });
    (profile.notifications || []).forEach(function (n) { fact(facts, "Campaign " + n.campaign, (n.is_holdout ? "held out (nothing shown)" : n.title) + " · " + fmtDate(n.decided_at)); });

    var traits = document.getElementById("customer-traits");
    clear(traits);
    Object.keys(profile.traits).forEach(function (key) {
      var value = profile.traits[key];
      fact(traits, key, typeof value === "string" ? value : JSON.stringify(value));
    });
    if (!Object.keys(profile.traits).length) traits.appendChild(el("li", { className: "muted", text: "No traits." }));
    var segments = document.getElementById("customer-segments");
    clear(segments);
    profile.segments.forEach(function (s) { fact(segments, s.name, "since " + fmtDate(s.since)); });
    if (!profile.segments.length) segments.appendChild(el("li", { className: "muted", text: "In no segment." }));
    timeline(profile);
    chart(profile);
  }

  function timeline(profile) {
    var tbody = document.querySelector("#timeline-table tbody");
    clear(tbody);
    var items = profile.sessions.map(function (s) { return { at: s.started_at, session: s }; })
      .concat(profile.orders.map(function (o) { return { at: o.placed_at, order: o }; }))
      .sort(function (a, b) { return new Date(b.at) - new Date(a.at); });
    if (!items.length) { message(tbody, 5, "No sessions or orders."); return; }
    items.forEach(function (item) {
      if (item.order) {
        var o = item.order;
        var what = o.is_cancelled ? "Order (cancelled)" : o.refunds.length ? "Order (refunded " + fmtMoney(o.refunded_amount) + ")" : "Order";
        tbody.appendChild(el("tr", { className: "order" }, [td(fmtWhen(o.placed_at)), td(what), td(o.order_id, "wrap"), td(fmtMoney(o.net_revenue), "num"), td("")]));
        return;
      }
      var s = item.session;
      var button = el("button", { type: "button", className: "link-btn", text: "Events" });
      var row = el("tr", { className: "session", "data-session": String(s.id) }, [
        td(fmtWhen(s.started_at)),
        td("Session · " + integer.format(s.event_count) + " events" + (s.is_converted ? " · bought" : "")),
        td([s.entry_url, s.utm_source, s.device, s.country].filter(Boolean).join(" · "), "wrap"),
        td(s.is_converted ? fmtMoney(s.revenue) : "", "num"),
        el("td", {}, [button])
      ]);
      button.addEventListener("click", function () { events(profile.person_id, s.id, row, button); });
      tbody.appendChild(row);
    });
  }

  function events(personId, sessionId, row, button) {
    button.disabled = true;
    api("/segments/customers/" + personId + "/sessions/" + sessionId + "/events/").then(function (rows) {
      var list = el("ul", { className: "insights session-events" });
      rows.forEach(function (e) {
        var detail = [e.type, e.title || e.url, e.product_name, e.revenue ? fmtMoney(e.revenue) : ""].filter(Boolean).join(" · ");
        list.appendChild(el("li", { text: dateTimeFormat.format(new Date(e.occurred_at)) + " — " + detail }));
      });
      row.after(el("tr", { className: "events-row" }, [el("td", { colspan: "5" }, [list])]));
    }).catch(function (e) { button.disabled = false; button.textContent = "Retry (" + e.message + ")"; });
  }

  var spendChart = null;
  function chart(profile) {
    if (spendChart) { spendChart.destroy(); spendChart = null; }
    var orders = profile.orders.filter(function (o) { return !o.is_cancelled; })
      .sort(function (a, b) { return new Date(a.placed_at) - new Date(b.placed_at); });
    var total = 0;
    var past = orders.map(function (o) { total += Number(o.net_revenue); return { x: new Date(o.placed_at).getTime(), y: total }; });
    var future = [];
    var p = profile.prediction;
    if (p && p.predicted_path && p.predicted_path.length) {
      var origin = new Date(p.fitted_at).getTime();
      future = [{ x: origin, y: Number(p.revenue) }].concat(p.predicted_path.map(function (point) {
        return { x: origin + point.days * DAY_MS, y: Number(point.cumulative_revenue) };
      }));
    }
    if (!past.length && !future.length) return;
    spendChart = new Chart(document.getElementById("spend-chart"), {
      type: "line",
      data: {
        datasets: [
          { label: "Net spend so far", data: past, stepped: true, borderColor: "#4f46e5", backgroundColor: "#4f46e5", pointRadius: 3 },
          { label: "Expected (model)", data: future, borderColor: "#f59e0b", backgroundColor: "#f59e0b", borderDash: [6, 4], pointRadius: 2 }
        ]
      },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        scales: {
          x: { type: "linear", ticks: { callback: function (value) { return dateFormat.format(new Date(value)); }, maxTicksLimit: 6 } },
          y: { beginAtZero: true, ticks: { callback: function (value) { return money.format(value); } } }
        },
        plugins: { tooltip: { callbacks: {
          title: function (items) { return dateFormat.format(new Date(items[0].parsed.x)); },
          label: function (item) { return item.dataset.label + ": " + money.format(item.parsed.y); }
        } } }
      }
    });
  }

  document.getElementById("customer-search-form").addEventListener("submit", function (event) {
    event.preventDefault();
    state.q = document.getElementById("customer-search").value.trim();
    state.sort = document.getElementById("customer-sort").value;
    state.band = document.getElementById("customer-age-band").value;
    state.page = 1;
    state.selected = null;
    list();
  });
  document.getElementById("customer-age-band").addEventListener("change", function (event) {
    state.band = event.target.value;
    state.page = 1;
    list();
  });
  document.getElementById("customer-sort").addEventListener("change", function (event) {
    state.sort = event.target.value;
    state.page = 1;
    list();
  });
  document.getElementById("customers-prev").addEventListener("click", function () { state.page -= 1; list(); });
  document.getElementById("customers-next").addEventListener("click", function () { state.page += 1; list(); });

  model();
  ageBands();
  list();
  if (state.selected !== null) select(state.selected, false);
})();
