"""The dashboard's Model page: analytics' page shell with the conversion model's active
version, its card and the daily monitoring history, read by `notifications/model.js` from
`GET /notifications/model/health/` with the session cookie. Served here because analytics must
not import notifications; analytics lists it in `PAGES` (`in_analytics=False`)."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from analytics.dashboard import PAGES, page_context

PAGE = next(page for page in PAGES if page.name == "model")


@login_required
def model_dashboard(request: HttpRequest) -> HttpResponse:
    context = page_context(request, PAGE)
    if isinstance(context, HttpResponse):
        return context
    return render(request, "notifications/model_dashboard.html", context)
