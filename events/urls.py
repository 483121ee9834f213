from django.urls import path

from events import api

urlpatterns = [
    path("events/", api.EventIngestApi.as_view(), name="events-ingest"),
    path("events/purchase/", api.PurchaseIngestApi.as_view(), name="events-purchase"),
    path("events/add_cart/", api.AddCartIngestApi.as_view(), name="events-add-cart"),
    path(
        "events/shopify_webhook_purchase/",
        api.ShopifyWebhookApi.as_view(default_topic="orders/create"),
        name="events-shopify-webhook-purchase",
    ),
    path("webhooks/shopify/", api.ShopifyWebhookApi.as_view(), name="shopify-webhooks"),
    path("snippet/<str:write_key>.js", api.SnippetView.as_view(), name="snippet"),
    path("v1/batch", api.SegmentIngestApi.as_view(), name="segment-batch"),
    *[
        path(
            f"v1/{kind}",
            api.SegmentIngestApi.as_view(segment_type=kind),
            name=f"segment-{kind}",
        )
        for kind in ("track", "identify", "page", "screen", "group", "alias")
    ],
]
