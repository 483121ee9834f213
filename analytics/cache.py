"""Cached analytics answers: keys carry the shop's rollup generation, bumped when rollups change.

A bump (after a refresh, a rebuild or a recompute) retires every cached answer of the shop at
once, so nothing is deleted key by key and no stale answer outlives a rollup change.
"""

import hashlib
import time
from collections.abc import Callable
from typing import Any

from django.core.cache import cache

from analytics.selectors.query import Query
from clickserver.cache import cached

CACHE_SECONDS = 300
# Part of every cache key: bumped when the shape of cached answers changes, so a deploy never
# reads what older code stored (2: plain dicts instead of dataclasses).
ANSWER_FORMAT = 2
GENERATION_KEY = "analytics:generation:{shop_id}"


def rollups_generation(*, shop_id: int) -> int:
    """The shop's rollup generation, part of every cache key; a bump retires all cached answers.

    A generation lost from the cache restarts at the clock in nanoseconds, which is never a value
    handed out before, so a cache eviction cannot bring back an older answer.
    """
    key = GENERATION_KEY.format(shop_id=shop_id)
    generation = cache.get(key)
    if generation is None:
        generation = time.time_ns()
        cache.add(key, generation, timeout=None)
        generation = cache.get(key, generation)
    return generation


def rollups_generation_bump(*, shop_id: int) -> None:
    cache.set(GENERATION_KEY.format(shop_id=shop_id), time.time_ns(), timeout=None)


def answer_cached(
    name: str, query: Query, params: dict[str, Any], compute: Callable[[], Any]
) -> Any:
    """`compute()` through the cache, under a key that changes with the shop's rollups."""
    generation = rollups_generation(shop_id=query.shop.pk)
    raw = repr((name, query.period.first, query.period.last, query.filters, sorted(params.items())))
    digest = hashlib.sha1(raw.encode()).hexdigest()
    key = f"analytics:{ANSWER_FORMAT}:{query.shop.pk}:{generation}:{digest}"
    return cached(key, compute, timeout=CACHE_SECONDS, local=True)
