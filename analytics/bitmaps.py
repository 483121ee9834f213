"""Sets of person ids as compressed (roaring) bitmaps, stored per day by the visitor rollup.

A month of a busy shop's daily visitors is a few hundred thousand ids; their union, their
intersections (retention cohorts) and their sizes take well under a millisecond as bitmaps,
where `COUNT(DISTINCT …)` over per-day rows grows with the period. Counts stay exact.
"""

from collections.abc import Iterable

from pyroaring import BitMap64


def ids_pack(ids: Iterable[int]) -> bytes:
    return BitMap64(ids).serialize()


def ids_unpack(blob: bytes | memoryview) -> BitMap64:
    return BitMap64.deserialize(bytes(blob))


def ids_union(bitmaps: Iterable[BitMap64]) -> BitMap64:
    return BitMap64.union(BitMap64(), *bitmaps)
