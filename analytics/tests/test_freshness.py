"""Analytics are current once events are processed: by the command, by an eager or a real worker.

`manage.py process_events` and the worker share one list of follow-ups (PIPELINE_FOLLOW_UPS);
nothing here calls a rollup rebuild or waits for beat.
"""

import io
from datetime import timedelta

import orjson
import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from events.follow_ups import follow_ups
from events.tasks import events_process_task
from segments.models import SegmentMembership


def journey(*, visitor: str, order: str | None, at) -> list[dict]:
    """A visit that views a product and, with an order id, buys it."""
    events = [
        {"event_id": f"{visitor}-1", "type": "page_view", "url": "https://shop.example/"},
        {
            "event_id": f"{visitor}-2",
            "type": "product_view",
            "product": {"id": "mug", "name": "Mug", "price": "12.50"},
        },
    ]
    if order:
        events.append(
            {
                "event_id": f"{visitor}-3",
                "type": "purchase",
                "order": {"id": order, "revenue": "25.00", "currency": "USD"},
            }
        )
    for offset, event in enumerate(events):
        event["anonymous_id"] = visitor
        event["timestamp"] = (at + timedelta(minutes=offset)).isoformat()
    return events


def answers(api_client, shop, day) -> tuple:
    query = f"shop={shop.domain}&start={day}&end={day}"
    sessions = api_client.get(f"/analytics/session_count/?{query}").json()
    kpis = api_client.get(f"/analytics/kpis/?{query}").json()
    funnel = api_client.get(
        f"/analytics/funnel/?{query}&steps=page_view,product_view,purchase"
    ).json()
    return (
        sessions["session_count"],
        kpis["orders"],
        kpis["revenue"],
        [step["count"] for step in funnel["steps"]],
    )


@pytest.fixture
def two_visits(shop, ingest_client):
    at = timezone.now().replace(microsecond=0) - timedelta(hours=2)
    batch = journey(visitor="v-1", order="1001", at=at) + journey(visitor="v-2", order=None, at=at)
    response = ingest_client.post("/events/", {"batch": batch})
    assert response.status_code == 202
    return at.date().isoformat()


@pytest.mark.django_db
def test_process_events_leaves_the_analytics_current(
    shop, api_client, two_visits, django_capture_on_commit_callbacks
):
    before = answers(api_client, shop, two_visits)
    out, err = io.StringIO(), io.StringIO()

    with django_capture_on_commit_callbacks(execute=True):
        call_command("process_events", shop=shop.domain, stdout=out, stderr=err)

    assert before == (0, 0, "0.00", [0, 0, 0])
    assert answers(api_client, shop, two_visits) == (2, 1, "25.00", [2, 2, 1])
    summary = orjson.loads(out.getvalue())
    assert (summary["events"], list(summary["follow_ups"])) == (
        5,
        ["rollups", "live scores", "experiments", "campaigns", "segments"],
    )
    progress = err.getvalue()
    for stage in ("rollups", "live scores", "experiments", "campaigns", "segments"):
        assert f"{shop.domain}: {stage} up to date" in progress
    assert SegmentMembership.objects.filter(segment__shop=shop).exists()


@pytest.mark.django_db
def test_process_events_without_follow_ups_leaves_them_to_the_worker(shop, api_client, two_visits):
    out = io.StringIO()

    call_command("process_events", shop=shop.domain, no_follow_ups=True, stdout=out)

    assert "follow_ups" not in orjson.loads(out.getvalue())
    assert answers(api_client, shop, two_visits)[0] == 0


@pytest.mark.django_db
def test_worker_follow_ups_run_in_eager_mode(
    shop, api_client, celery_eager, two_visits, django_capture_on_commit_callbacks
):
    answers(api_client, shop, two_visits)

    with django_capture_on_commit_callbacks(execute=True):
        events_process_task.delay(shop.pk)

    assert answers(api_client, shop, two_visits) == (2, 1, "25.00", [2, 2, 1])


@pytest.mark.django_db
def test_import_with_process_reads_current_analytics(
    shop, api_client, tmp_path, django_capture_on_commit_callbacks
):
    path = tmp_path / "events.jsonl"
    at = timezone.now().replace(microsecond=0) - timedelta(hours=3)
    messages = [
        {
            "type": "track",
            "event": "Order Completed",
            "messageId": "m-1",
            "anonymousId": "a-1",
            "timestamp": at.isoformat(),
            "properties": {"order_id": "2001", "revenue": 40.0, "currency": "USD"},
        }
    ]
    path.write_bytes(b"\n".join(orjson.dumps(message) for message in messages))
    out = io.StringIO()

    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "import_events", str(path), shop=shop.domain, format="segment", process=True,
            stdout=out, stderr=io.StringIO(),
        )  # fmt: skip

    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert (lines[0]["stored"], lines[0]["next"]) == (1, "processing now")
    assert lines[1]["events"] == 1
    kpis = api_client.get(
        f"/analytics/kpis/?shop={shop.domain}&start={at.date()}&end={at.date()}"
    ).json()
    assert (kpis["orders"], kpis["revenue"]) == (1, "40.00")


@pytest.mark.django_db
def test_import_without_process_says_what_to_run_next(shop, tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(orjson.dumps({"type": "page", "messageId": "m-1", "anonymousId": "a-1"}))
    out, err = io.StringIO(), io.StringIO()

    call_command(
        "import_events", str(path), shop=shop.domain, format="segment", stdout=out, stderr=err
    )

    assert orjson.loads(out.getvalue())["next"] == f"manage.py process_events --shop {shop.domain}"
    assert f"Run `manage.py process_events --shop {shop.domain}`" in err.getvalue()


@override_settings(
    PIPELINE_FOLLOW_UPS=[("rollups", "analytics.tasks.rollups_refresh_task", "hourly")]
)
def test_follow_ups_refuse_an_unknown_schedule():
    with pytest.raises(ValueError, match="PIPELINE_FOLLOW_UPS: unknown kind"):
        follow_ups()
