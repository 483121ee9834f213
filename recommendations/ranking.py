"""Pure ranking logic shared by the endpoints and the offline evaluation; no database here."""

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Set
from dataclasses import dataclass

# Interaction weights for crowd favourites; a purchase says more than a view.
WEIGHTS = {"purchase": 5.0, "add_to_cart": 2.0, "product_view": 1.0}
HALF_LIFE_DAYS = 7.0
# Products per session that enter the co-occurrence count: bounds pairs at 435 per session.
MAX_PRODUCTS_PER_SESSION = 30
NEIGHBOURS_PER_PRODUCT = 50


@dataclass(frozen=True, slots=True)
class Ranked:
    product_id: str
    score: float
    reason: str  # "also_viewed" (co-occurrence) or "popular" (crowd favourites)


def decay(age_days: float) -> float:
    """Half the weight every HALF_LIFE_DAYS; age is whole days before today."""
    return 0.5 ** (max(age_days, 0.0) / HALF_LIFE_DAYS)


def crowd_scores(counts: Iterable[tuple[str, str, int, int]]) -> dict[str, float]:
    """(product_id, event type, age in days, count) rows -> decayed weighted score per product."""
    scores: dict[str, float] = defaultdict(float)
    for product_id, event_type, age_days, n in counts:
        scores[product_id] += WEIGHTS.get(event_type, 0.0) * n * decay(age_days)
    return dict(scores)


def top(scores: dict[str, float], *, limit: int, exclude: Set[str] = frozenset()) -> list[Ranked]:
    ranked = sorted(
        ((pid, s) for pid, s in scores.items() if pid not in exclude), key=lambda x: (-x[1], x[0])
    )
    return [Ranked(pid, round(s, 6), "popular") for pid, s in ranked[:limit]]


def affinity_from_sessions(
    sessions: Iterable[Iterable[str]], *, neighbours: int = NEIGHBOURS_PER_PRODUCT
) -> dict[str, list[tuple[str, float, int]]]:
    """Cosine co-occurrence: co(a, b) / sqrt(n(a) n(b)) over sessions, top `neighbours` per product.

    Each session counts a product once; only its first MAX_PRODUCTS_PER_SESSION distinct products
    take part, so a bot session cannot dominate or blow up the pair count.
    """
    item_count: Counter[str] = Counter()
    pair_count: Counter[tuple[str, str]] = Counter()
    for products in sessions:
        distinct = list(dict.fromkeys(products))[:MAX_PRODUCTS_PER_SESSION]
        item_count.update(distinct)
        for i, a in enumerate(distinct):
            for b in distinct[i + 1 :]:
                pair_count[(a, b) if a < b else (b, a)] += 1
    table: dict[str, list[tuple[str, float, int]]] = defaultdict(list)
    for (a, b), n in pair_count.items():
        score = n / math.sqrt(item_count[a] * item_count[b])
        table[a].append((b, score, n))
        table[b].append((a, score, n))
    return {
        pid: sorted(rows, key=lambda r: (-r[1], r[0]))[:neighbours] for pid, rows in table.items()
    }


def featured_rank(
    *,
    seeds: list[str],
    neighbours: dict[str, list[tuple[str, float]]],
    fallback: list[str],
    exclude: set[str],
    limit: int,
) -> list[Ranked]:
    """Products that co-occur with the person's recent ones (most recent seed weighs most),
    then crowd favourites to fill the list; never a product in `exclude`."""
    scores: dict[str, float] = defaultdict(float)
    for position, seed in enumerate(seeds):
        weight = 1.0 / (position + 1)
        for other, score in neighbours.get(seed, []):
            if other not in exclude and other != seed:
                scores[other] += weight * score
    ranked = [
        Ranked(pid, round(s, 6), "also_viewed")
        for pid, s in sorted(scores.items(), key=lambda x: (-x[1], x[0]))[:limit]
    ]
    taken = {r.product_id for r in ranked} | exclude
    for pid in fallback:
        if len(ranked) >= limit:
            break
        if pid not in taken:
            ranked.append(Ranked(pid, 0.0, "popular"))
            taken.add(pid)
    return ranked
