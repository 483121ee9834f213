"""The ingestion endpoints, served by the lean handler in clickserver/wsgi.py (and the full one).

Only POST views that need no session, user or CSRF belong here; see INGEST_MIDDLEWARE.
"""

from django.urls import path

from events import api

SEGMENT_TYPES = ("track", "identify", "page", "screen", "group", "alias")

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
        for kind in SEGMENT_TYPES
    ],
    # analytics.js posts to the first letter of each path (/v1/t, /v1/p, ...; /v1/b when it
    # batches), as Segment's API accepts.
    path("v1/b", api.SegmentIngestApi.as_ingest_view(), name="segment-b"),
    *[
        path(
            f"v1/{kind[0]}",
            api.SegmentIngestApi.as_ingest_view(forced_type=kind),
            name=f"segment-{kind[0]}",
        )
        for kind in SEGMENT_TYPES
    ],
]
