"""Reads of experiments: the shop's list, one experiment, and the variants a unit gets now.

`experiments_decide` serves the storefront on every page view, so the running experiments of a
shop are read from the Django cache (one key per shop, dropped by every service write once it
commits, and expiring after CACHE_SECONDS to bound what a write racing a refill leaves behind);
the database is touched only when an experiment targets a segment or a score band.
"""

import contextlib
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache
from django.db.models import F, OuterRef, QuerySet, Subquery
from redis.exceptions import RedisError

from clickserver.errors import ApplicationError
from events.models import Shop
from notifications.experiments.assignment import Arm, unit_id_build, variant_assign
from notifications.experiments.rules import UnitTraits, needs_person_lookup, targeting_admits
from notifications.experiments.verdict import arm_named
from notifications.models import (
    ConversionScore,
    Experiment,
    ExperimentResult,
    ExperimentStatus,
    ExperimentUnit,
)
from recommendations.selectors import person_resolve
from segments.models import SegmentMembership

CACHE_SECONDS = 60


@dataclass(frozen=True, slots=True)
class RunningExperiment:
    key: str
    phase: int
    unit: str
    holdout_share: float
    targeting: dict[str, Any]
    arms: tuple[Arm, ...]


@dataclass(frozen=True, slots=True)
class UnitIds:
    anonymous_id: str = ""
    user_id: str = ""
    session_id: str = ""


def running_cache_key(shop_id: int) -> str:
    return f"experiments:running:{shop_id}"


def experiments_list(*, shop: Shop) -> QuerySet[Experiment]:
    return Experiment.objects.filter(shop=shop).prefetch_related("variants")


def experiments_headlines(*, shop: Shop) -> dict[int, dict[str, Any]]:
    """Per experiment with a stored result of its current phase, the dashboard's headline: the
    primary metric's uplift for the arm with the smallest p-value (the arm the verdict names) and
    the verdict. Reads stored results only; nothing is computed here."""
    current = ExperimentResult.objects.filter(
        experiment=OuterRef("experiment"), phase=OuterRef("experiment__phase")
    ).values("pk")[:1]
    stored = ExperimentResult.objects.filter(
        experiment__shop=shop, pk=Subquery(current)
    ).values_list("experiment_id", "data")
    return {experiment_id: _headline(data) for experiment_id, data in stored}


def _headline(data: dict[str, Any]) -> dict[str, Any]:
    primary = data.get("primary_metric")
    arm = arm_named(data)
    headline: dict[str, Any] = {
        "metric": (data.get("metrics") or [{}])[0].get("label", primary),
        "verdict": data.get("verdict", ""),
        "variant": None,
        "uplift": None,
        "is_significant": False,
    }
    if arm is not None:
        row = arm["metrics"][primary]
        headline |= {
            "variant": arm["name"] or arm["variant"],
            "uplift": row.get("relative"),
            "is_significant": bool(row.get("is_significant")),
        }
    return headline


def experiment_get(*, shop: Shop, experiment_id: int) -> Experiment:
    """The shop's experiment; another shop's answers 404 like a missing one."""
    experiment = (
        Experiment.objects.filter(shop=shop, pk=experiment_id).prefetch_related("variants").first()
    )
    if experiment is None:
        raise ApplicationError("No such experiment.", code="not_found", status=404)
    return experiment


def experiment_get_by_key(*, shop: Shop, key: str) -> Experiment | None:
    """The draft or running experiment with this key, else the one stopped last."""
    return (
        Experiment.objects.filter(shop=shop, key=key)
        .order_by(F("stopped_at").desc(nulls_first=True), "-pk")
        .first()
    )


def _running_read(shop_id: int) -> list[RunningExperiment]:
    return [
        RunningExperiment(
            key=e.key,
            phase=e.phase,
            unit=e.unit,
            holdout_share=e.holdout_share,
            targeting=e.targeting,
            arms=tuple(Arm(key=v.key, weight=v.weight) for v in e.variants.all()),
        )
        for e in Experiment.objects.filter(shop_id=shop_id, status=ExperimentStatus.RUNNING)
        .order_by("key")
        .prefetch_related("variants")
    ]


def experiments_running(*, shop_id: int) -> list[RunningExperiment]:
    """The shop's running experiments, from the cache. With Redis down they are read from the
    database: the snippet (every storefront page) and decide must not fail with the cache."""
    try:
        running = cache.get(running_cache_key(shop_id))
    except RedisError:
        return _running_read(shop_id)
    if running is None:
        running = _running_read(shop_id)
        with contextlib.suppress(RedisError):
            cache.set(running_cache_key(shop_id), running, CACHE_SECONDS)
    return running


# What the snippet can judge in the browser; segment and score band live in the database.
BROWSER_TARGETING = frozenset({"device", "source", "visitor"})


def experiments_snippet_config(*, shop: Shop) -> dict[str, Any]:
    """The snippet's `experiments` (events/snippet.py's SNIPPET_CONFIG_HOOKS): the running person
    experiments the browser can decide alone; nothing at all when there are none, so the snippet
    of a shop without them stays as it was. A session experiment (the browser has no session key)
    or one targeting a segment or a score band answers null in the browser: ask
    `GET /experiments/decide/` for those (docs/experiments.md, "In the browser")."""
    experiments = [
        {
            "key": e.key,
            "phase": e.phase,
            "holdout": e.holdout_share,
            "variants": [[arm.key, arm.weight] for arm in e.arms],
            "targeting": {k: v for k, v in e.targeting.items() if k in BROWSER_TARGETING},
        }
        for e in experiments_running(shop_id=shop.pk)
        if e.unit == ExperimentUnit.PERSON and set(e.targeting) <= BROWSER_TARGETING
    ]
    return {"experiments": experiments} if experiments else {}


def _traits_with_person_facts(
    *, shop: Shop, ids: UnitIds, traits: UnitTraits, running: list[RunningExperiment]
) -> UnitTraits:
    """The request's traits plus what the database knows of the person, read only as far as a
    running experiment targets it: membership of the targeted segments, the latest score."""
    segments = {e.targeting["segment"] for e in running if "segment" in e.targeting}
    wants_score = any("score_min" in e.targeting or "score_max" in e.targeting for e in running)
    person_id = person_resolve(shop=shop, anonymous_id=ids.anonymous_id, user_id=ids.user_id)
    segment_ids: frozenset[int] = frozenset()
    score = None
    if person_id is not None and segments:
        segment_ids = frozenset(
            SegmentMembership.objects.filter(
                person_id=person_id, segment_id__in=segments
            ).values_list("segment_id", flat=True)
        )
    if person_id is not None and wants_score:
        score = (
            ConversionScore.objects.filter(shop=shop, person_id=person_id)
            .order_by("-scored_at")
            .values_list("score", flat=True)
            .first()
        )
    return UnitTraits(
        device=traits.device,
        source=traits.source,
        visitor=traits.visitor,
        segment_ids=segment_ids,
        score=score,
    )


def experiments_decide(*, shop: Shop, ids: UnitIds, traits: UnitTraits) -> dict[str, str | None]:
    """Each running experiment's variant for this unit: None when held out, not targeted, or
    when the request does not carry the experiment's unit (a session id for a session test)."""
    running = experiments_running(shop_id=shop.pk)
    if any(needs_person_lookup(e.targeting) for e in running):
        traits = _traits_with_person_facts(shop=shop, ids=ids, traits=traits, running=running)
    decisions: dict[str, str | None] = {}
    for experiment in running:
        unit_id = unit_id_build(
            unit=experiment.unit,
            anonymous_id=ids.anonymous_id,
            user_id=ids.user_id,
            session_id=ids.session_id,
        )
        if unit_id is None or not targeting_admits(experiment.targeting, traits):
            decisions[experiment.key] = None
            continue
        decisions[experiment.key] = variant_assign(
            key=experiment.key,
            phase=experiment.phase,
            unit_id=unit_id,
            arms=experiment.arms,
            holdout_share=experiment.holdout_share,
        )
    return decisions
