from csp.constants import SELF, UNSAFE_INLINE
from csp.decorators import csp_update
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from clickserver.health import HealthApi, MetricsView, ReadinessApi
from clickserver.throttles import login_rate_limited

handler404 = "clickserver.api.not_found"

# The split view serves its start-up script as a file, so script-src stays 'self'; Swagger UI
# styles its elements inline, so this page alone allows inline styles.
api_docs = csp_update({"style-src": [SELF, UNSAFE_INLINE]})(
    SpectacularSwaggerSplitView.as_view(url_name="schema")
)

urlpatterns = [
    # Before admin.site.urls, so that the admin's own login view is reached only through it.
    path("admin/login/", login_rate_limited(admin.site.login), name="admin-login"),
    path("admin/", admin.site.urls),
    path("health/", HealthApi.as_view(), name="health"),
    path("health/ready/", ReadinessApi.as_view(), name="health-ready"),
    path("metrics", MetricsView.as_view(), name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", api_docs, name="docs"),
    path("analytics/", include("analytics.urls")),
    path("segments/", include("segments.urls")),
    path("api/", include("recommendations.urls")),
    path("", include("events.urls")),
    path("", include("notifications.urls")),
    path("", include("analytics.dashboard_urls")),
]
