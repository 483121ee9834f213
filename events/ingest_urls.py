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
    # analytics.js posts to the first letter of each path (/v1/t, /v1/p, ...; /v1/b when it
    # batches), as Segment's API accepts.
    *[
        path(f"v1/{name}", api.SegmentIngestApi.as_ingest_view(), name=f"segment-{name}")
        for name in ("batch", "b")
    ],
    *[
        path(
            f"v1/{name}",
            api.SegmentIngestApi.as_ingest_view(forced_type=kind),
            name=f"segment-{name}",
        )
        for kind in SEGMENT_TYPES
        for name in (kind, kind[0])
    ],
]
