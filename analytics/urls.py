from django.urls import path

from analytics import api

urlpatterns = [
    path("session_count/", api.SessionCountApi.as_view(), name="analytics-session-count"),
    path("user_count/", api.UserCountApi.as_view(), name="analytics-user-count"),
    path("visit_conversion/", api.VisitConversionApi.as_view(), name="analytics-visit-conversion"),
    path("product_visits/", api.ProductVisitsApi.as_view(), name="analytics-product-visits"),
    path("funnel/", api.FunnelApi.as_view(), name="analytics-funnel"),
    path("kpis/", api.KpisApi.as_view(), name="analytics-kpis"),
    path("trends/", api.TrendsApi.as_view(), name="analytics-trends"),
    path("insights/", api.InsightsApi.as_view(), name="analytics-insights"),
    path("products/", api.ProductsApi.as_view(), name="analytics-products"),
    path("abandoned_carts/", api.AbandonedCartsApi.as_view(), name="analytics-abandoned-carts"),
    path("retention/", api.RetentionApi.as_view(), name="analytics-retention"),
    path("geography/", api.GeographyApi.as_view(), name="analytics-geography"),
    path("audience/", api.AudienceApi.as_view(), name="analytics-audience"),
    path("live/", api.LiveApi.as_view(), name="analytics-live"),
    path("reports/", api.ReportListApi.as_view(), name="analytics-reports"),
    path("reports/preview/", api.ReportPreviewApi.as_view(), name="analytics-report-preview"),
    path("reports/<int:report_id>/", api.ReportDetailApi.as_view(), name="analytics-report"),
]
urlpatterns += [
    path("anomalies/", api.AnomalyListApi.as_view(), name="analytics-anomalies"),
    path(
        "anomalies/<int:anomaly_id>/chart/",
        api.AnomalyChartApi.as_view(),
        name="analytics-anomaly-chart",
    ),
    path(
        "anomalies/<int:anomaly_id>/acknowledge/",
        api.AnomalyAcknowledgeApi.as_view(),
        name="analytics-anomaly-acknowledge",
    ),
    path(
        "anomalies/<int:anomaly_id>/resolve/",
        api.AnomalyResolveApi.as_view(),
        name="analytics-anomaly-resolve",
    ),
    path(
        "detection_settings/",
        api.DetectionSettingsApi.as_view(),
        name="analytics-detection-settings",
    ),
    path("alert_rules/", api.AlertRuleListApi.as_view(), name="analytics-alert-rules"),
    path(
        "alert_rules/<int:rule_id>/",
        api.AlertRuleDetailApi.as_view(),
        name="analytics-alert-rule",
    ),
    path(
        "alert_deliveries/",
        api.AlertDeliveryListApi.as_view(),
        name="analytics-alert-deliveries",
    ),
]
