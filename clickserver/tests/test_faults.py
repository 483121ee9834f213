"""Fault injection: a real stack under a stream of events while its parts are killed and restarted.

One run (the module fixture `fault_run`, about two minutes) starts private MariaDB, Redis and
RabbitMQ instances (clickserver/tests/stack.py; the shared services on 3306/6379/5672 are never
touched) and gunicorn + a Celery worker + beat on them. Two client threads stream events with
unique ids in batches of 100, retrying each batch like an SDK (connection error, 5xx or 429 →
back off and re-send the same event ids; 202 → acknowledged). Meanwhile, one after the other:

- the worker is killed with SIGKILL inside a batch's transaction (holding uncommitted writes, or
  waiting on an event row the test keeps locked; seen in information_schema.INNODB_TRX under the
  worker's own MariaDB user), then restarted;
- Redis is killed (SIGKILL: no persistence, every key is lost) and restarted;
- RabbitMQ is stopped (`rabbitmqctl stop`) and started again;
- MariaDB is killed with SIGKILL (crash recovery on restart) and restarted.

Each outage lasts `OUTAGE_SECONDS`; after each restart the run waits (bounded) until the pipeline
and the rollups have caught up with everything stored, and records how long that took. After the
stream, the stack converges and the tests below check the figures, which are also written to
var/faults.json and printed.
"""

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import requests
from MySQLdb import Error as MariaDBError

from clickserver.tests import stack as stack_module
from clickserver.tests.stack import ROOT, Stack, wait_until

pytestmark = pytest.mark.faults

BATCH = 100
RATE = 400  # events/s, both senders together
MIN_EVENTS = 20_000
MAX_EVENTS = 40_000
OUTAGE_SECONDS = 4.0
CONVERGE_SECONDS = 45.0
REQUEST_TIMEOUT = 10.0
BATCH_GIVE_UP_SECONDS = 90.0
VISITORS = 1500
# Which /health/ready/ check names each service.
READINESS_CHECK = {"redis": "cache", "rabbitmq": "broker", "mariadb": "database"}
FIGURES_PATH = ROOT / "var" / "faults.json"


@dataclass
class Sender:
    """One SDK-like client: paced batches, each re-sent with the same ids until a 202."""

    base_url: str
    write_key: str
    prefix: str
    rate: float
    stop: threading.Event
    started_at: datetime
    sent: int = 0
    acknowledged: list[str] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)
    duplicates_reported: int = 0
    retries: int = 0
    connection_errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    # First event id of each acknowledged batch → seconds its acknowledged request took.
    request_seconds: dict[str, float] = field(default_factory=dict)

    def event(self, number: int) -> dict:
        # Consecutive events of a visitor are 2 s apart; the visitor comes back hours later
        # (a new session), and the two senders interleave, so arrivals are out of order.
        visitor = (number // 7) % VISITORS
        occurred = self.started_at - timedelta(hours=10) + timedelta(seconds=number * 2)
        kind = ("page_view", "product_view", "product_view", "add_to_cart")[number % 4]
        event = {
            "event_id": f"{self.prefix}-{number}",
            "type": "purchase" if number % 97 == 0 else kind,
            "anonymous_id": f"{self.prefix}-visitor-{visitor}",
            "timestamp": occurred.isoformat(),
            "url": f"https://faults.example/products/p{number % 50}",
            "product": {"id": f"p{number % 50}", "price": "19.90", "quantity": 1},
        }
        if event["type"] == "purchase":
            event["order"] = {"id": f"{self.prefix}-o{number}", "revenue": "19.90"}
        if number % 211 == 0:
            event["user_id"] = f"{self.prefix}-user-{visitor}"
        return event

    def post(self, session: requests.Session, events: list[dict]) -> bool:
        """Send one batch until it is acknowledged; False if it was given up."""
        body = orjson.dumps({"batch": events})
        deadline = time.monotonic() + BATCH_GIVE_UP_SECONDS
        backoff = 0.1
        while time.monotonic() < deadline:
            posted = time.monotonic()
            try:
                response = session.post(f"{self.base_url}/events/", data=body, timeout=10)
            except requests.RequestException:
                self.connection_errors += 1
            else:
                status = response.status_code
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if status == 202:
                    answer = response.json()
                    if answer["rejected"] or answer["accepted"] + answer["duplicates"] != len(
                        events
                    ):
                        self.unexpected.append(response.text[:300])
                    self.duplicates_reported += answer["duplicates"]
                    self.request_seconds[events[0]["event_id"]] = time.monotonic() - posted
                    return True
                if status < 500 and status != 429:
                    self.unexpected.append(f"{status}: {response.text[:300]}")
                    return False
                retry_after = response.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    backoff = max(backoff, min(float(retry_after), 2.0))
            self.retries += 1
            time.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
        return False

    def run(self) -> None:
        session = requests.Session()
        # An SDK's own user agent: requests' default ("python-requests/…") is a known HTTP
        # library, so detection rightly tagged every visitor as a bot, and a tag that came after
        # the last rollup refresh left its recompute queued when the audit stopped the worker
        # (the live rollups then kept what the rebuild leaves out). This run is about losing
        # nothing, not about bots (those have their own tests).
        session.headers.update(
            {
                "X-Write-Key": self.write_key,
                "Content-Type": "application/json",
                "User-Agent": "analytics-python/2.3.4",
            }
        )
        began = time.monotonic()
        while not self.stop.is_set() and self.sent < MAX_EVENTS // 2:
            due = (time.monotonic() - began) * self.rate
            if self.sent + BATCH > due:
                time.sleep(0.01)
                continue
            events = [self.event(self.sent + i) for i in range(BATCH)]
            self.sent += BATCH
            ids = [event["event_id"] for event in events]
            if self.post(session, events):
                self.acknowledged.extend(ids)
            else:
                self.given_up.extend(ids)


@dataclass
class ReadinessPoller:
    """GET /health/ready/ every 0.25 s: (asked at, answered at, status, checks), in seconds."""

    base_url: str
    stop: threading.Event
    origin: float
    answers: list[tuple[float, float, int, dict]] = field(default_factory=list)
    connection_errors: int = 0

    def run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            tick = time.monotonic()
            try:
                response = session.get(f"{self.base_url}/health/ready/", timeout=REQUEST_TIMEOUT)
                checks = response.json().get("checks", {}) if response.content else {}
                self.answers.append(
                    (
                        tick - self.origin,
                        time.monotonic() - self.origin,
                        response.status_code,
                        checks,
                    )
                )
            except (requests.RequestException, ValueError):
                self.connection_errors += 1
            time.sleep(max(0.0, 0.25 - (time.monotonic() - tick)))


@dataclass
class Fault:
    service: str
    down_at: float = 0.0
    restarting_at: float = 0.0
    restored_at: float = 0.0
    converge_s: float | None = None
    detail: dict = field(default_factory=dict)


@dataclass
class FaultRun:
    shop_id: int
    sent: int
    acknowledged: list[str]
    given_up: list[str]
    stored: list[str]
    stored_rows: int
    unprocessed: int
    unrolled: int
    audit: dict
    statuses: dict[int, int]
    unexpected: list[str]
    readiness: list[tuple[float, float, int, dict]]
    faults: list[Fault]
    figures: dict


def _scalar(stack: Stack, sql: str, params: tuple = ()) -> int:
    connection = stack.mariadb.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
            return int(row[0] or 0) if row else 0
    finally:
        connection.close()


def _position(stack: Stack, job: str, shop_id: int) -> int:
    return _scalar(
        stack,
        "SELECT position FROM events_pipelinewatermark WHERE job = %s AND shop_id = %s",
        (job, shop_id),
    )


def _caught_up(stack: Stack, shop_id: int, target: int) -> bool:
    try:
        return (
            _position(stack, "events", shop_id) >= target
            and _position(stack, "analytics", shop_id) >= target
        )
    except MariaDBError:  # MariaDB may still be recovering: keep polling
        return False


def _top_id(stack: Stack, shop_id: int) -> int | None:
    """The shop's newest event id; None while MariaDB is still recovering."""
    try:
        return _scalar(stack, "SELECT MAX(id) FROM events_event WHERE shop_id = %s", (shop_id,))
    except MariaDBError:
        return None


def _converge(stack: Stack, shop_id: int, timeout: float) -> float | None:
    """Seconds until the pipeline and the rollups have reached every event stored by now."""
    started = time.monotonic()
    wait_until(lambda: _top_id(stack, shop_id) is not None, timeout=timeout, what="MariaDB")
    top = _top_id(stack, shop_id) or 0
    try:
        wait_until(
            lambda: _caught_up(stack, shop_id, top),
            timeout=max(1.0, timeout - (time.monotonic() - started)),
            what="convergence",
            every=0.25,
        )
    except TimeoutError:
        return None
    return round(time.monotonic() - started, 2)


WORKER_TRANSACTIONS = (
    "SELECT t.trx_state, t.trx_rows_modified, LEFT(COALESCE(t.trx_query, ''), 60) "
    "FROM information_schema.INNODB_TRX t "
    "JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id "
    f"WHERE p.USER = '{stack_module.WORKER_USER}'"
)


def _kill_worker_mid_batch(stack: Stack, fault: Fault, shop_id: int) -> None:
    """SIGKILL the worker's process group while it is inside a batch's transaction.

    The test locks the shop's newest unprocessed event row (READ COMMITTED: a record lock only,
    so ingestion goes on). The batch that reaches it takes the watermark lock, reads its events,
    writes persons and sessions and then waits to write that event's session id: the wait, seen
    in information_schema.INNODB_TRX under the worker's own user, is the moment of the kill.
    The lock is released afterwards; the killed batch must roll back and be redone.
    """
    holder = stack.mariadb.connect(autocommit=False)
    watcher = stack.mariadb.connect()
    inside: list[tuple] = []
    transactions: list[tuple] = []
    try:
        with holder.cursor() as hold, watcher.cursor() as watch:
            hold.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            position = _position(stack, "events", shop_id)
            # The newest unprocessed row: the batch that reaches it has updated the rows before
            # it (in id order) when it waits.
            hold.execute(
                "SELECT id FROM events_event WHERE shop_id = %s AND id > %s "
                "ORDER BY id DESC LIMIT 1 FOR UPDATE",
                (shop_id, position),
            )
            deadline = time.monotonic() + 45
            while not inside and time.monotonic() < deadline:
                watch.execute(WORKER_TRANSACTIONS)
                transactions = watch.fetchall()
                # Waiting for a lock inside a batch (on the held event row, or on the watermark
                # behind its sibling's batch), or holding uncommitted writes.
                inside = [t for t in transactions if t[0] == "LOCK WAIT" or t[1] > 0]
                if not inside:
                    # InnoDB refreshes its INNODB_TRX snapshot only when it has not been read
                    # for 0.1 s: polling faster would keep reading the same stale snapshot.
                    time.sleep(0.15)
            stack.worker.kill()
            holder.rollback()
    finally:
        holder.close()
        watcher.close()
    fault.detail = {
        "mid_batch": bool(inside),
        "worker_transactions": [
            {"state": state, "uncommitted_rows": rows, "statement": statement}
            for state, rows, statement in transactions
        ],
    }


def _inject(stack: Stack, fault: Fault, shop_id: int, origin: float) -> None:
    """Take the service down, keep it down OUTAGE_SECONDS, bring it back.

    `down_at` is taken once the service is really gone, `restarting_at` just before it is
    started again (from then on it may answer), `restored_at` once it listens again.
    """
    take_down, bring_back = {
        "worker": (lambda: _kill_worker_mid_batch(stack, fault, shop_id), stack.worker.start),
        "redis": (stack.redis.kill, stack.redis.start),
        "rabbitmq": (stack.rabbitmq.stop, stack.rabbitmq.start),
        "mariadb": (stack.mariadb.kill, stack.mariadb.start),
    }[fault.service]
    take_down()
    fault.down_at = time.monotonic() - origin
    time.sleep(OUTAGE_SECONDS)
    fault.restarting_at = time.monotonic() - origin
    bring_back()
    fault.restored_at = time.monotonic() - origin


def _figures(run_started: float, **values) -> dict:
    return {"seconds": round(time.monotonic() - run_started, 1), **values}


@pytest.fixture(scope="module")
def fault_run():
    reason = stack_module.unavailable_reason()
    if reason:
        pytest.skip(reason)
    run_started = time.monotonic()
    stack = Stack()
    try:
        yield _run(stack, run_started)
    finally:
        stack.close()


def _run(stack: Stack, run_started: float) -> FaultRun:
    stack.start_services()
    stack.manage("migrate", "--noinput", "-v0")
    created = orjson.loads(
        stack.manage("create_shop", "--domain", "faults.example", "--owner", "faults")
    )
    shop_id = created["shop_id"]
    stack.start_processes()
    wait_until(lambda: _web_answers(stack), timeout=90, what="web", every=0.5)

    origin = time.monotonic()
    stop_stream, stop_poll = threading.Event(), threading.Event()
    now = datetime.now(UTC)
    run_id = uuid.uuid4().hex[:6]
    senders = [
        Sender(
            base_url=stack.base_url,
            write_key=created["write_key"],
            prefix=f"{run_id}{letter}",
            rate=RATE / 2,
            stop=stop_stream,
            started_at=now,
        )
        for letter in "ab"
    ]
    poller = ReadinessPoller(base_url=stack.base_url, stop=stop_poll, origin=origin)
    threads = [threading.Thread(target=s.run, daemon=True) for s in senders]
    threads.append(threading.Thread(target=poller.run, daemon=True))
    for thread in threads:
        thread.start()

    faults = [Fault(name) for name in ("worker", "redis", "rabbitmq", "mariadb")]
    try:
        # The faults begin once the worker has processed a first batch (it has started).
        wait_until(
            lambda: _position(stack, "events", shop_id) > 0,
            timeout=90,
            what="the worker's first batch",
            every=0.5,
        )
        for fault in faults:
            _inject(stack, fault, shop_id, origin)
            fault.converge_s = _converge(stack, shop_id, CONVERGE_SECONDS)
        wait_until(
            lambda: sum(s.sent for s in senders) >= MIN_EVENTS,
            timeout=MIN_EVENTS / RATE + 30,
            what="the stream's minimum",
            every=0.5,
        )
    finally:
        stop_stream.set()
        for thread in threads[:-1]:
            thread.join(timeout=BATCH_GIVE_UP_SECONDS + 15)
    final_converge_s = _converge(stack, shop_id, CONVERGE_SECONDS)
    stop_poll.set()
    threads[-1].join(timeout=REQUEST_TIMEOUT + 5)

    connection = stack.mariadb.connect()
    with connection.cursor() as cursor:
        cursor.execute("SELECT event_id FROM events_event WHERE shop_id = %s", (shop_id,))
        stored = [row[0] for row in cursor.fetchall()]
    connection.close()
    unprocessed = _scalar(
        stack,
        "SELECT COUNT(*) FROM events_event WHERE shop_id = %s AND (session_id IS NULL OR id > "
        "(SELECT position FROM events_pipelinewatermark WHERE job = 'events' AND shop_id = %s))",
        (shop_id, shop_id),
    )
    connection = stack.mariadb.connect()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, event_id, received_at FROM events_event WHERE shop_id = %s AND "
            "session_id IS NULL ORDER BY id LIMIT 5",
            (shop_id,),
        )
        unassigned = cursor.fetchall()
    connection.close()
    unrolled = _scalar(
        stack,
        "SELECT COUNT(*) FROM events_event WHERE shop_id = %s AND id > "
        "(SELECT position FROM events_pipelinewatermark WHERE job = 'analytics' AND shop_id = %s)",
        (shop_id, shop_id),
    )
    # The worker and beat stop first: the audit rebuilds rollups and sessions and must not race
    # a refresh.
    stack.worker.stop(timeout=10)
    stack.beat.stop(timeout=10)
    audit_output = stack.python("-m", "clickserver.tests.fault_audit", "--shop-id", str(shop_id))
    audit = json.loads(audit_output)

    acknowledged = [i for s in senders for i in s.acknowledged]
    statuses: dict[int, int] = {}
    for sender in senders:
        for status, count in sender.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    for _, _, status, _ in poller.answers:
        statuses[status] = statuses.get(status, 0) + 1
    stored_set = set(stored)
    figures = _figures(
        run_started,
        events_sent=sum(s.sent for s in senders),
        events_acknowledged=len(acknowledged),
        events_given_up=sum(len(s.given_up) for s in senders),
        events_stored=len(stored),
        acknowledged_missing=len(set(acknowledged) - stored_set),
        duplicates_stored=len(stored) - len(stored_set),
        duplicates_reported_by_server=sum(s.duplicates_reported for s in senders),
        unprocessed=unprocessed,
        not_in_rollups=unrolled,
        # Diagnostics should any event stay unassigned: which, when received, and how long the
        # request that stored its batch took.
        unassigned_sample=[
            {
                "id": row_id,
                "event_id": event_id,
                "received_at": received_at.isoformat(),
                "batch_request_s": _batch_seconds(senders, event_id),
            }
            for row_id, event_id, received_at in unassigned
        ],
        max_request_s=round(
            max((t for s in senders for t in s.request_seconds.values()), default=0), 2
        ),
        client_retries=sum(s.retries for s in senders),
        client_connection_errors=sum(s.connection_errors for s in senders),
        http_statuses={str(k): v for k, v in sorted(statuses.items())},
        readiness_polls=len(poller.answers),
        faults=[
            {
                "service": f.service,
                "down_at_s": round(f.down_at, 1),
                "outage_s": round(f.restored_at - f.down_at, 1),
                "converge_s": f.converge_s,
                **f.detail,
            }
            for f in faults
        ],
        final_converge_s=final_converge_s,
        sessions_equal_rebuild=audit["sessions"]["equal"],
        sessions=audit["sessions"]["rows"],
        rollups_equal_rebuild={name: r["equal"] for name, r in audit["rollups"].items()},
    )
    FIGURES_PATH.parent.mkdir(parents=True, exist_ok=True)
    FIGURES_PATH.write_text(json.dumps(figures, indent=2) + "\n")
    print("\nfault-injection figures: " + json.dumps(figures))
    return FaultRun(
        shop_id=shop_id,
        sent=figures["events_sent"],
        acknowledged=acknowledged,
        given_up=[i for s in senders for i in s.given_up],
        stored=stored,
        stored_rows=len(stored),
        unprocessed=unprocessed,
        unrolled=unrolled,
        audit=audit,
        statuses=statuses,
        unexpected=[u for s in senders for u in s.unexpected],
        readiness=poller.answers,
        faults=faults,
        figures=figures,
    )


def _batch_seconds(senders: list[Sender], event_id: str) -> float | None:
    prefix, _, number = event_id.rpartition("-")
    first = f"{prefix}-{int(number) // BATCH * BATCH}"
    for sender in senders:
        if first in sender.request_seconds:
            return round(sender.request_seconds[first], 2)
    return None


def _web_answers(stack: Stack) -> bool:
    try:
        return requests.get(f"{stack.base_url}/health/", timeout=10).ok
    except requests.RequestException:
        return False


def test_every_acknowledged_event_is_stored_exactly_once(fault_run):
    stored = set(fault_run.stored)

    missing = set(fault_run.acknowledged) - stored

    assert fault_run.sent >= MIN_EVENTS
    assert len(fault_run.acknowledged) >= MIN_EVENTS
    assert sorted(missing) == []
    assert fault_run.stored_rows == len(stored)
    # Nothing is stored that the client did not send (a given-up batch may or may not be).
    assert stored <= set(fault_run.acknowledged) | set(fault_run.given_up)
    assert fault_run.unexpected == []


def test_every_stored_event_is_processed_and_rolled_up(fault_run):
    assert (fault_run.unprocessed, fault_run.unrolled) == (0, 0)


def test_sessions_equal_a_full_recomputation(fault_run):
    sessions = fault_run.audit["sessions"]

    assert sessions["rows"] > 0
    assert (sessions["only_live"], sessions["only_rebuilt"]) == ([], [])
    assert sessions["equal"] is True


def test_rollups_equal_a_rebuild(fault_run):
    differing = {
        name: (r["only_live"], r["only_rebuilt"])
        for name, r in fault_run.audit["rollups"].items()
        if not r["equal"]
    }

    assert differing == {}
    assert fault_run.audit["rollups"]["HourlyRollup"]["rows"] > 0


def test_web_answers_only_2xx_503_or_429(fault_run):
    unexpected = {
        status: count
        for status, count in fault_run.statuses.items()
        if not (200 <= status < 300 or status in (429, 503))
    }

    assert unexpected == {}


@pytest.mark.parametrize("service", ["redis", "rabbitmq", "mariadb"])
def test_readiness_names_what_is_down(fault_run, service):
    [fault] = [f for f in fault_run.faults if f.service == service]
    check = READINESS_CHECK[service]
    # Only answers asked and given while the service was surely down: from its death until the
    # restart began.
    during = [
        (status, checks)
        for asked, answered, status, checks in fault_run.readiness
        if fault.down_at <= asked and answered <= fault.restarting_at
    ]

    not_naming = [
        (status, checks)
        for status, checks in during
        if status != 503 or checks.get(check, "ok") == "ok"
    ]

    assert during != []
    assert not_naming == []


def test_every_fault_converges(fault_run):
    converge = {f.service: f.converge_s for f in fault_run.faults}
    worker = next(f for f in fault_run.faults if f.service == "worker")

    assert None not in converge.values(), converge
    assert worker.detail["mid_batch"] is True
