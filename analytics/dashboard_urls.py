from django.contrib.auth import views as auth_views
from django.urls import path

from analytics import dashboard
from clickserver.throttles import login_rate_limited

urlpatterns = [
    *[
        path(
            page.path.lstrip("/"),
            dashboard.DASHBOARD_VIEWS[page.name],
            name=f"dashboard-{page.name}",
        )
        for page in dashboard.PAGES
        if page.in_analytics
    ],
    path("demo/generate-traffic/", dashboard.demo_generate_traffic, name="demo-generate-traffic"),
    path(
        "demo/generate-anomalies/",
        dashboard.demo_generate_anomalies,
        name="demo-generate-anomalies",
    ),
    path(
        "accounts/login/",
        login_rate_limited(auth_views.LoginView.as_view(redirect_authenticated_user=True)),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
]
