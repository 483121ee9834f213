"""Bounded pieces of a list: IN lists and multi-row statements stay under the database's packet
and planner limits."""

from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")


def chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
