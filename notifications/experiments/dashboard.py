"""The dashboard's Experiments page: analytics' page shell (base.html, nav, shop switcher) with
the shop's experiments, read by `notifications/experiments.js` from `GET /experiments/` and
`GET /experiments/<id>/results/` with the session cookie.

It lives here rather than in analytics/dashboard.py because analytics must not import
notifications; analytics only lists the page in its nav (`PAGES`, `in_analytics=False`).
"""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from analytics.dashboard import PAGES, page_context
from notifications.experiments import selectors

PAGE = next(page for page in PAGES if page.name == "experiments")


@login_required
def experiments_dashboard(request: HttpRequest) -> HttpResponse:
    """The page shell; the config adds the selected experiment (`?experiment=ID`, else the
    script picks the first) and each experiment's headline from its stored result."""
    context = page_context(request, PAGE)
    if isinstance(context, HttpResponse):
        return context
    selected = request.GET.get("experiment", "")
    headlines = selectors.experiments_headlines(shop=context["shop"])
    context["config"] |= {
        "experiment": int(selected) if selected.isdigit() else None,
        "headlines": {str(key): value for key, value in headlines.items()},
    }
    return render(request, "notifications/experiments_dashboard.html", context)
