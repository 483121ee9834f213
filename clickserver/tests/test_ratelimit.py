"""The rate limit counts in each process and shares its counts through Redis in batches."""

import time

import pytest
from django.conf import settings

from clickserver import ratelimit

# One window for the whole test: no boundary to cross while it runs.
WINDOW_SECONDS = 10**9


def shared_key(key: str) -> str:
    prefix = settings.CACHES["default"].get("KEY_PREFIX", "")
    return f"{prefix}:ratelimit:{key}:{int(time.time() // WINDOW_SECONDS)}"


def hits(key: str, *, limit: int, count: int) -> list[int | None]:
    return [
        ratelimit.rate_limit_retry_after(key=key, limit=limit, window_seconds=WINDOW_SECONDS)
        for _ in range(count)
    ]


@pytest.fixture
def shared_counter():
    client = ratelimit._redis()
    if client is None:
        pytest.skip("needs Redis (REDIS_URL)")
    created = []

    def read(key: str) -> int:
        created.append(shared_key(key))
        return int(client.get(shared_key(key)) or 0)

    def add(key: str, count: int) -> None:
        created.append(shared_key(key))
        client.incrby(shared_key(key), count)

    read.add = add
    yield read
    if created:
        client.delete(*created)


def test_one_process_admits_exactly_the_limit():
    answers = hits("test:exact", limit=100, count=130)

    assert answers[:100] == [None] * 100
    assert all(answer is not None and answer >= 1 for answer in answers[100:])


def test_hits_far_from_the_limit_reach_redis_in_batches(shared_counter, monkeypatch):
    monkeypatch.setattr(ratelimit, "SYNC_EVERY_SECONDS", 3600)  # no clock-driven sync here
    hits("test:batched", limit=10_000, count=ratelimit.SYNC_EVERY_HITS)

    # The first hit of a window is added at once, the next ones wait for a full batch.
    assert shared_counter("test:batched") == 1

    hits("test:batched", limit=10_000, count=1)

    assert shared_counter("test:batched") == 1 + ratelimit.SYNC_EVERY_HITS


def test_other_processes_hits_count_against_the_limit(shared_counter):
    shared_counter.add("test:shared", 90)  # what the other web processes have admitted

    answers = hits("test:shared", limit=100, count=20)

    assert answers.count(None) == 10
    assert answers[:10] == [None] * 10
    # Once the shared count is known to be at the limit, refusals no longer reach Redis.
    assert shared_counter("test:shared") == 100


def test_a_key_over_its_limit_is_refused_without_asking_redis(shared_counter):
    hits("test:over", limit=3, count=4)
    before = shared_counter("test:over")

    answers = hits("test:over", limit=3, count=50)

    assert all(answer is not None for answer in answers)
    assert shared_counter("test:over") == before == 3


def test_limit_fails_open_to_this_processs_count_while_redis_is_down(redis_down):
    answers = hits("test:down", limit=30, count=35)

    assert answers[:30] == [None] * 30
    assert all(answer is not None and answer >= 1 for answer in answers[30:])
