"""Fixed-window rate limiting on the shared cache (Redis INCR in production)."""

import math
import time

from django.core.cache import cache


def rate_limit_retry_after(*, key: str, limit: int, window_seconds: int) -> int | None:
    """Count one hit for `key`; return the seconds to wait if it is over `limit`, else None."""
    now = time.time()
    window = int(now // window_seconds)
    cache_key = f"ratelimit:{key}:{window}"
    # add() is atomic: only the first hit of a window creates the counter with its expiry.
    if cache.add(cache_key, 1, window_seconds + 1):
        hits = 1
    else:
        try:
            hits = cache.incr(cache_key)
        except ValueError:  # the counter expired between add() and incr()
            cache.add(cache_key, 1, window_seconds + 1)
            hits = 1
    if hits <= limit:
        return None
    return max(1, math.ceil((window + 1) * window_seconds - now))
