/* The dashboard's Campaigns page: reads GET /notifications/campaigns/ and
   GET /notifications/campaigns/<id>/results/ (same origin, session cookie), draws them, and posts
   Start / Pause / Stop and Pause all to the campaign API with the page's CSRF token. Every name,
   key and sentence from the API is set with textContent, never parsed as HTML. */
(function () {
  "use strict";

  // The shared DOM helpers (analytics/static/analytics/dom.js, loaded first).
  var dom = window.clickserverDom;
  var el = dom.el, td = dom.td, num = dom.num, clear = dom.clear, message = dom.message;

  var configNode = document.getElementById("dashboard-config");
  if (!configNode) return;
  var config = JSON.parse(configNode.textContent);
  if (config.page !== "campaigns") return;

  var COLOURS = { decisions: "#98a2b3", shown: "#4f46e5", clicked: "#16a34a", dismissed: "#f59e0b" };
  var CHANNELS = { on_site: "On-site", email: "Email", webhook: "Webhook" };
  var TRIGGERS = {
    score_band: "score band", cart_abandoned: "cart abandoned", checkout_started: "checkout started",
    product_viewed: "product viewed", segment_entered: "segment entered", first_visit: "first visit",
    other: "other"
  };
  // Which buttons a status allows (docs/campaigns.md: draft → running ⇄ paused → stopped).
  var ALLOWED = {
    draft: { start: true, stop: true }, running: { pause: true, stop: true },
    paused: { start: true, stop: true }, stopped: {}
  };

  var money = new Intl.NumberFormat(undefined, { style: "currency", currency: config.currency });
  var signedMoney = new Intl.NumberFormat(undefined, {
    style: "currency", currency: config.currency, signDisplay: "exceptZero"
  });
  var integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  var percent = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 1 });
  var signedPercent = new Intl.NumberFormat(undefined, {
    style: "percent", maximumFractionDigits: 1, signDisplay: "exceptZero"
  });
  var dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

  function query(extra) {
    return new URLSearchParams(Object.assign({ shop: config.shop }, extra || {})).toString();
  }
  function api(path, method) {
    var headers = { Accept: "application/json" };
    if (method === "POST") headers["X-CSRFToken"] = document.getElementById("campaigns-csrf").value;
    return fetch(path + "?" + query(), {
      method: method || "GET", credentials: "same-origin", headers: headers
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        if (!response.ok) throw new Error(body.detail || (path + " answered " + response.status));
        return body;
      });
    });
  }

  function fmtCount(value) { return value === null || value === undefined ? "—" : integer.format(value); }
  function fmtRate(value) { return value === null || value === undefined ? "—" : percent.format(value); }
  function fmtMoney(value) { return value === null || value === undefined ? "—" : money.format(value); }
  function fmtMoneyInterval(interval) {
    if (!interval) return "—";
    return signedMoney.format(interval.estimate) + " (" + money.format(interval.ci_low) + " to " +
      money.format(interval.ci_high) + ")";
  }
  function fmtUplift(comparison) {
    if (!comparison || !comparison.relative) return "—";
    var r = comparison.relative;
    return signedPercent.format(r.estimate) + " (" + percent.format(r.ci_low) + " to " + percent.format(r.ci_high) + ")";
  }
  function channelName(channel) { return CHANNELS[channel] || channel; }

  var campaigns = [];
  var selected = null;

  function list(keepSelection) {
    var tbody = document.querySelector("#campaigns-table tbody");
    return api("/notifications/campaigns/").then(function (rows) {
      campaigns = rows;
      pauseAllShow(rows);
      if (!rows.length) {
        message(tbody, 9, "No campaigns yet. Create one through POST /notifications/campaigns/.");
        return;
      }
      clear(tbody);
      rows.forEach(function (campaign) {
        var headline = config.headlines[String(campaign.id)] || {};
        var row = el("tr", { className: "selectable", "data-id": String(campaign.id) }, [
          td(campaign.name, "wrap"),
          el("td", {}, [el("span", { className: "tag " + campaign.status, text: campaign.status })]),
          td(channelName(campaign.channel)),
          td(headline.trigger_summary || campaign.trigger.kind, "wrap"),
          num(fmtCount(headline.decisions)),
          num(fmtCount(headline.shown)),
          num(fmtRate(headline.click_through_rate)),
          num(fmtMoneyInterval(headline.incremental_revenue)),
          td(headline.verdict || (campaign.status === "draft" ? "Draft: not started." : "No results yet."), "wrap")
        ]);
        row.addEventListener("click", function () { select(campaign.id, true); });
        tbody.appendChild(row);
      });
      var wanted = rows.filter(function (c) { return c.id === (keepSelection ? selected : config.campaign); })[0];
      select((wanted || rows[0]).id, false);
    }).catch(function (e) { message(tbody, 9, "Could not load the campaigns (" + e.message + "). Reload to retry."); });
  }

  // The emergency brake, for those who may act: shown while something runs.
  function pauseAllShow(rows) {
    var button = document.getElementById("campaigns-pause-all");
    var running = rows.filter(function (c) { return c.status === "running"; }).length;
    button.hidden = !config.canManage || running === 0;
    button.disabled = false;
  }

  function actionsShow(campaign) {
    var box = document.getElementById("campaign-actions");
    box.hidden = !config.canManage;
    var allowed = ALLOWED[campaign.status] || {};
    box.querySelectorAll("button").forEach(function (button) {
      button.disabled = !allowed[button.dataset.action];
    });
  }

  function select(id, push) {
    selected = id;
    document.querySelectorAll("#campaigns-table tbody tr").forEach(function (row) {
      row.classList.toggle("selected", row.dataset.id === String(id));
    });
    if (push) {
      var params = new URLSearchParams(window.location.search);
      params.set("campaign", String(id));
      window.history.replaceState(null, "", "?" + params.toString());
    }
    var campaign = campaigns.filter(function (c) { return c.id === id; })[0];
    document.getElementById("campaign-detail").hidden = false;
    document.getElementById("campaign-name").textContent = campaign.name;
    document.getElementById("campaign-meta").textContent = "Key " + campaign.key + " · " + campaign.status +
      " · " + channelName(campaign.channel) + " · holdout " + percent.format(campaign.holdout_share) +
      " · experiment " + campaign.experiment.key +
      (campaign.started_at ? " · started " + dateTimeFormat.format(new Date(campaign.started_at)) : "");
    actionsShow(campaign);
    document.getElementById("campaign-csv").href = "/notifications/campaigns/" + id + "/results/?" + query({ format: "csv" });
    document.getElementById("campaign-verdict").textContent = "Loading…";
    api("/notifications/campaigns/" + id + "/results/").then(function (results) {
      if (selected === id) showResults(results);
    }).catch(function (e) {
      if (selected === id) showResults(null, "Could not load the results (" + e.message + "). Reload to retry.");
    });
  }

  function showResults(results, why) {
    var armsBody = document.querySelector("#campaign-arms-table tbody");
    var reasonsBody = document.querySelector("#campaign-reasons-table tbody");
    var deliveriesBody = document.querySelector("#campaign-deliveries-table tbody");
    var canvas = document.getElementById("campaign-chart");
    var previous = Chart.getChart(canvas);
    if (previous) previous.destroy();
    var incremental = document.getElementById("campaign-incremental");
    if (!results) {
      document.getElementById("campaign-verdict").textContent = why;
      incremental.textContent = "";
      message(armsBody, 12, why);
      message(reasonsBody, 3, why);
      message(deliveriesBody, 3, why);
      return;
    }
    var verdict = results.verdict || (results.experiment.status === "draft"
      ? "A draft has no results: start the campaign to collect decisions and exposures."
      : "No experiment results yet.");
    document.getElementById("campaign-verdict").textContent = verdict;
    var level = results.alpha === null ? "95 %" : Math.round(100 * (1 - results.alpha)) + " %";
    incremental.textContent = results.incremental_revenue
      ? "Incremental revenue: " + fmtMoneyInterval(results.incremental_revenue) + " over " +
        integer.format(results.incremental_revenue.treatment_units) + " treated units (" + level + " interval" +
        (results.is_sequential ? ", sequential" : "") + (results.incremental_revenue.is_exact ? "" : ", summed over the arms: conservative") + ")."
      : "Incremental revenue: not measurable yet (no revenue comparison against the holdout).";
    clear(armsBody);
    results.arms.forEach(function (arm) {
      armsBody.appendChild(el("tr", { "data-arm": arm.arm }, [
        td(arm.is_holdout ? arm.arm + " (control)" : arm.arm),
        num(fmtCount(arm.decisions)), num(fmtCount(arm.shown)), num(fmtCount(arm.clicked)),
        num(fmtCount(arm.dismissed)), num(fmtRate(arm.click_through_rate)),
        num(fmtCount(arm.units)), num(fmtCount(arm.conversions)),
        num(arm.is_holdout ? "—" : fmtUplift(arm.conversion)),
        num(fmtMoney(arm.net_revenue)), num(fmtMoney(arm.revenue_per_unit)),
        num(arm.is_holdout ? "—" : fmtMoneyInterval(arm.incremental_revenue))
      ]));
    });
    if (results.decisions.by_reason.length) {
      clear(reasonsBody);
      results.decisions.by_reason.forEach(function (row) {
        reasonsBody.appendChild(el("tr", {}, [
          td(row.arm), td(TRIGGERS[row.reason_kind] || row.reason_kind), num(fmtCount(row.decisions))
        ]));
      });
    } else {
      message(reasonsBody, 3, "No decisions yet.");
    }
    clear(deliveriesBody);
    results.deliveries.forEach(function (channel) {
      var arms = Object.keys(channel.delivered);
      if (!arms.length) {
        deliveriesBody.appendChild(el("tr", {}, [td(channelName(channel.channel)), td("—"), num("0")]));
      }
      arms.forEach(function (arm) {
        deliveriesBody.appendChild(el("tr", {}, [
          td(channelName(channel.channel)), td(arm), num(fmtCount(channel.delivered[arm]))
        ]));
      });
    });
    chartDraw(canvas, results);
  }

  function chartDraw(canvas, results) {
    var box = canvas.parentNode;
    var empty = box.querySelector(".empty-state");
    if (empty) empty.remove();
    if (!results.decisions.total) {
      box.appendChild(el("div", { className: "empty-state", text: "No decisions yet." }));
      return;
    }
    var keys = ["decisions", "shown", "clicked", "dismissed"];
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: results.arms.map(function (arm) { return arm.arm; }),
        datasets: keys.map(function (key) {
          return { label: key, data: results.arms.map(function (arm) { return arm[key]; }),
            backgroundColor: COLOURS[key] };
        })
      },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        scales: { y: { beginAtZero: true, ticks: { precision: 0 } } }
      }
    });
  }

  document.querySelectorAll("#campaign-actions button").forEach(function (button) {
    button.addEventListener("click", function () {
      var id = selected;
      var action = button.dataset.action;
      var status = document.getElementById("campaign-message");
      button.disabled = true;
      api("/notifications/campaigns/" + id + "/" + action + "/", "POST").then(function (campaign) {
        status.textContent = "Campaign " + campaign.status + ".";
        return list(true);
      }).catch(function (e) {
        status.textContent = "Could not " + action + " the campaign: " + e.message;
        button.disabled = false;
      });
    });
  });

  document.getElementById("campaigns-pause-all").addEventListener("click", function () {
    var button = this;
    var status = document.getElementById("campaigns-message");
    button.disabled = true;
    api("/notifications/campaigns/pause-all/", "POST").then(function (paused) {
      status.textContent = paused.length === 1 ? "1 campaign paused." : paused.length + " campaigns paused.";
      return list(true);
    }).catch(function (e) {
      status.textContent = "Could not pause the campaigns: " + e.message;
      button.disabled = false;
    });
  });

  list(false);
})();
