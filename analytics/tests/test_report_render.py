"""A report's findings, text and SVG charts from its figures (pure: no database)."""

import re

from analytics.report_render import bar_chart_svg, findings_compose, report_text_render


def figures(**headline) -> dict:
    head = {"first": "2026-03-04", "last": "2026-03-04", "revenue": "0.00", "gross": "0.00",
            "refunds": "0.00", "orders": 0, "customers": 0, "aov": "0.00", "sessions": 0,
            "visitors": 0, **headline}  # fmt: skip
    before = {**head, "first": "2026-03-03", "revenue": "100.00", "orders": 4, "aov": "25.00"}
    return {
        "shop": "s.example", "shop_name": "S", "kind": "daily", "first": "2026-03-04",
        "last": "2026-03-04", "timezone": "UTC", "currency": "EUR", "headline": head,
        "products_sold": 0, "distinct_products": 0, "peak_revenue_hour": None,
        "peak_revenue": "0.00", "peak_sessions_hour": None, "peak_sessions": 0, "hours": [],
        "days": [], "top_products": [], "top_categories": [], "countries": [],
        "unattributed_refunds": "0.00",
        "customers": {"new": 0, "returning": 0, "new_revenue": "0.00", "returning_revenue": "0.00",
                      "guest_orders": 0, "guest_revenue": "0.00", "new_visitors": 0,
                      "returning_visitors": 0},
        "segments": [],
        "comparisons": [{"label": "the previous day", "figures": before, "revenue_change": None,
                         "orders_change": None, "aov_change": None, "sessions_change": None}],
    }  # fmt: skip


def test_a_day_without_orders_says_so_and_still_has_three_findings():
    data = figures(sessions=1, visitors=1)

    findings = findings_compose(data)

    assert findings == [
        "No orders were placed; 1 session recorded.",
        "1 visitor came in 1 session.",
        "0 identified customers bought; 0 guest orders came without an account.",
    ]


def test_a_day_eaten_by_refunds_leads_with_revenue_then_the_refunds():
    data = figures(revenue="-50.00", gross="150.00", refunds="200.00", orders=1, aov="-50.00",
                   sessions=3, visitors=2)  # fmt: skip
    data["comparisons"][0].update(revenue_change=-1.5, orders_change=-0.75, aov_change=-3.0)

    findings = findings_compose(data)

    assert findings == [
        "Revenue was EUR -50.00 from 1 order, down 150.0% on the previous day (EUR 100.00).",
        "Refunds and cancellations took EUR 200.00 off EUR 150.00 of sales (133.3% of sales).",
        "The average order was EUR -50.00 (−300.0% on the previous day) across 1 order (−75.0%).",
    ]


def test_the_text_says_none_for_a_peak_without_data_and_leaves_out_zero_unlinked_refunds():
    data = figures()

    text = report_text_render(data, ["a", "b", "c"])

    assert re.search(r"\n  Peak hour by revenue +none\n", text)
    assert "Refunds not linked" not in text
    assert text.startswith("Daily report for S: 2026-03-04 (UTC)\n\nFindings\n  1. a\n")


def test_bar_chart_scales_to_the_highest_bar_and_escapes_its_labels():
    svg = bar_chart_svg(title="Sales <&>", labels=["a<b", "c"], values=[5.0, 10.0], color="#000")

    heights = [float(h) for h in re.findall(r'<rect [^>]*height="([\d.]+)"', svg)]
    assert heights == [67.0, 134.0]
    assert "Sales &lt;&amp;&gt;" in svg
    assert "a&lt;b" in svg
    assert "a<b" not in svg
    assert " style=" not in svg
    assert "href" not in svg
