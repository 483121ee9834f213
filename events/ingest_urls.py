"""The ingestion endpoints, served by the lean handler in clickserver/wsgi.py (and the full one).

Only POST views that need no session, user or CSRF belong here; see INGEST_MIDDLEWARE.
"""

from django.urls import path

from events import api

urlpatterns = [
    path("events/", api.EventIngestApi.as_ingest_view(), name="events-ingest"),
    path("events/purchase/", api.PurchaseIngestApi.as_ingest_view(), name="events-purchase"),
    path("events/add_cart/", api.AddCartIngestApi.as_ingest_view(), name="events-add-cart"),
    path("v1/batch", api.SegmentIngestApi.as_ingest_view(), name="segment-batch"),
    *[
        path(
            f"v1/{kind}",
            api.SegmentIngestApi.as_ingest_view(forced_type=kind),
            name=f"segment-{kind}",
        )
        for kind in ("track", "identify", "page", "screen", "group", "alias")
    ],
]
