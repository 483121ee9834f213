"""A report's findings, plain text, SVG charts and HTML, from its stored figures (pure).

Everything here reads the JSON form of `analytics.selectors.reports.ReportFigures` (money as
strings, days as ISO strings), so a stored report renders the same years later. Charts are SVG
drawn here, with presentation attributes and no style attributes or external references: an
email client shows them without fetching anything, and the dashboard's Content-Security-Policy
(`style-src 'self'`) has nothing to block.
"""

from decimal import Decimal
from html import escape
from typing import Any

from django.template.loader import render_to_string

KIND_TITLES = {"daily": "Daily report", "weekly": "Weekly report"}
CHART_WIDTH = 600
CHART_HEIGHT = 180
ACCENT = "#4f46e5"
CYAN = "#0891b2"


def money(value: str | Decimal, currency: str) -> str:
    return f"{currency} {Decimal(value):,.2f}"


def count(n: int, word: str, plural: str = "") -> str:
    """`1 order`, `2 orders`, `2 anomalies`: the figures read as sentences."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {plural or word + 's'}"


def percent(value: float) -> str:
    return f"{value:.1%}"


def _change(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{'+' if value >= 0 else '−'}{abs(value):.1%}"


def period_label(data: dict[str, Any]) -> str:
    if data["kind"] == "weekly":
        return f"week {data['first']} to {data['last']}"
    return data["first"]


def _direction(change: float | None, label: str, amount: str) -> str:
    if change is None:
        return f"with no revenue on {label} to compare with"
    word = "up" if change >= 0 else "down"
    return f"{word} {abs(change):.1%} on {label} ({amount})"


def findings_compose(data: dict[str, Any]) -> list[str]:
    """Three findings in plain language, each derived from the figures (the first three of the
    candidates below that apply, in this order of importance)."""
    cur = data["currency"]
    head = data["headline"]
    candidates: list[str] = []
    comparisons = data["comparisons"]
    if head["orders"]:
        parts = [
            _direction(c["revenue_change"], c["label"], money(c["figures"]["revenue"], cur))
            for c in comparisons
        ]
        candidates.append(
            f"Revenue was {money(head['revenue'], cur)} from {count(head['orders'], 'order')}, "
            + " and ".join(parts)
            + "."
        )
    else:
        candidates.append(f"No orders were placed; {count(head['sessions'], 'session')} recorded.")
    # Reports stored before anomalies were part of them have no such key.
    anomalies = data.get("anomalies") or {"critical": 0, "rows": []}
    critical = [a for a in anomalies["rows"] if a["severity"] == "critical"]
    if anomalies["critical"] and critical:
        more = anomalies["critical"] - 1
        others = (
            f" ({count(more, 'other critical anomaly', 'other critical anomalies')} in the period)"
            if more
            else ""
        )
        candidates.append(
            f"Critical anomaly at {anomaly_window(critical[0])}: "
            f"{critical[0]['explanation'].rstrip('.')}{others}."
        )
    gross, refunds = Decimal(head["gross"]), Decimal(head["refunds"])
    if refunds > 0 and (gross == 0 or refunds >= gross / 10):
        share = f" ({percent(float(refunds / gross))} of sales)" if gross else ""
        candidates.append(
            f"Refunds and cancellations took {money(refunds, cur)} off "
            f"{money(gross, cur)} of sales{share}."
        )
    previous = comparisons[0]
    if head["orders"] and previous["figures"]["orders"]:
        candidates.append(
            f"The average order was {money(head['aov'], cur)} "
            f"({_change(previous['aov_change'])} on {previous['label']}) across "
            f"{count(head['orders'], 'order')} ({_change(previous['orders_change'])})."
        )
    countries = [c for c in data["countries"] if Decimal(c["revenue"]) > 0]
    if countries and gross > 0:
        top = countries[0]
        candidates.append(
            f"{top['country'] or 'Unknown country'} brought "
            f"{percent(float(Decimal(top['revenue']) / gross))} of sales "
            f"({money(top['revenue'], cur)} from {count(top['orders'], 'order')})."
        )
    customers = data["customers"]
    buyers = customers["new"] + customers["returning"]
    if buyers:
        candidates.append(
            f"{customers['new']:,} of {buyers:,} identified buyers ordered for the first time; "
            f"returning customers spent {money(customers['returning_revenue'], cur)}."
        )
    if data["top_products"]:
        best = data["top_products"][0]
        candidates.append(
            f"The best seller was {best['name'] or best['product_id']}: "
            f"{count(best['units'], 'unit')} in {count(best['orders'], 'order')}, "
            f"{money(best['revenue'], cur)}."
        )
    if data["peak_sessions_hour"] is not None:
        candidates.append(
            f"Sessions peaked at {data['peak_sessions_hour']:02d}:00 "
            f"({count(data['peak_sessions'], 'session')} started)."
        )
    sessions_change = previous["sessions_change"]
    versus = (
        f" ({_change(sessions_change)} on {previous['label']})"
        if sessions_change is not None
        else ""
    )
    candidates.append(
        f"{count(head['visitors'], 'visitor')} came in "
        f"{count(head['sessions'], 'session')}{versus}."
    )
    candidates.append(
        f"{count(head['customers'], 'identified customer')} bought; "
        f"{count(customers['guest_orders'], 'guest order')} came without an account."
    )
    return candidates[:3]


def anomaly_window(row: dict[str, Any]) -> str:
    """`2026-03-04 14:00–15:00` (local): the window from its stored ISO form."""
    start, end = row["window_start"], row["window_end"]
    if start[:10] == end[:10] or (end[11:16] == "00:00" and start[11:16] != "00:00"):
        return f"{start[:10]} {start[11:16]}–{end[11:16]}"
    if start[11:16] == end[11:16] == "00:00":
        return start[:10]
    return f"{start[:10]} {start[11:16]} to {end[:10]} {end[11:16]}"


def _anomaly_lines(data: dict[str, Any]) -> list[str]:
    anomalies = data.get("anomalies")
    if not anomalies or not anomalies["count"]:
        return ["  None detected."]
    lines = [
        f"  {count(anomalies['count'], 'anomaly', 'anomalies')}: "
        f"{anomalies['critical']:,} critical, "
        f"{anomalies['warning']:,} warning, {anomalies['info']:,} info"
    ]
    for row in anomalies["rows"]:
        lines.append(
            f"  [{row['severity']}] {anomaly_window(row)} {row['metric']} ({row['status']}): "
            f"{row['explanation']}"
        )
    if anomalies["count"] > len(anomalies["rows"]):
        lines.append(f"  … and {anomalies['count'] - len(anomalies['rows']):,} more")
    return lines


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        cells = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  " + "  ".join(cells).rstrip()

    return [line(header), *(line(r) for r in rows)]


def _hour(value: int | None) -> str:
    return "none" if value is None else f"{value:02d}:00–{value:02d}:59"


def report_text_render(data: dict[str, Any], findings: list[str]) -> str:
    cur = data["currency"]
    head = data["headline"]
    customers = data["customers"]
    refunds = Decimal(data["unattributed_refunds"])
    unattributed = [["Refunds not linked to an order", "", money(-refunds, cur)]] if refunds else []
    basis = "net of refunds" if data.get("products_net") else "sales before refunds"
    lines = [
        f"{KIND_TITLES[data['kind']]} for {data['shop_name']}: {period_label(data)} "
        f"({data['timezone']})",
        "",
        "Findings",
        *(f"  {i}. {finding}" for i, finding in enumerate(findings, start=1)),
        "",
        "Figures",
        *_table(
            [
                ["Revenue (net)", money(head["revenue"], cur)],
                ["Sales before refunds", money(head["gross"], cur)],
                ["Refunds and cancellations", money(head["refunds"], cur)],
                ["Orders", f"{head['orders']:,}"],
                ["Average order value", money(head["aov"], cur)],
                ["Unique customers", f"{head['customers']:,}"],
                ["Products sold (units)", f"{data['products_sold']:,}"],
                ["Distinct products sold", f"{data['distinct_products']:,}"],
                ["Sessions", f"{head['sessions']:,}"],
                ["Visitors", f"{head['visitors']:,}"],
                ["Peak hour by revenue", _hour(data["peak_revenue_hour"])],
                ["Peak hour by sessions", _hour(data["peak_sessions_hour"])],
            ],
            ["", ""],
        )[1:],
        "",
        "Compared with",
        *_table(
            [
                [
                    f"{c['label']} ({c['figures']['first']})",
                    f"{money(c['figures']['revenue'], cur)} ({_change(c['revenue_change'])})",
                    f"{c['figures']['orders']:,} ({_change(c['orders_change'])})",
                    f"{money(c['figures']['aov'], cur)} ({_change(c['aov_change'])})",
                    f"{c['figures']['sessions']:,} ({_change(c['sessions_change'])})",
                ]
                for c in data["comparisons"]
            ],
            ["", "Revenue", "Orders", "AOV", "Sessions"],
        ),
        "",
        f"Top products ({basis})",
        *_table(
            [
                [
                    f"{p['name'] or p['product_id']} ({p['product_id']})",
                    f"{p['units']:,}",
                    f"{p['orders']:,}",
                    money(p["revenue"], cur),
                ]
                for p in data["top_products"]
            ],
            ["", "Units", "Orders", "Revenue"],
        ),
        "",
        f"Top categories ({basis})",
        *_table(
            [
                [c["category"], f"{c['units']:,}", money(c["revenue"], cur)]
                for c in data["top_categories"]
            ],
            ["", "Units", "Revenue"],
        ),
        "",
        "Revenue by country (net of refunds linked to an order)",
        *_table(
            [
                [c["country"] or "Unknown", f"{c['orders']:,}", money(c["revenue"], cur)]
                for c in data["countries"]
            ]
            + unattributed,
            ["", "Orders", "Revenue"],
        ),
        "",
        "New and returning",
        *_table(
            [
                ["New customers", f"{customers['new']:,}", money(customers["new_revenue"], cur)],
                [
                    "Returning customers",
                    f"{customers['returning']:,}",
                    money(customers["returning_revenue"], cur),
                ],
                [
                    "Guest orders",
                    f"{customers['guest_orders']:,}",
                    money(customers["guest_revenue"], cur),
                ],
                ["New visitors", f"{customers['new_visitors']:,}", ""],
                ["Returning visitors", f"{customers['returning_visitors']:,}", ""],
            ],
            ["", "Count", "Sales"],
        ),
        "",
        "Value segments of the period's buyers (at the period's end)",
        *_table(
            [
                [s["name"], f"{s['customers']:,}", money(s["revenue"], cur)]
                for s in data["segments"]
            ],
            ["", "Customers", "Sales"],
        ),
        "",
        "Anomalies (shop-local windows starting in the period)",
        *_anomaly_lines(data),
    ]
    return "\n".join(lines) + "\n"


def bar_chart_svg(*, title: str, labels: list[str], values: list[float], color: str) -> str:
    """A bar chart as standalone SVG markup; labels are escaped, values drawn to scale."""
    left, bottom, top = 40, 24, 22
    plot_w, plot_h = CHART_WIDTH - left - 8, CHART_HEIGHT - bottom - top
    high = max([v for v in values if v > 0], default=0.0)
    step = plot_w / max(len(values), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_WIDTH}" height="{CHART_HEIGHT}" '
        f'viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{left}" y="14" font-family="sans-serif" font-size="12" fill="#111827">'
        f"{escape(title)}</text>",
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#9ca3af" stroke-width="1"/>',
        f'<text x="{left - 4}" y="{top + 8}" font-family="sans-serif" font-size="9" '
        f'fill="#6b7280" text-anchor="end">{escape(f"{high:,.0f}")}</text>',
    ]
    every = max(1, len(labels) // 12)
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        height = plot_h * value / high if high and value > 0 else 0
        x = left + i * step + step * 0.15
        parts.append(
            f'<rect x="{x:.1f}" y="{top + plot_h - height:.1f}" width="{step * 0.7:.1f}" '
            f'height="{height:.1f}" fill="{color}"><title>{escape(label)}: '
            f"{escape(f'{value:,.2f}')}</title></rect>"
        )
        if i % every == 0:
            parts.append(
                f'<text x="{x + step * 0.35:.1f}" y="{CHART_HEIGHT - 8}" font-family="sans-serif" '
                f'font-size="9" fill="#6b7280" text-anchor="middle">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def report_charts_render(data: dict[str, Any]) -> dict[str, str]:
    """The report's charts by name: revenue and sessions per hour (per day for a week)."""
    if data["kind"] == "weekly":
        rows, labels = data["days"], [row["day"][5:] for row in data["days"]]
        unit = "day"
    else:
        rows, labels = data["hours"], [f"{row['hour']:02d}" for row in data["hours"]]
        unit = "hour"
    return {
        "revenue": bar_chart_svg(
            title=f"Net revenue per {unit} ({data['currency']})",
            labels=labels,
            values=[float(row["revenue"]) for row in rows],
            color=ACCENT,
        ),
        "sessions": bar_chart_svg(
            title=f"Sessions per {unit}",
            labels=labels,
            values=[float(row["sessions"]) for row in rows],
            color=CYAN,
        ),
    }


def report_html_render(data: dict[str, Any], findings: list[str], charts: dict[str, str]) -> str:
    """The HTML version (email and archive): a Django template, so every figure and name from
    the shop is autoescaped; only our own SVG markup is marked safe, in the template."""
    return render_to_string(
        "analytics/email/report.html",
        {
            "data": data,
            "title": f"{KIND_TITLES[data['kind']]}: {period_label(data)}",
            "findings": findings,
            "charts": charts,
            "anomaly_rows": [
                {**row, "window": anomaly_window(row)}
                for row in (data.get("anomalies") or {}).get("rows", [])
            ],
        },
    )
