/* The Reports page: the archive of a shop's daily and weekly reports, and one report's findings,
   charts and text. Everything from the server goes in through textContent or as an image's data
   URL (the charts are SVG drawn by the server); nothing is parsed as HTML here. */
(function () {
  "use strict";

  var configNode = document.getElementById("dashboard-config");
  if (!configNode) return;
  var config = JSON.parse(configNode.textContent);
  if (config.page !== "reports") return;
  var table = document.getElementById("reports-table");
  var kindSelect = document.getElementById("report-kind");
  var dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

  function getJson(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error(url.split("?")[0] + " answered " + response.status);
        return response.json();
      });
  }

  function cell(text) {
    var td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  function message(text) {
    var body = table.tBodies[0];
    body.replaceChildren();
    var row = document.createElement("tr");
    row.className = "placeholder";
    var td = cell(text);
    td.colSpan = 3;
    td.className = "muted";
    row.appendChild(td);
    body.appendChild(row);
  }

  function period(report) {
    return report.kind === "weekly" ? report.first_day + " – " + report.last_day : report.first_day;
  }

  function show(id) {
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      row.classList.toggle("selected", row.dataset.id === String(id));
    });
    var query = new URLSearchParams({ shop: config.shop });
    getJson("/analytics/reports/" + id + "/?" + query).then(function (report) {
      var data = report.data;
      document.getElementById("report-title").textContent =
        (report.kind === "weekly" ? "Weekly report: " : "Daily report: ") + period(report);
      var findings = document.getElementById("report-findings");
      findings.replaceChildren();
      data.findings.forEach(function (finding) {
        var li = document.createElement("li");
        li.textContent = finding;
        findings.appendChild(li);
      });
      var charts = document.getElementById("report-charts");
      charts.replaceChildren();
      Object.keys(data.charts).forEach(function (name) {
        var img = document.createElement("img");
        img.alt = name === "revenue" ? "Net revenue chart" : "Sessions chart";
        img.dataset.chart = name;
        img.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(data.charts[name]);
        charts.appendChild(img);
      });
      document.getElementById("report-text").textContent = report.text;
      var link = document.getElementById("report-html");
      query.set("format", "html");
      link.href = "/analytics/reports/" + id + "/?" + query;
      link.hidden = false;
    }).catch(function (error) {
      document.getElementById("report-text").textContent = "Could not load the report: " + error.message;
    });
  }

  function load() {
    var query = new URLSearchParams({ shop: config.shop, page_size: 200 });
    if (kindSelect.value) query.set("kind", kindSelect.value);
    getJson("/analytics/reports/?" + query).then(function (page) {
      if (!page.results.length) {
        message("No reports yet. The first one is built after the shop's day ends.");
        return;
      }
      var body = table.tBodies[0];
      body.replaceChildren();
      page.results.forEach(function (report) {
        var row = document.createElement("tr");
        row.dataset.id = report.id;
        row.appendChild(cell(period(report)));
        row.appendChild(cell(report.kind === "weekly" ? "Weekly" : "Daily"));
        row.appendChild(cell(report.sent_at ? dateTime.format(new Date(report.sent_at)) +
          " (" + report.recipient_count + ")" : "not sent"));
        row.addEventListener("click", function () { show(report.id); });
        body.appendChild(row);
      });
      show(page.results[0].id);
    }).catch(function (error) { message("Could not load the reports: " + error.message); });
  }

  kindSelect.addEventListener("change", load);
  load();
})();
