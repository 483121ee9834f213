"""Issue #15, finding 2: an insert that commits after the watermark passed its ids is processed.

Two real MariaDB connections: a thread holds an insert uncommitted (as an import chunk or the
rejected-rows transaction can) across a pipeline run on the main connection.
"""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction

from events import selectors
from events.models import Event, PipelineJob, PipelineWatermark
from events.services.ingest import events_insert
from events.tests.factories import event_in

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
RECEIVED = datetime(2026, 1, 6, tzinfo=UTC)
NOW = datetime(2100, 1, 1, tzinfo=UTC)


def unassigned(shop) -> list[str]:
    return sorted(
        Event.objects.filter(shop=shop, person__isnull=True).values_list("event_id", flat=True)
    )


@pytest.fixture
def slow_insert(shop):
    """Insert event "slow" in a transaction held open until `release` is set."""
    inserted = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            with transaction.atomic():
                events_insert(
                    shop_id=shop.pk,
                    events=[event_in("slow", T0, anonymous_id="slow-visitor")],
                    received_at=RECEIVED,
                )
                inserted.set()
                release.wait(timeout=30)
        except BaseException as error:  # re-raised in the test's thread
            errors.append(error)
            inserted.set()
        finally:
            connection.close()

    thread = threading.Thread(target=hold)
    thread.start()
    assert inserted.wait(timeout=30)

    def commit() -> None:
        release.set()
        thread.join(timeout=30)
        if errors:
            raise errors[0]

    yield commit
    release.set()
    thread.join(timeout=30)


def test_an_insert_committed_after_the_watermark_passed_its_ids_is_processed(
    shop, slow_insert, process_all
):
    events_insert(
        shop_id=shop.pk, events=[event_in("fast", T0 + timedelta(minutes=1))], received_at=RECEIVED
    )
    process_all(shop)
    slow_id_below = PipelineWatermark.objects.get(job=PipelineJob.EVENTS, shop=shop).position
    assert unassigned(shop) == []  # "slow" is not visible yet

    slow_insert()
    assert Event.objects.get(shop=shop, event_id="slow").pk < slow_id_below
    assert selectors.shops_with_backlog(settled_before=NOW) == [shop.pk]
    assert selectors.shop_backlog(shop_id=shop.pk).events == 1
    processed = process_all(shop)

    assert processed == 1
    assert unassigned(shop) == []
    assert selectors.shops_with_backlog(settled_before=NOW) == []
    assert selectors.shop_backlog(shop_id=shop.pk).events == 0
