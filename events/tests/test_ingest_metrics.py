"""Ingestion counts its requests and events in the Prometheus counters, once per request."""

import pytest
from prometheus_client import REGISTRY


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def counts() -> dict[str, float]:
    return {
        "2xx": sample("clickserver_ingest_requests_total", status_class="2xx"),
        "4xx": sample("clickserver_ingest_requests_total", status_class="4xx"),
        "accepted": sample("clickserver_ingest_events_total", outcome="accepted"),
        "duplicate": sample("clickserver_ingest_events_total", outcome="duplicate"),
        "rejected": sample("clickserver_ingest_events_total", outcome="rejected"),
        "missing_identity": sample(
            "clickserver_ingest_rejected_events_total", code="missing_identity"
        ),
        "not_object": sample("clickserver_ingest_rejected_events_total", code="not_object"),
    }


def page_view(event_id: str, **fields) -> dict:
    return {"event_id": event_id, "type": "page_view", "anonymous_id": "anon-1", **fields}


@pytest.mark.django_db
def test_ingestion_counts_accepted_duplicate_and_rejected_events(ingest_client):
    ingest_client.post("/events/", page_view("e-1"))
    before = counts()

    responses = [
        ingest_client.post(
            "/events/",
            {
                "batch": [
                    page_view("e-1"),
                    page_view("e-2"),
                    page_view("e-3"),
                    page_view("e-4", anonymous_id=""),
                    page_view("e-5", anonymous_id=""),
                    "not an event",
                ]
            },
        ),
        ingest_client.post("/events/", page_view("e-6"), headers={"X-Write-Key": "wrong"}),
    ]

    assert [r.status_code for r in responses] == [202, 401]
    assert responses[0].json()["accepted"] == 2
    after = counts()
    assert {name: after[name] - before[name] for name in after} == {
        "2xx": 1.0,
        "4xx": 1.0,
        "accepted": 2.0,
        "duplicate": 1.0,
        "rejected": 3.0,
        "missing_identity": 2.0,
        "not_object": 1.0,
    }
