"""One cache helper: an answer through the shared cache, optionally kept in this process too.

Imports no app module; callers build keys that change when their answer must (e.g. a generation).
"""

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.cache import cache

from clickserver.metrics import CACHE_HIT, CACHE_LOCAL, CACHE_MISS

T = TypeVar("T")

# Answers this process computed or fetched, by cache key (with `local=True`): a warm request then
# skips the second cache round trip and the unpickling. Safe across processes only when the key
# changes with the data (analytics keys hold the shop's rollup generation, read from the shared
# cache on every request); entries expire with the shared ones.
_LOCAL: OrderedDict[str, tuple[float, Any]] = OrderedDict()
LOCAL_ENTRIES = 256


def cached(key: str, compute: Callable[[], T], *, timeout: int, local: bool = False) -> T:
    """`compute()` through the shared cache for `timeout` seconds (None is never cached)."""
    now = time.monotonic()
    if local:
        entry = _LOCAL.get(key)
        if entry is not None and entry[0] > now:
            CACHE_LOCAL.inc()
            return entry[1]
    value = cache.get(key)
    if value is None:
        CACHE_MISS.inc()
        value = compute()
        cache.set(key, value, timeout=timeout)
    else:
        CACHE_HIT.inc()
    if local:
        _LOCAL[key] = (now + timeout, value)
        _LOCAL.move_to_end(key)
        while len(_LOCAL) > LOCAL_ENTRIES:
            _LOCAL.popitem(last=False)
    return value
