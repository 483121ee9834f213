"""Fixed-window rate limiting: one Redis round trip per hit in production.

With REDIS_URL set, INCR and EXPIRE go to Redis in one pipeline (the limit holds across every
web process); the embedded mode counts in the local cache instead.
"""

import math
import time
from functools import cache as memoize

import redis
from django.conf import settings
from django.core.cache import cache


@memoize
def _redis() -> redis.Redis | None:
    return redis.Redis.from_url(settings.REDIS_URL) if settings.REDIS_URL else None


def _hits(cache_key: str, window_seconds: int) -> int:
    client = _redis()
    if client is not None:
        pipe = client.pipeline(transaction=False)
        pipe.incr(cache_key)
        pipe.expire(cache_key, window_seconds + 1, nx=True)
        return int(pipe.execute()[0])
    # add() is atomic: only the first hit of a window creates the counter with its expiry.
    if cache.add(cache_key, 1, window_seconds + 1):
        return 1
    try:
        return cache.incr(cache_key)
    except ValueError:  # the counter expired between add() and incr()
        cache.add(cache_key, 1, window_seconds + 1)
        return 1


def rate_limit_retry_after(*, key: str, limit: int, window_seconds: int) -> int | None:
    """Count one hit for `key`; return the seconds to wait if it is over `limit`, else None."""
    now = time.time()
    window = int(now // window_seconds)
    prefix = settings.CACHES["default"].get("KEY_PREFIX", "")
    hits = _hits(f"{prefix}:ratelimit:{key}:{window}", window_seconds)
    if hits <= limit:
        return None
    return max(1, math.ceil((window + 1) * window_seconds - now))
