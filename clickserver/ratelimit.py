"""Fixed-window rate limiting, counted in each process and shared through Redis in batches.

A hot write key would otherwise cost a Redis round trip on every request (~0.6 ms, a fifth of a
single-event ingestion request). Each process therefore counts a key's hits locally and adds them
to the shared counter (one INCRBY; the first add of a window also sets the expiry) every
`SYNC_EVERY_HITS` hits or `SYNC_EVERY_SECONDS`, whichever comes first; the answer brings back
every process's total. Once that total comes within `EXACT_MARGIN` of the limit, every hit is
added at once, as before. A key known to be over its limit is refused without a round trip until
its window ends.

The limit therefore holds across processes up to `SYNC_EVERY_HITS` unsynced hits per process: with
P web processes a window admits at most limit + P × SYNC_EVERY_HITS hits, and exactly the limit
when its own traffic is below one sync batch per `SYNC_EVERY_SECONDS`. The embedded mode (no
REDIS_URL) adds to the local cache instead.

Redis down never turns into an error answer: the limiter fails open to this process's own count
(so the limit still holds per process), logs one warning per outage and process, counts every
count that failed open in `clickserver_ratelimit_redis_unavailable_total`, and leaves Redis
alone for `REDIS_RETRY_SECONDS` before it tries again, so an unreachable host costs one connect
timeout per interval, not one per request.
"""

import logging
import math
import threading
import time
from dataclasses import dataclass
from functools import cache as memoize

import redis
from django.conf import settings
from django.core.cache import cache
from redis.exceptions import RedisError

from clickserver.metrics import RATELIMIT_REDIS_UNAVAILABLE

logger = logging.getLogger(__name__)

SYNC_EVERY_HITS = 20
SYNC_EVERY_SECONDS = 0.1
# Within this fraction of the limit (and at least one sync batch) every hit goes to Redis.
EXACT_MARGIN = 0.1
REDIS_RETRY_SECONDS = 5.0
# Short: a counter round trip takes under a millisecond, and a request must not wait on a dead host.
REDIS_TIMEOUT_SECONDS = 0.25


@dataclass(slots=True)
class _Window:
    number: int
    total: int = 0  # the shared count at this process's last sync, its own hits included
    pending: int = 0  # hits admitted here and not yet added to the shared count
    synced_at: float = 0.0


_windows: dict[str, _Window] = {}
_lock = threading.Lock()
_redis_down_until = 0.0  # time.monotonic() before which Redis is not tried again


def rate_limit_forget() -> None:
    """Drop this process's counts and Redis client (tests start each case afresh)."""
    global _redis_down_until
    with _lock:
        _windows.clear()
        _redis_down_until = 0.0
    _redis.cache_clear()


@memoize
def _redis() -> redis.Redis | None:
    if not settings.REDIS_URL:
        return None
    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
    )


def _add_shared(client: redis.Redis, cache_key: str, hits: int, window_seconds: int) -> int | None:
    """INCRBY the Redis counter; None while Redis is unavailable."""
    global _redis_down_until
    if time.monotonic() < _redis_down_until:
        RATELIMIT_REDIS_UNAVAILABLE.inc()
        return None
    try:
        total = int(client.incrby(cache_key, hits))
        if total == hits:  # this add created the counter
            client.expire(cache_key, window_seconds + 1)
    except RedisError as error:
        with _lock:
            was_up, _redis_down_until = (
                _redis_down_until == 0.0,
                time.monotonic() + REDIS_RETRY_SECONDS,
            )
        if was_up:
            logger.warning(
                "rate limit fails open: Redis unavailable (%s); counting in this process only",
                error,
            )
        RATELIMIT_REDIS_UNAVAILABLE.inc()
        return None
    if _redis_down_until:
        _redis_down_until = 0.0
        logger.warning("rate limit: Redis is back; counting across processes again")
    return total


def _add(cache_key: str, hits: int, window_seconds: int) -> int | None:
    """Add `hits` to the shared counter; return its new total, None if it is unreachable."""
    client = _redis()
    if client is not None:
        return _add_shared(client, cache_key, hits, window_seconds)
    # add() is atomic: only the first hit of a window creates the counter with its expiry.
    if cache.add(cache_key, hits, window_seconds + 1):
        return hits
    try:
        return cache.incr(cache_key, hits)
    except ValueError:  # the counter expired between add() and incr()
        cache.add(cache_key, hits, window_seconds + 1)
        return hits


def _cache_key(key: str, number: int) -> str:
    prefix = settings.CACHES["default"].get("KEY_PREFIX", "")
    return f"{prefix}:ratelimit:{key}:{number}"


def _window_now(window_seconds: int) -> tuple[float, int, int]:
    """(now, the window's number, seconds until the next window)."""
    now = time.time()
    number = int(now // window_seconds)
    return now, number, max(1, math.ceil((number + 1) * window_seconds - now))


def rate_limit_peek(*, key: str, limit: int, window_seconds: int) -> int | None:
    """The seconds to wait if `key` already counts `limit` hits in this window; counts nothing.

    For limits on failures (bad tokens, wrong passwords): the request is refused before its
    credentials are even checked, so a guess made after the limit can never succeed.
    """
    _, number, retry_after = _window_now(window_seconds)
    client = _redis()
    cache_key = _cache_key(key, number)
    raw = client.get(cache_key) if client is not None else cache.get(cache_key)
    return retry_after if int(raw or 0) >= limit else None


def rate_limit_reset(*, key: str, window_seconds: int) -> None:
    """Forget `key`'s hits in this window, in this process and in the shared counter."""
    _, number, _ = _window_now(window_seconds)
    with _lock:
        _windows.pop(key, None)
    client = _redis()
    if client is not None:
        client.delete(_cache_key(key, number))
    else:
        cache.delete(_cache_key(key, number))


def rate_limit_retry_after(*, key: str, limit: int, window_seconds: int) -> int | None:
    """Count one hit for `key`; return the seconds to wait if it is over `limit`, else None."""
    now, number, retry_after = _window_now(window_seconds)
    with _lock:
        window = _windows.get(key)
        if window is None or window.number != number:
            if len(_windows) > 10_000:
                _windows.clear()
            window = _windows[key] = _Window(number=number)
        if window.total >= limit:
            return retry_after
        window.pending += 1
        margin = max(SYNC_EVERY_HITS, limit * EXACT_MARGIN)
        if (
            window.pending < SYNC_EVERY_HITS
            and now - window.synced_at < SYNC_EVERY_SECONDS
            and limit - window.total - window.pending > margin
        ):
            return None
        hits, window.pending, window.synced_at = window.pending, 0, now
    total = _add(_cache_key(key, number), hits, window_seconds)
    with _lock:
        if total is None:  # Redis down: fail open to this process's own count
            total = window.total + hits
        window.total = max(window.total, total)
    return None if total <= limit else retry_after
