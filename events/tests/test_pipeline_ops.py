import gc
import io
import zoneinfo
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse

from clickserver.sql import Literals
from events import selectors
from events.models import Event, IdentifierKind, PipelineJob, PipelineWatermark, Session
from events.services.ingest import events_insert
from events.services.pipeline import events_process
from events.sql import events_fetch
from events.tasks import events_process_task
from events.tests.factories import event_in

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
RECEIVED = datetime(2026, 1, 6, tzinfo=UTC)


def insert(shop, count: int) -> None:
    events_insert(
        shop_id=shop.pk,
        events=[
            event_in(f"e{index}", T0 + timedelta(minutes=index), anonymous_id=f"a{index % 3}")
            for index in range(count)
        ],
        received_at=RECEIVED,
    )


@pytest.mark.django_db
def test_process_events_command_catches_up_and_summarises(shop):
    insert(shop, 12)
    out = io.StringIO()

    call_command("process_events", shop=shop.domain, batch_size=5, stdout=out)

    summary = orjson.loads(out.getvalue())
    assert {key: summary[key] for key in ("events", "persons", "sessions", "persons_created")} == {
        "events": 12,
        "persons": 3,
        "sessions": 3,
        "persons_created": 3,
    }
    assert selectors.shop_backlog(shop_id=shop.pk).events == 0


@pytest.mark.django_db
def test_backlog_counts_pending_events_and_the_oldest(shop, process_all):
    insert(shop, 4)
    process_all(shop)
    events_insert(
        shop_id=shop.pk, events=[event_in("late", T0)], received_at=RECEIVED + timedelta(hours=1)
    )

    backlog = selectors.processing_backlog()

    assert backlog.events == 1
    assert backlog.oldest_unprocessed_at == RECEIVED + timedelta(hours=1)
    assert backlog.is_capped is False


@pytest.mark.django_db
def test_backlog_count_is_capped(shop, monkeypatch):
    monkeypatch.setattr(selectors, "BACKLOG_COUNT_CAP", 3)
    insert(shop, 5)

    backlog = selectors.shop_backlog(shop_id=shop.pk)

    assert (backlog.events, backlog.is_capped) == (3, True)


@pytest.mark.django_db
def test_admin_shows_backlog_and_person_graph(admin_client, shop, process_all, settings):
    # The manifest storage needs collectstatic; the admin pages only need some static URL.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    insert(shop, 3)
    process_all(shop)
    insert_more = event_in("pending", T0, anonymous_id="a0")
    events_insert(shop_id=shop.pk, events=[insert_more], received_at=RECEIVED)
    watermark = PipelineWatermark.objects.get(job=PipelineJob.EVENTS, shop=shop)

    watermarks = admin_client.get(reverse("admin:events_pipelinewatermark_changelist"))
    persons = admin_client.get(reverse("admin:events_person_changelist") + "?q=a1")
    person_id = persons.context["cl"].result_list[0].pk
    person = admin_client.get(reverse("admin:events_person_change", args=[person_id]))
    sessions = admin_client.get(
        reverse("admin:events_session_changelist") + f"?person__id__exact={person_id}"
    )

    assert watermarks.status_code == 200
    assert watermark.get_job_display() in watermarks.text
    assert '<td class="field-pending_events">1</td>' in watermarks.text
    assert persons.context["cl"].result_count == 1
    assert person.status_code == 200
    assert "anonymous_id" in person.text
    assert sessions.status_code == 200
    assert sessions.context["cl"].result_count == 1


@pytest.mark.django_db
def test_process_task_runs_the_pipeline_and_chains_while_a_backlog_remains(
    shop, settings, celery_eager
):
    settings.PIPELINE_BATCH_SIZE = 5
    insert(shop, 12)

    processed = events_process_task.apply(args=[shop.pk]).get()

    assert processed == 5
    assert selectors.shop_backlog(shop_id=shop.pk).events == 0
    assert Session.objects.filter(shop=shop).count() == 3


@pytest.mark.django_db
def test_batches_are_cut_by_id_leave_unsettled_events_and_keep_gc_enabled(shop, settings):
    settings.PIPELINE_SETTLE_SECONDS = 2
    insert(shop, 3)
    events_insert(
        shop_id=shop.pk, events=[event_in("fresh", T0)], received_at=RECEIVED + timedelta(hours=1)
    )

    first = events_process(shop_id=shop.pk, now=RECEIVED + timedelta(seconds=3), batch_size=2)
    second = events_process(shop_id=shop.pk, now=RECEIVED + timedelta(seconds=3), batch_size=2)

    assert (first.processed, first.has_more, second.processed, second.has_more) == (
        2,
        True,
        1,
        False,
    )
    assert selectors.shop_backlog(shop_id=shop.pk).events == 1
    assert gc.isenabled()


@pytest.mark.django_db
def test_multi_row_literals_match_the_value_by_value_ones():
    if connection.vendor != "mysql":
        pytest.skip("literals are inlined on MariaDB only")
    connection.ensure_connection()
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    rows = [
        (1, "it's", T0, T0.astimezone(berlin), None, True, Decimal("49.90"), {"a": "b'c"}),
        (2, "it's", T0 + timedelta(microseconds=5), T0, 7, False, Decimal("0"), {}),
        # A str subclass (a TextChoices member) reads as its value.
        (3, IdentifierKind.USER_ID, T0, T0, None, True, Decimal("12.5"), {}),
    ]
    literal = Literals()
    by_value = ", ".join("(" + ", ".join(map(literal, row)) + ")" for row in rows)

    by_column = Literals().rows(rows)

    assert by_column == by_value
    assert by_column.startswith("(1, 'it\\'s', '2026-01-05 12:00:00', '2026-01-05 12:00:00', NULL")


@pytest.mark.django_db
def test_inserted_events_keep_every_value_column_by_column(shop):
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    events = [
        event_in("a", RECEIVED, product_price=Decimal("49.90"), product_quantity=2),
        event_in("b", RECEIVED + timedelta(microseconds=5), ip="203.0.113.0"),
        # The same instant as "a" in another zone; a shared received_at; a dict of properties.
        event_in("c", RECEIVED.astimezone(berlin), revenue=Decimal("-0.50"), properties={"k": 1}),
    ]

    inserted = events_insert(shop_id=shop.pk, events=events, received_at=RECEIVED)

    assert inserted == 3
    stored = Event.objects.filter(shop=shop).order_by("event_id")
    assert [
        (e.occurred_at, e.received_at, e.product_price, e.product_quantity, e.revenue, e.ip)
        for e in stored
    ] == [
        (RECEIVED, RECEIVED, Decimal("49.90"), 2, None, None),
        (RECEIVED + timedelta(microseconds=5), RECEIVED, None, None, None, "203.0.113.0"),
        (RECEIVED, RECEIVED, None, None, Decimal("-0.50"), None),
    ]
    assert [e.properties for e in stored] == [{}, {}, {"k": 1}]


@pytest.mark.django_db
def test_event_rows_read_occurred_at_as_aware_utc(shop):
    events_insert(
        shop_id=shop.pk,
        events=[event_in("a", T0), event_in("b", T0 + timedelta(microseconds=250))],
        received_at=RECEIVED,
    )

    rows = events_fetch("shop_id = %s", [shop.pk], columns=("id", "occurred_at", "type"))

    assert [row[1] for row in rows] == [T0, T0 + timedelta(microseconds=250)]
    assert {row[1].tzinfo for row in rows} == {UTC}
