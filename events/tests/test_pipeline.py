import random
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction

from events.models import (
    Event,
    Order,
    OrderLine,
    Person,
    PersonIdentifier,
    Refund,
    RefundLine,
    Session,
)
from events.segment import segment_to_event
from events.services.ingest import events_ingest, events_insert
from events.services.pipeline import events_process
from events.services.sessions import sessions_rebuild
from events.tests.factories import ShopFactory, event_in

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
RECEIVED = datetime(2026, 1, 6, tzinfo=UTC)


def minutes(value: float) -> datetime:
    return T0 + timedelta(minutes=value)


def insert(shop, *events) -> None:
    events_insert(shop_id=shop.pk, events=list(events), received_at=RECEIVED)


def session_snapshot(shop) -> list[tuple]:
    """Sessions as comparable values: who, when, what, and exactly which events."""
    events_by_session: dict[int, list[str]] = {}
    for session_id, event_id in Event.objects.filter(shop=shop).values_list(
        "session_id", "event_id"
    ):
        events_by_session.setdefault(session_id, []).append(event_id)
    return sorted(
        (
            s.person.user_id,
            s.started_at,
            s.ended_at,
            s.event_count,
            s.is_converted,
            s.revenue,
            s.is_bounce,
            tuple(sorted(events_by_session[s.pk])),
        )
        for s in Session.objects.filter(shop=shop).select_related("person")
    )


@pytest.mark.django_db
def test_processing_assigns_sessions_and_persons(shop, process_all):
    insert(
        shop,
        event_in("e1", minutes(0), url="https://s.example/", utm_source="google"),
        event_in("e2", minutes(10), type="purchase", revenue=Decimal("20.00")),
        event_in("e3", minutes(41)),
    )

    processed = process_all(shop)

    assert processed == 3
    person = Person.objects.get(shop=shop)
    first, second = Session.objects.filter(shop=shop).order_by("started_at")
    assert (first.event_count, first.is_converted, first.revenue) == (2, True, Decimal("20.00"))
    assert (first.entry_url, first.utm_source, first.is_bounce) == (
        "https://s.example/",
        "google",
        False,
    )
    assert (second.event_count, second.is_converted, second.is_bounce) == (1, False, True)
    assert Event.objects.filter(shop=shop, person=person).count() == 3
    assert list(Event.objects.filter(shop=shop).order_by("event_id").values_list("session_id")) == [
        (first.pk,),
        (first.pk,),
        (second.pk,),
    ]
    assert (person.first_seen_at, person.last_seen_at) == (minutes(0), minutes(41))


@pytest.mark.django_db
def test_session_timeout_is_per_shop(process_all):
    strict = ShopFactory(session_timeout_minutes=10)
    relaxed = ShopFactory(session_timeout_minutes=30)
    for shop in (strict, relaxed):
        insert(shop, event_in("a", minutes(0)), event_in("b", minutes(20)))

    process_all(strict)
    process_all(relaxed)

    assert Session.objects.filter(shop=strict).count() == 2
    assert Session.objects.filter(shop=relaxed).count() == 1


@pytest.mark.django_db
def test_rerunning_processing_is_a_no_op(shop, process_all):
    insert(shop, event_in("a", minutes(0)), event_in("b", minutes(5)))
    process_all(shop)
    before = session_snapshot(shop)
    session_ids = set(Session.objects.values_list("id", flat=True))

    processed = process_all(shop)

    assert processed == 0
    assert session_snapshot(shop) == before
    assert set(Session.objects.values_list("id", flat=True)) == session_ids
    assert Person.objects.filter(shop=shop).count() == 1


@pytest.mark.django_db
def test_late_event_bridges_two_sessions_into_one(shop, process_all):
    insert(shop, event_in("a", minutes(0)), event_in("c", minutes(50)))
    process_all(shop)
    assert Session.objects.filter(shop=shop).count() == 2

    insert(shop, event_in("b", minutes(25)))
    process_all(shop)

    [session] = Session.objects.filter(shop=shop)
    assert (session.started_at, session.ended_at, session.event_count) == (
        minutes(0),
        minutes(50),
        3,
    )
    assert session_snapshot(shop) == _rebuilt(shop)


@pytest.mark.django_db
def test_late_event_splits_a_session_at_the_24_hour_cap(shop, process_all):
    # Events every 25 minutes for 23.75 h form one session; a late event before them pushes the
    # start back, so the 24 h cap now cuts the tail off into a session of its own.
    insert(shop, *(event_in(f"e{step:03}", minutes(60 + 25 * step)) for step in range(58)))
    process_all(shop)
    assert Session.objects.filter(shop=shop).count() == 1

    insert(shop, event_in("late", minutes(40)))
    process_all(shop)

    counts = list(
        Session.objects.filter(shop=shop)
        .order_by("started_at")
        .values_list("event_count", flat=True)
    )
    assert counts == [58, 1]
    assert session_snapshot(shop) == _rebuilt(shop)


@pytest.mark.django_db
def test_incremental_batches_equal_one_full_recompute(shop, process_all):
    # Out-of-order arrival across many small batches, two people, purchases in between.
    offsets = [300, 0, 45, 10, 1500, 31, 1460, 75, 2900, 1470, 2930, 20, 61, 3000, 1490]
    events = [
        event_in(
            f"e{index:02}",
            minutes(offset),
            anonymous_id=f"anon-{index % 2}",
            type="purchase" if index % 5 == 0 else "page_view",
            revenue=Decimal("10.00") if index % 5 == 0 else None,
        )
        for index, offset in enumerate(offsets)
    ]
    for event in events:
        insert(shop, event)
        process_all(shop, batch_size=2)
    incremental = session_snapshot(shop)

    rebuilt = _rebuilt(shop)

    assert incremental == rebuilt
    assert len(incremental) == 8


def _rebuilt(shop) -> list[tuple]:
    sessions_rebuild(shop_id=shop.pk)
    return session_snapshot(shop)


@pytest.mark.django_db
def test_anonymous_browsing_identify_and_second_device_are_one_person(shop, process_all):
    insert(
        shop,
        event_in("laptop-1", minutes(0), anonymous_id="laptop"),
        event_in("laptop-2", minutes(5), anonymous_id="laptop"),
        event_in("phone-1", minutes(8), anonymous_id="phone"),
    )
    process_all(shop)
    assert Person.objects.filter(shop=shop).count() == 2

    insert(
        shop,
        event_in(
            "identify-laptop", minutes(6), anonymous_id="laptop", user_id="ann", type="identify"
        ),
        event_in("phone-login", minutes(9), anonymous_id="phone", user_id="ann", type="identify"),
    )
    process_all(shop)

    [person] = Person.objects.filter(shop=shop)
    assert person.user_id == "ann"
    assert sorted(
        PersonIdentifier.objects.filter(shop=shop).values_list("kind", "value", "person_id")
    ) == [
        ("anonymous_id", "laptop", person.pk),
        ("anonymous_id", "phone", person.pk),
        ("user_id", "ann", person.pk),
    ]
    assert set(Event.objects.filter(shop=shop).values_list("person_id", flat=True)) == {person.pk}
    [session] = Session.objects.filter(shop=shop)
    assert (session.person_id, session.event_count) == (person.pk, 5)


@pytest.mark.django_db
def test_two_user_ids_are_never_merged(shop, process_all):
    insert(
        shop,
        event_in("a", minutes(0), anonymous_id="shared-tablet", user_id="ann"),
        event_in("b", minutes(5), anonymous_id="shared-tablet", user_id="bob"),
        event_in("c", minutes(6), anonymous_id="shared-tablet"),
    )

    process_all(shop)

    ann, bob = Person.objects.filter(shop=shop).order_by("user_id")
    assert (ann.user_id, bob.user_id) == ("ann", "bob")
    assert dict(Event.objects.filter(shop=shop).values_list("event_id", "person_id")) == {
        "a": ann.pk,
        "b": bob.pk,
        "c": ann.pk,
    }


@pytest.mark.django_db
def test_two_user_ids_are_never_merged_through_an_email(shop, process_all):
    insert(
        shop,
        event_in("a", minutes(0), anonymous_id="x", user_id="ann", properties={"email_hash": "h"}),
        event_in("b", minutes(1), anonymous_id="y", user_id="bob", properties={"email_hash": "h"}),
    )

    process_all(shop)

    assert sorted(Person.objects.filter(shop=shop).values_list("user_id", flat=True)) == [
        "ann",
        "bob",
    ]


@pytest.mark.django_db
def test_junk_ids_never_join_people(shop, process_all):
    insert(
        shop,
        event_in("a", minutes(0), anonymous_id="a-1", user_id="undefined"),
        event_in("b", minutes(1), anonymous_id="a-2", user_id="undefined"),
        event_in("c", minutes(2), anonymous_id="a-3", user_id="null"),
    )

    process_all(shop)

    assert Person.objects.filter(shop=shop).count() == 3
    assert not PersonIdentifier.objects.filter(shop=shop, kind="user_id").exists()


@pytest.mark.django_db
def test_alias_links_previous_id_to_the_user(shop, process_all):
    insert(
        shop,
        event_in("a", minutes(0), anonymous_id="old-anon"),
        event_in("b", minutes(100), anonymous_id="", user_id="ann"),
    )
    process_all(shop)

    insert(
        shop,
        event_in(
            "c",
            minutes(101),
            anonymous_id="",
            user_id="ann",
            type="alias",
            properties={"previous_id": "old-anon"},
        ),
    )
    process_all(shop)

    [person] = Person.objects.filter(shop=shop)
    assert person.user_id == "ann"
    assert Session.objects.filter(shop=shop, person=person).count() == 2


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_workers_give_the_same_result_as_one(mysql_only):
    def arrange(shop):
        events = []
        for person in range(40):
            for step in range(30):
                events.append(
                    event_in(
                        f"{person}-{step}",
                        minutes(step * 7 + person + (60 if step % 9 == 0 else 0)),
                        anonymous_id=f"anon-{person}",
                        user_id=f"user-{person // 2}" if step == 15 else "",
                    )
                )
        insert(shop, *events)

    single, double = ShopFactory(), ShopFactory()
    arrange(single)
    arrange(double)
    now = datetime(2100, 1, 1, tzinfo=UTC)

    while events_process(shop_id=single.pk, now=now, batch_size=100).has_more:
        pass

    def worker():
        try:
            while events_process(shop_id=double.pk, now=now, batch_size=100).has_more:
                pass
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert session_snapshot(double) == session_snapshot(single)
    assert Person.objects.filter(shop=double).count() == 20
    assert not Event.objects.filter(shop=double, session__isnull=True).exists()


@pytest.mark.django_db(transaction=True)
def test_a_shop_batch_never_waits_on_another_shops_locked_events(mysql_only):
    shop, other = ShopFactory(), ShopFactory()
    for step in range(50):
        insert(shop, event_in(f"a{step}", minutes(step), anonymous_id="ann"))
        insert(other, event_in(f"b{step}", minutes(step), anonymous_id="bob"))
    locked, release = threading.Event(), threading.Event()

    def other_worker():
        # Holds a row lock on one of the other shop's events, as its worker does mid-batch.
        try:
            with transaction.atomic():
                Event.objects.filter(shop=other, event_id="b25").update(title="busy")
                locked.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    thread = threading.Thread(target=other_worker)
    thread.start()
    locked.wait(timeout=30)
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION innodb_lock_wait_timeout = 1")
    try:
        result = events_process(
            shop_id=shop.pk, now=datetime(2100, 1, 1, tzinfo=UTC), batch_size=1000
        )
    finally:
        release.set()
        thread.join()
        with connection.cursor() as cursor:
            cursor.execute("SET SESSION innodb_lock_wait_timeout = DEFAULT")

    assert result.processed == 50
    assert not Event.objects.filter(shop=shop, session__isnull=True).exists()
    assert Event.objects.filter(shop=other, session__isnull=False).count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_worker_run_finding_the_batch_taken_leaves_a_request_and_returns(
    mysql_only, settings, monkeypatch
):
    """The worker's task does not queue behind the shop's batch lock: it asks the holder for
    another run and returns; the holder, once done, takes the request and sends that run."""
    from django.core.cache import cache

    from events import tasks
    from events.models import PipelineJob, PipelineWatermark
    from events.services.pipeline import events_process_again_take

    settings.PIPELINE_SETTLE_SECONDS = 0
    shop = ShopFactory()
    insert(shop, *[event_in(f"e{step}", minutes(step), anonymous_id="ann") for step in range(5)])
    PipelineWatermark.objects.get_or_create(job=PipelineJob.EVENTS, shop_id=shop.pk)
    cache.delete(f"events:process-again:{shop.pk}")
    sent: list[int] = []
    monkeypatch.setattr(tasks.events_process_task, "delay", sent.append)
    locked, release = threading.Event(), threading.Event()

    def holder():
        # Holds the shop's batch, as a worker does mid-batch.
        try:
            with transaction.atomic():
                PipelineWatermark.objects.select_for_update().get(
                    job=PipelineJob.EVENTS, shop_id=shop.pk
                )
                locked.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    thread = threading.Thread(target=holder)
    thread.start()
    locked.wait(timeout=30)
    try:
        started = time.monotonic()
        processed = tasks.events_process_task.apply(args=[shop.pk], throw=True).result
        waited = time.monotonic() - started
    finally:
        release.set()
        thread.join()

    assert processed == 0
    assert waited < 5  # not innodb_lock_wait_timeout (50 s)
    assert sent == []
    assert not Event.objects.filter(shop=shop, session__isnull=False).exists()
    # The holder's next step (events_process_task after its batch) finds the request.
    assert tasks.events_process_task.apply(args=[shop.pk], throw=True).result == 5
    assert sent == [shop.pk]
    assert events_process_again_take(shop_id=shop.pk) is False


@pytest.mark.django_db
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_late_arrivals_and_merges_equal_a_full_recompute(shop, process_all, seed):
    rng = random.Random(seed)
    events = [
        event_in(
            f"e{index:03}",
            minutes(rng.choice([0, 400, 1400]) + rng.randrange(0, 1500)),
            anonymous_id=f"anon-{rng.randrange(8)}",
            # Some sign-ins join two browsers to one user: identity merges mid-stream.
            user_id=f"user-{rng.randrange(3)}" if rng.random() < 0.08 else "",
            type="purchase" if rng.random() < 0.1 else "page_view",
        )
        for index in range(150)
    ]
    rng.shuffle(events)
    while events:
        size = rng.randrange(1, 25)
        chunk, events = events[:size], events[size:]
        insert(shop, *chunk)
        process_all(shop, batch_size=rng.randrange(1, 30))
    incremental = session_snapshot(shop)

    rebuilt = _rebuilt(shop)

    assert incremental == rebuilt
    assert not Event.objects.filter(shop=shop, session__isnull=True).exists()
    assert sum(row[3] for row in rebuilt) == Event.objects.filter(shop=shop).count() == 150


@pytest.mark.django_db
def test_written_text_keeps_quotes_backslashes_percent_signs_and_emoji(shop, process_all):
    url = "https://s.example/it's\\a%s%%(x)s\"?q=é😀\n"
    insert(
        shop,
        event_in("e1", minutes(0), url=url, referrer="O'Reilly\\", utm_campaign="50% off 'now'"),
        event_in(
            "e2",
            minutes(1),
            type="identify",
            user_id="o'brien\\",
            properties={"traits": {"name": 'Ann "A" O\'Neil\\😀', "tags": ["a'b", 1.5]}},
        ),
    )

    process_all(shop)

    session = Session.objects.get(shop=shop)
    assert (session.entry_url, session.referrer, session.utm_campaign) == (
        url,
        "O'Reilly\\",
        "50% off 'now'",
    )
    person = Person.objects.get(shop=shop)
    assert person.user_id == "o'brien\\"
    assert person.traits == {"name": 'Ann "A" O\'Neil\\😀', "tags": ["a'b", 1.5]}
    assert PersonIdentifier.objects.filter(person=person, value="o'brien\\").exists()


@pytest.mark.django_db
def test_purchase_events_become_orders_once(shop, process_all):
    at = "2026-03-01T10:00:00+00:00"
    events_ingest(
        shop=shop,
        received_at=datetime(2026, 3, 1, 12, tzinfo=UTC),
        events=[
            {"event_id": "p1", "type": "purchase", "anonymous_id": "a", "timestamp": at,
             "order": {"id": "1001", "revenue": "30.00", "currency": "EUR"}},
            {"event_id": "p2", "type": "purchase", "anonymous_id": "a", "timestamp": at,
             "order": {"id": "1001", "revenue": "30.00"}},
            {"event_id": "p3", "type": "purchase", "user_id": "u9", "timestamp": at,
             "order": {"revenue": "12.5"}},
            {"event_id": "v1", "type": "page_view", "anonymous_id": "a", "timestamp": at},
        ],
    )  # fmt: skip

    process_all(shop)
    process_all(shop)

    orders = {o.order_id: o for o in Order.objects.filter(shop=shop)}
    assert set(orders) == {"1001", "event:p3"}
    assert (orders["1001"].total, orders["1001"].currency, orders["1001"].source) == (
        Decimal("30.00"), "EUR", "api",
    )  # fmt: skip
    assert orders["event:p3"].total == Decimal("12.50")
    assert orders["event:p3"].currency == shop.currency
    assert orders["1001"].person_id == Event.objects.get(event_id="p1").person_id


@pytest.mark.django_db
def test_a_purchase_naming_a_product_gives_its_order_that_line(shop, process_all):
    at = "2026-03-01T10:00:00+00:00"
    events_ingest(
        shop=shop,
        received_at=datetime(2026, 3, 1, 12, tzinfo=UTC),
        events=[
            {"event_id": "p1", "type": "purchase", "anonymous_id": "a", "timestamp": at,
             "order": {"id": "2001", "revenue": "24.00"},
             "product": {"id": "tea-1", "name": "Sencha", "price": "8.00", "quantity": 3}},
            {"event_id": "p2", "type": "purchase", "anonymous_id": "a", "timestamp": at,
             "order": {"id": "2001", "revenue": "24.00"},
             "product": {"id": "tea-1", "name": "Sencha", "price": "8.00", "quantity": 3}},
            {"event_id": "p3", "type": "purchase", "anonymous_id": "b", "timestamp": at,
             "order": {"id": "2002", "revenue": "10.00"}, "product": {"id": "mug"}},
            {"event_id": "p4", "type": "purchase", "anonymous_id": "c", "timestamp": at,
             "order": {"id": "2003", "revenue": "5.00"}},
        ],
    )  # fmt: skip

    process_all(shop)
    process_all(shop)

    lines = sorted(
        OrderLine.objects.filter(order__shop=shop).values_list(
            "order__order_id", "product_id", "name", "quantity", "unit_price"
        )
    )
    # A repeated purchase event adds no second line; without a price the order's revenue over
    # the quantity; an order whose event names no product has no line.
    assert lines == [
        ("2001", "tea-1", "Sencha", 3, Decimal("8.00")),
        ("2002", "mug", "", 1, Decimal("10.00")),
    ]


@pytest.mark.django_db
def test_refund_events_become_refunds_with_lines_once(shop, process_all):
    at, later = "2026-03-01T10:00:00+00:00", "2026-03-03T09:00:00+00:00"
    result = events_ingest(
        shop=shop,
        received_at=datetime(2026, 3, 3, 12, tzinfo=UTC),
        events=[
            {"event_id": "p1", "type": "purchase", "anonymous_id": "a", "timestamp": at,
             "order": {"id": "3001", "revenue": "40.00"},
             "product": {"id": "tea-1", "price": "8.00", "quantity": 5}},
            # Two of the five back, by `products`, and the money paid back as the revenue.
            {"event_id": "r1", "type": "refund", "anonymous_id": "a", "timestamp": later,
             "order": {"id": "3001", "revenue": "15.00"},
             "products": [{"id": "tea-1", "name": "Sencha", "quantity": 2, "price": "8.00"}]},
            {"event_id": "r1", "type": "refund", "anonymous_id": "a", "timestamp": later,
             "order": {"id": "3001", "revenue": "15.00"}},  # a repeat: stored once
            # One product like a purchase names it, no amount: the line's price × quantity.
            {"event_id": "r2", "type": "refund", "anonymous_id": "a", "timestamp": later,
             "order": {"id": "3001"}, "product": {"id": "tea-1", "price": "8.00"}},
            # An order not recorded here (another system's): kept unlinked, with its id.
            {"event_id": "r3", "type": "refund", "user_id": "u1", "timestamp": later,
             "order": {"id": "elsewhere-9", "revenue": "3.00"}},
        ],
    )  # fmt: skip
    assert (result.accepted, result.duplicates, result.rejected) == (4, 1, [])

    process_all(shop)
    process_all(shop)

    refunds = {r.refund_id: r for r in Refund.objects.filter(shop=shop)}
    assert set(refunds) == {"event:r1", "event:r2", "event:r3"}
    assert [(r.amount, r.order.order_id if r.order else None) for r in refunds.values()] == [
        (Decimal("15.00"), "3001"), (Decimal("8.00"), "3001"), (Decimal("3.00"), None),
    ]  # fmt: skip
    assert refunds["event:r3"].source_order_id == "elsewhere-9"
    assert refunds["event:r1"].refunded_at == datetime(2026, 3, 3, 9, tzinfo=UTC)
    lines = sorted(
        RefundLine.objects.filter(refund__shop=shop).values_list(
            "refund__refund_id", "product_id", "name", "quantity", "amount"
        )
    )
    assert lines == [
        ("event:r1", "tea-1", "Sencha", 2, Decimal("16.00")),
        ("event:r2", "tea-1", "", 1, Decimal("8.00")),
    ]
    assert Order.objects.get(shop=shop, order_id="3001").refunded_amount == Decimal("23.00")


@pytest.mark.django_db
def test_a_segment_order_refunded_carries_its_products(shop, process_all):
    message = {
        "type": "track", "event": "Order Refunded", "messageId": "seg-r1", "userId": "u7",
        "timestamp": "2026-03-02T08:00:00Z",
        "properties": {"order_id": "x1", "total": 12, "currency": "EUR",
                       "products": [{"product_id": "mug", "sku": "M-1", "quantity": 2,
                                     "price": 6}]},
    }  # fmt: skip
    events_ingest(
        shop=shop,
        received_at=datetime(2026, 3, 2, 9, tzinfo=UTC),
        events=[segment_to_event(message)],
    )

    process_all(shop)

    refund = Refund.objects.get(shop=shop)
    assert (refund.refund_id, refund.amount, refund.source_order_id) == (
        "event:seg-r1", Decimal("12.00"), "x1",
    )  # fmt: skip
    assert list(refund.lines.values_list("product_id", "sku", "quantity", "amount")) == [
        ("mug", "M-1", 2, Decimal("12.00"))
    ]


@pytest.mark.django_db
def test_a_refund_event_before_its_purchase_is_linked_when_the_order_is_recorded(shop, process_all):
    refund = {
        "event_id": "r1",
        "type": "refund",
        "anonymous_id": "a",
        "timestamp": "2026-03-02T09:00:00+00:00",
        "order": {"id": "4001", "revenue": "5"},
    }
    purchase = {"event_id": "p1", "type": "purchase", "anonymous_id": "a",
                "timestamp": "2026-03-01T10:00:00+00:00",
                "order": {"id": "4001", "revenue": "20.00"}}  # fmt: skip
    events_ingest(shop=shop, received_at=datetime(2026, 3, 2, 12, tzinfo=UTC), events=[refund])
    process_all(shop)
    assert Refund.objects.get(shop=shop).order is None

    events_ingest(shop=shop, received_at=datetime(2026, 3, 2, 13, tzinfo=UTC), events=[purchase])
    process_all(shop)

    order = Order.objects.get(shop=shop, order_id="4001")
    assert Refund.objects.get(shop=shop).order == order
    assert order.refunded_amount == Decimal("5.00")
