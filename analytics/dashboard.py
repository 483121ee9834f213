"""The dashboard: server-rendered page shells whose figures the browser fetches from the API.

Pages only resolve the shop (a member's shop, else 404) and the period, and hand both to
`analytics/dashboard.js`, which reads `/analytics/…` with the session cookie. The demo endpoints
feed the simulator's journeys straight into `events_ingest`, as `simulate_traffic` does over HTTP.
"""

import secrets
from dataclasses import dataclass
from datetime import date, timedelta
from functools import wraps
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_POST

from analytics.selectors.anomalies import anomalies_open_count
from clickserver.errors import ApplicationError, error_http_response
from clickserver.params import period_days_parse
from events.models import Shop
from events.selectors import shop_get_for_user, shops_for_user
from events.services.ingest import events_ingest
from events.simulator import Simulator
from events.snippet import snippet_tag


@dataclass(frozen=True, slots=True)
class Page:
    name: str
    title: str
    path: str
    # False: no period picker (the figures do not depend on it; the nav still carries it along).
    has_period: bool = True
    # False: another app serves the page with its own view (Experiments: notifications), reusing
    # `page_context` and base.html; analytics only lists it in the nav (Experiments, Campaigns).
    in_analytics: bool = True


PAGES = (
    Page("overview", "Overview", "/"),
    Page("traffic", "Traffic", "/traffic/"),
    Page("funnel", "Funnel", "/funnel/"),
    Page("products", "Products", "/products/"),
    Page("carts", "Abandoned carts", "/carts/"),
    Page("retention", "Retention", "/retention/"),
    Page("geography", "Geography", "/geography/"),
    Page("audience", "Audience", "/audience/"),
    Page("live", "Live", "/live/"),
    # Served here (a page shell) though its figures come from segments' /segments/customers/:
    # analytics must not import segments, and the shell needs nothing from it.
    Page("customers", "Customers", "/customers/", has_period=False),
    Page("reports", "Reports", "/reports/", has_period=False),
    Page("alerts", "Alerts", "/alerts/", has_period=False),
    Page(
        "experiments",
        "Experiments",
        "/experiments-dashboard/",
        has_period=False,
        in_analytics=False,
    ),
    Page(
        "campaigns",
        "Campaigns",
        "/campaigns-dashboard/",
        has_period=False,
        in_analytics=False,
    ),
    Page("model", "Model", "/model/", has_period=False, in_analytics=False),
    Page("install", "Install", "/install/"),
)
PRESET_DAYS = (7, 30, 90)
DEMO_BATCH = 500
DEMO_VISITS = 300
DEMO_DAYS = 7


def _period(request: HttpRequest, shop: Shop) -> tuple[date, date, date]:
    """The requested local-day period, bounded as the API bounds it (ApplicationError if not)."""
    today = timezone.now().astimezone(ZoneInfo(shop.timezone)).date()
    start, end = period_days_parse(request.GET, today=today)
    return start, end, today


def page_context(request: HttpRequest, page: Page) -> dict[str, Any] | HttpResponse:
    """A page's template context (shop, period, nav, the `config` handed to the page's script),
    or the response to send instead: no shop yet, or a 400 for an unusable period."""
    shops = list(shops_for_user(user=request.user))
    if not shops:
        return render(request, "analytics/no_shop.html", {"pages": ()})
    domain = request.GET.get("shop")
    shop = next((s for s in shops if s.domain == domain), None) if domain else shops[0]
    if shop is None:
        raise Http404("No such shop.")
    try:
        start, end, today = _period(request, shop)
    except ApplicationError as error:
        # The same 400 envelope as the API the page would call with this period.
        return error_http_response(error)
    query = urlencode({"shop": shop.domain, "start": start, "end": end})
    presets = [
        {
            "days": days,
            "query": urlencode(
                {"shop": shop.domain, "start": today - timedelta(days=days - 1), "end": today}
            ),
            "active": end == today and (end - start).days == days - 1,
        }
        for days in PRESET_DAYS
    ]
    config = {
        "page": page.name,
        "shop": shop.domain,
        "currency": shop.currency,
        "timezone": shop.timezone,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "isStaff": request.user.is_staff,
    }
    context = {
        "page": page,
        "pages": PAGES,
        "shops": shops,
        "shop": shop,
        "start": start,
        "end": end,
        "days": (end - start).days + 1,
        "query": query,
        "presets": presets,
        "config": config,
        "snippet": snippet_tag(shop=shop, base_url=request.build_absolute_uri("/")),
        # The navigation's badge: open anomalies of warning or worse.
        "open_alerts": anomalies_open_count(shop_id=shop.pk),
    }
    return context


def _page(request: HttpRequest, page: Page) -> HttpResponse:
    context = page_context(request, page)
    if isinstance(context, HttpResponse):
        return context
    return render(request, f"analytics/{page.name}.html", context)


def _view(page: Page):
    @login_required
    def view(request: HttpRequest) -> HttpResponse:
        return _page(request, page)

    view.__name__ = f"dashboard_{page.name}"
    return view


DASHBOARD_VIEWS = {page.name: _view(page) for page in PAGES if page.in_analytics}


def _demo_send(shop: Shop, journeys) -> dict[str, int]:
    """Ingest journeys in batches, leaving out steps a visit has not reached yet."""
    now = timezone.now()
    stamp = now.isoformat()
    totals = {"visits": 0, "events": 0, "accepted": 0, "duplicates": 0, "rejected": 0}
    pending: list[dict] = []

    def flush() -> None:
        result = events_ingest(shop=shop, events=pending, received_at=now, sent_at=now)
        totals["accepted"] += result.accepted
        totals["duplicates"] += result.duplicates
        totals["rejected"] += len(result.rejected)
        pending.clear()

    for journey in journeys:
        events = [e for e in journey if e["timestamp"] <= stamp]
        totals["visits"] += 1
        totals["events"] += len(events)
        pending.extend(events)
        if len(pending) >= DEMO_BATCH:
            flush()
    if pending:
        flush()
    return totals


def _demo(request: HttpRequest, *, anomalies: bool) -> JsonResponse:
    try:
        shop = shop_get_for_user(
            user=request.user, domain=request.POST.get("shop") or request.GET.get("shop")
        )
    except ApplicationError as error:
        return JsonResponse({"code": error.code, "detail": error.detail}, status=error.status)
    simulator = Simulator(
        shop_domain=shop.domain, seed=secrets.randbits(32), timezone=shop.timezone
    )
    now = timezone.now()
    if anomalies:
        journeys = simulator.anomalies(end=now)
    else:
        journeys = simulator.history(visitors=DEMO_VISITS, days=DEMO_DAYS, end=now)
    return JsonResponse({"shop": shop.domain, "kind": "anomalies" if anomalies else "traffic",
                         **_demo_send(shop, journeys)})  # fmt: skip


def _staff_only(view):
    """JSON 403 rather than a redirect: these are called by the dashboard's buttons."""

    @wraps(view)
    def wrapped(request: HttpRequest) -> JsonResponse:
        if not (request.user.is_authenticated and request.user.is_staff):
            return JsonResponse({"code": "permission_denied", "detail": "Staff only."}, status=403)
        return view(request)

    return wrapped


@require_POST
@_staff_only
def demo_generate_traffic(request: HttpRequest) -> JsonResponse:
    """A week of realistic journeys for the shop (staff only)."""
    return _demo(request, anomalies=False)


@require_POST
@_staff_only
def demo_generate_anomalies(request: HttpRequest) -> JsonResponse:
    """A traffic spike an hour ago, an outsized order and a hyperactive bot (staff only)."""
    return _demo(request, anomalies=True)
