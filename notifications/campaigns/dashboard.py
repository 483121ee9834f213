"""The dashboard's Campaigns page: analytics' page shell (base.html, nav, shop switcher) with the
shop's campaigns, read by `notifications/campaigns.js` from `GET /notifications/campaigns/` and
`GET /notifications/campaigns/<id>/results/` with the session cookie; its Start / Pause / Stop
buttons and **Pause all** post to the campaign API (CSRF token from the page).

Served by notifications, as the Experiments page is: analytics must not import notifications and
only lists the page in its nav (`PAGES`, `in_analytics=False`).
"""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from analytics.dashboard import PAGES, page_context
from events.selectors import shops_owned_by
from notifications.campaigns import results, selectors

PAGE = next(page for page in PAGES if page.name == "campaigns")


@login_required
def campaigns_dashboard(request: HttpRequest) -> HttpResponse:
    """The page shell; the config adds the selected campaign (`?campaign=ID`, else the script
    picks the first), each campaign's headline figures and whether the user may start, pause and
    stop campaigns (an owner of the shop, or a superuser)."""
    context = page_context(request, PAGE)
    if isinstance(context, HttpResponse):
        return context
    shop = context["shop"]
    selected = request.GET.get("campaign", "")
    headlines = results.campaigns_headlines(
        shop=shop, campaigns=selectors.campaigns_list(shop=shop)
    )
    context["config"] |= {
        "campaign": int(selected) if selected.isdigit() else None,
        "headlines": {str(key): value for key, value in headlines.items()},
        # The API's rule (an owner, or a superuser), so no button shown answers 403.
        "canManage": shops_owned_by(user=request.user).filter(pk=shop.pk).exists(),
    }
    return render(request, "notifications/campaigns_dashboard.html", context)
