"""Findings in plain language from the period's rollups."""

from dataclasses import dataclass
from datetime import date

from django.db.models import Sum

from analytics.selectors.products import top_products_by
from analytics.selectors.query import Query, ratio
from analytics.selectors.rollups import daily_rollups, revenue_totals
from analytics.selectors.trends import heat_map, hourly_sessions, peaks
from clickserver.money import money_format


@dataclass(frozen=True, slots=True)
class Insights:
    findings: list[str]
    peak_hour: int | None
    peak_weekday: str | None
    most_abandoned_product: str | None
    best_source: str | None
    revenue_change: float | None
    start: date
    end: date


def insights_get(*, query: Query) -> Insights:
    peak_hour, peak_weekday = peaks(heat_map(hourly_sessions(query), query.period.tz))
    top_abandoned = top_products_by(query, order_by="abandoned_carts", limit=1)
    sources = [
        row
        for row in daily_rollups(query, by_dimension=True)
        .exclude(utm_source="")
        .values("utm_source")
        .annotate(n=Sum("session_count"), converted=Sum("converted_session_count"))
        if row["n"]
    ]
    best = max(sources, key=lambda r: (r["converted"] / r["n"], r["n"]), default=None)
    now = revenue_totals(shop=query.shop, start=query.period.start, end=query.period.end)
    previous_period = query.period.previous()
    before = revenue_totals(shop=query.shop, start=previous_period.start, end=previous_period.end)
    change = (
        round(float((now["revenue"] - before["revenue"]) / before["revenue"]), 6)
        if before["revenue"]
        else None
    )
    findings = []
    if peak_hour is not None:
        findings.append(f"Traffic peaks at {peak_hour:02d}:00 and on {peak_weekday}s.")
    abandoned = top_abandoned[0] if top_abandoned and top_abandoned[0].abandoned_carts else None
    if abandoned:
        findings.append(
            f"The most abandoned product is {abandoned.product_name or abandoned.product_id} "
            f"({abandoned.abandoned_carts} carts left without a purchase)."
        )
    if best:
        findings.append(
            f"{best['utm_source']} converts best: {best['converted']} of {best['n']} sessions "
            f"({ratio(best['converted'], best['n']):.1%})."
        )
    if change is not None:
        direction = "up" if change >= 0 else "down"
        findings.append(
            f"Revenue is {direction} {abs(change):.1%} on the previous {query.period.days} days "
            f"({money_format(now['revenue'])} vs {money_format(before['revenue'])})."
        )
    return Insights(
        findings=findings,
        peak_hour=peak_hour,
        peak_weekday=peak_weekday,
        most_abandoned_product=abandoned.product_id if abandoned else None,
        best_source=best["utm_source"] if best else None,
        revenue_change=change,
        start=query.period.first,
        end=query.period.last,
    )
