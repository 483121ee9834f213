"""Offline evaluation: time-split leave-last-out of featured_collection vs baselines.

Events in the first 80 % of the shop's time span train the models (affinity, crowd scores); each
session that starts in the last 20 % and has at least two viewed/carted products hides its last
one, and the lists built from everything the person did before it are scored at k.
"""

import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from events.models import Event
from recommendations import ranking

TEST_SHARE = 0.2
MAX_EVENTS = 5_000_000
CROWD_WINDOW_DAYS = 30
SEEDS = 20
BROWSE_TYPES = ("product_view", "add_to_cart")


@dataclass
class Score:
    hits: int = 0
    reciprocal_ranks: float = 0.0

    def add(self, ranked: list[str], target: str) -> None:
        if target in ranked:
            self.hits += 1
            self.reciprocal_ranks += 1.0 / (ranked.index(target) + 1)


@dataclass
class Evaluation:
    k: int
    cutoff: datetime | None = None
    train_events: int = 0
    test_sessions: int = 0
    scores: dict[str, Score] = field(default_factory=dict)

    def as_dict(self) -> dict:
        n = self.test_sessions or 1
        return {
            "k": self.k,
            "cutoff": self.cutoff.isoformat() if self.cutoff else None,
            "train_events": self.train_events,
            "test_sessions": self.test_sessions,
            **{
                name: {
                    f"hit_rate@{self.k}": round(s.hits / n, 4),
                    f"mrr@{self.k}": round(s.reciprocal_ranks / n, 4),
                }
                for name, s in self.scores.items()
            },
        }


# One event as read here: (person_id, session_id, type, product_id, occurred_at).
Row = tuple[int, int, str, str, datetime]


@dataclass(frozen=True)
class Trained:
    """What the first part of the log teaches: co-occurrence neighbours and crowd scores."""

    neighbours: dict[str, list[tuple[str, float]]]
    crowd: dict[str, float]
    catalogue: list[str]


def recommendations_evaluate(*, shop_id: int, k: int = 10, seed: int = 0) -> Evaluation:
    rows = _events_read(shop_id=shop_id)
    result = Evaluation(
        k=k, scores={name: Score() for name in ("featured_collection", "crowd_favorites", "random")}
    )
    if not rows:
        return result
    cutoff = _cutoff(rows)
    train = [r for r in rows if r[4] < cutoff]
    result.cutoff, result.train_events = cutoff, len(train)
    trained = _train(train, cutoff=cutoff)
    rng = random.Random(seed)
    for history, target in _test_cases(rows, cutoff=cutoff):
        bought = {r[3] for r in history if r[2] == "purchase"}
        seeds = list(dict.fromkeys(r[3] for r in reversed(history)))[:SEEDS]
        popular = [
            r.product_id for r in ranking.top(trained.crowd, limit=k + len(bought), exclude=bought)
        ]
        featured = ranking.featured_rank(
            seeds=seeds, neighbours=trained.neighbours, fallback=popular, exclude=bought, limit=k
        )
        catalogue = trained.catalogue
        candidates = [
            pid
            for pid in rng.sample(catalogue, min(len(catalogue), k + len(bought)))
            if pid not in bought
        ]
        result.test_sessions += 1
        result.scores["featured_collection"].add([r.product_id for r in featured], target)
        result.scores["crowd_favorites"].add(popular[:k], target)
        result.scores["random"].add(candidates[:k], target)
    return result


def _events_read(*, shop_id: int) -> list[Row]:
    return list(
        Event.objects.filter(
            shop_id=shop_id,
            type__in=list(ranking.WEIGHTS),
            person__isnull=False,
            session__isnull=False,
        )
        .exclude(product_id="")
        .order_by("occurred_at", "id")
        .values_list("person_id", "session_id", "type", "product_id", "occurred_at")[:MAX_EVENTS]
    )


def _cutoff(rows: list[Row]) -> datetime:
    # The 0.1 % tails are ignored when measuring the span: a few events with broken clocks (years
    # off in public data sets) would otherwise put the whole log on one side of the cutoff.
    tail = len(rows) // 1000
    start, end = rows[tail][4], rows[-1 - tail][4]
    return start + (end - start) * (1 - TEST_SHARE)


def _train(train: list[Row], *, cutoff: datetime) -> Trained:
    train_sessions: dict[int, list[str]] = defaultdict(list)
    for _, session_id, _, product_id, _ in train:
        train_sessions[session_id].append(product_id)
    table = ranking.affinity_from_sessions(train_sessions.values())
    since = cutoff - timedelta(days=CROWD_WINDOW_DAYS)
    return Trained(
        neighbours={pid: [(o, s) for o, s, _ in rows_] for pid, rows_ in table.items()},
        crowd=ranking.crowd_scores(
            (pid, t, (cutoff.date() - at.date()).days, 1)
            for _, _, t, pid, at in train
            if at >= since
        ),
        catalogue=sorted({r[3] for r in train}),
    )


def _test_cases(rows: list[Row], *, cutoff: datetime) -> Iterator[tuple[list[Row], str]]:
    """(the person's history before it, the hidden product) for each test session with at least
    two viewed/carted products, in a fixed order (the random baseline's draws follow it)."""
    by_person: dict[int, list[Row]] = defaultdict(list)
    session_start: dict[int, datetime] = {}
    for row in rows:
        by_person[row[0]].append(row)
        session_start.setdefault(row[1], row[4])
    for events in by_person.values():
        # The person's viewed/carted events per test session, as indexes into their history.
        tests: dict[int, list[int]] = defaultdict(list)
        for i, (_, session_id, event_type, _, _) in enumerate(events):
            if session_start[session_id] >= cutoff and event_type in BROWSE_TYPES:
                tests[session_id].append(i)
        for indexes in tests.values():
            if len(indexes) >= 2:
                yield events[: indexes[-1]], events[indexes[-1]][3]
