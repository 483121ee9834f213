from django.urls import include, path

from events import api

urlpatterns = [
    path("events/erasures/", api.ErasureListApi.as_view(), name="erasures"),
    path("", include("events.ingest_urls")),
    path(
        "events/shopify_webhook_purchase/",
        api.ShopifyWebhookApi.as_view(default_topic="orders/create"),
        name="events-shopify-webhook-purchase",
    ),
    path("webhooks/shopify/", api.ShopifyWebhookApi.as_view(), name="shopify-webhooks"),
    path("snippet/<str:write_key>.js", api.SnippetView.as_view(), name="snippet"),
    path(
        "v1/projects/<str:write_key>/settings",
        api.SegmentSettingsView.as_view(),
        name="segment-settings",
    ),
    # RudderStack's JavaScript SDK appends /sourceConfig/ to its `configUrl` load option.
    path("sourceConfig/", api.RudderSourceConfigView.as_view(), name="rudderstack-source-config"),
]
