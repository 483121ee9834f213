"""Every write to experiments: create, edit, start, stop, and a change of variants (a new phase).

Each service validates everything first and raises one `ApplicationError` carrying every field
error, then writes inside `transaction.atomic` with the experiment row locked, so a rejected call
saves nothing and two concurrent calls cannot both start or re-phase an experiment. The running
experiments that `GET /experiments/decide/` reads are cached per shop; every write drops that
cache once it commits.
"""

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from django.core.cache import cache
from django.db import IntegrityError, transaction

from clickserver.errors import ApplicationError
from events.models import Shop
from notifications.experiments import rules
from notifications.experiments.rules import VariantIn
from notifications.experiments.selectors import running_cache_key
from notifications.models import (
    Experiment,
    ExperimentPhase,
    ExperimentStatus,
    ExperimentUnit,
    Variant,
)
from segments.models import Segment

# Analysis settings: editable while running (they change how the data is read, not who gets what).
ANALYSIS_FIELDS = frozenset(
    {
        "name",
        "hypothesis",
        "secondary_metrics",
        "guardrail_metrics",
        "winsor_percentile",
        "is_sequential",
        "planned_mde",
    }
)
# Who is in the experiment and what it is judged on: fixed once it runs.
DESIGN_FIELDS = frozenset({"key", "unit", "holdout_share", "targeting", "primary_metric"})
# Every field of a definition, in the order the admin form and the API show them.
DEFINITION_FIELDS = (
    "key",
    "name",
    "hypothesis",
    "unit",
    "holdout_share",
    "targeting",
    "primary_metric",
    "secondary_metrics",
    "guardrail_metrics",
    "winsor_percentile",
    "is_sequential",
    "planned_mde",
)
WINSOR_RANGE = (50.0, 100.0)
NAME_MAX = 255


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _field_clean(*, shop: Shop, name: str, value: Any) -> tuple[Any, list[str]]:
    """One field's cleaned value and its errors; a dispatch over the fields, hence the returns."""
    if name == "key":
        ok = isinstance(value, str) and rules.SLUG.match(value) is not None
        return value, [] if ok else ["a slug of 1-64 letters, digits, '-' or '_'"]
    if name == "name":
        ok = isinstance(value, str) and 0 < len(value.strip()) <= NAME_MAX
        return (value.strip() if ok else value), [] if ok else [f"1-{NAME_MAX} characters"]
    if name == "hypothesis":
        return value, [] if isinstance(value, str) else ["text"]
    if name == "unit":
        return value, [] if value in ExperimentUnit.values else [f"one of {ExperimentUnit.values}"]
    if name == "holdout_share":
        share = _number(value)
        ok = share is not None and 0 <= share < 1
        return share, [] if ok else ["a number from 0 up to (not including) 1"]
    if name == "targeting":
        targeting, errors = rules.targeting_validate(value)
        segment = targeting.get("segment")
        if segment is not None and not Segment.objects.filter(shop=shop, pk=segment).exists():
            errors["targeting.segment"] = ["no such segment in this shop"]
        return targeting, [f"{field}: {e}" for field, es in errors.items() for e in es]
    if name == "primary_metric":
        return rules.metric_validate(value)
    if name in ("secondary_metrics", "guardrail_metrics"):
        return rules.metrics_validate(value)
    if name == "winsor_percentile":
        percentile = _number(value)
        low, high = WINSOR_RANGE
        ok = percentile is not None and low <= percentile <= high
        return percentile, [] if ok else [f"a percentile from {low:g} to {high:g}"]
    if name == "is_sequential":
        return value, [] if isinstance(value, bool) else ["true or false"]
    if name == "planned_mde":
        mde = _number(value)
        ok = value is None or (mde is not None and mde > 0)
        return mde, [] if ok else ["a positive relative effect (0.05 = +5 %) or null"]
    return value, ["unknown field"]


def _fields_clean(*, shop: Shop, data: Mapping[str, Any]) -> dict[str, Any]:
    cleaned, errors = {}, {}
    for name, value in data.items():
        cleaned[name], problems = _field_clean(shop=shop, name=name, value=value)
        if problems:
            errors[name] = problems
    if errors:
        raise ApplicationError("Invalid experiment.", fields=errors)
    return cleaned


def _variants_clean(variants: Sequence[VariantIn]) -> list[VariantIn]:
    cleaned, errors = rules.variants_validate(variants)
    if errors:
        raise ApplicationError("Invalid variants.", fields=errors)
    return cleaned


def _key_in_use(key: str) -> ApplicationError:
    return ApplicationError(
        f"A draft or running experiment already uses the key {key!r}; stop it first.",
        code="conflict",
        fields={"key": ["in use by a draft or running experiment"]},
    )


def _key_check_free(*, shop: Shop, key: str, exclude_id: int | None = None) -> None:
    live = Experiment.objects.filter(shop=shop, live_key=key)
    if exclude_id is not None:
        live = live.exclude(pk=exclude_id)
    if live.exists():
        raise _key_in_use(key)


def _key_conflict(exc: IntegrityError, key: str) -> ApplicationError:
    """The race `_key_check_free` cannot see: a concurrent write of the same key."""
    if "uniq_experiment_live_key" not in str(exc):
        raise exc
    return _key_in_use(key)


def _cache_drop_on_commit(shop_id: int) -> None:
    transaction.on_commit(lambda: cache.delete(running_cache_key(shop_id)))


def _variants_replace(*, experiment: Experiment, variants: Sequence[VariantIn]) -> None:
    experiment.variants.all().delete()
    Variant.objects.bulk_create(
        Variant(
            experiment=experiment,
            key=v.key,
            name=v.name,
            weight=v.weight,
            is_control=v.is_control,
            position=position,
        )
        for position, v in enumerate(variants)
    )


def _phase_open(*, experiment: Experiment, now: datetime) -> None:
    experiment.phase += 1
    ExperimentPhase.objects.create(
        experiment=experiment,
        number=experiment.phase,
        started_at=now,
        holdout_share=experiment.holdout_share,
        variants=[
            {"key": v.key, "weight": v.weight, "is_control": v.is_control}
            for v in experiment.variants.order_by("position")
        ],
    )


def _phase_close(*, experiment: Experiment, now: datetime) -> None:
    ExperimentPhase.objects.filter(experiment=experiment, number=experiment.phase).update(
        ended_at=now
    )


def _locked(experiment: Experiment) -> Experiment:
    return Experiment.objects.select_for_update().get(pk=experiment.pk)


def _stopped_refuse(experiment: Experiment, action: str) -> None:
    if experiment.status == ExperimentStatus.STOPPED:
        raise ApplicationError(
            f"A stopped experiment cannot be {action}; create a new one.",
            fields={"status": ["stopped"]},
        )


def _design_change_refuse(experiment: Experiment, fields: Mapping[str, Any]) -> None:
    if experiment.status == ExperimentStatus.RUNNING and set(fields) & DESIGN_FIELDS:
        raise ApplicationError(
            "A running experiment's design cannot change; stop it and create a new one.",
            fields={name: ["fixed while running"] for name in sorted(set(fields) & DESIGN_FIELDS)},
        )


def experiment_validate(
    *, shop: Shop, data: Mapping[str, Any], experiment: Experiment | None = None
) -> None:
    """Raise the error that creating an experiment from `data` (or, given `experiment`, updating
    it with `data`) would raise, writing nothing: the admin's form shows it field by field before
    it calls `experiment_create` or `experiment_update`. Variants are `rules.variants_validate`'s.
    """
    if experiment is not None:
        _stopped_refuse(experiment, "edited")
        _design_change_refuse(experiment, data)
    cleaned = _fields_clean(shop=shop, data=data)
    if "key" in cleaned:
        _key_check_free(
            shop=shop, key=cleaned["key"], exclude_id=experiment.pk if experiment else None
        )


def experiment_create(
    *,
    shop: Shop,
    key: str,
    name: str,
    unit: str,
    primary_metric: Mapping[str, Any],
    variants: Sequence[VariantIn],
    hypothesis: str = "",
    holdout_share: float = 0.0,
    targeting: Mapping[str, Any] | None = None,
    secondary_metrics: Sequence[Mapping[str, Any]] = (),
    guardrail_metrics: Sequence[Mapping[str, Any]] = (),
    winsor_percentile: float = 99.9,
    is_sequential: bool = True,
    planned_mde: float | None = None,
) -> Experiment:
    """A draft experiment with its variants (weights normalised to sum to 1)."""
    data = {
        "key": key,
        "name": name,
        "unit": unit,
        "primary_metric": primary_metric,
        "hypothesis": hypothesis,
        "holdout_share": holdout_share,
        "targeting": targeting if targeting is not None else {},
        "secondary_metrics": list(secondary_metrics),
        "guardrail_metrics": list(guardrail_metrics),
        "winsor_percentile": winsor_percentile,
        "is_sequential": is_sequential,
        "planned_mde": planned_mde,
    }
    errors: dict[str, Any] = {}
    cleaned: dict[str, Any] = {}
    try:
        cleaned = _fields_clean(shop=shop, data=data)
    except ApplicationError as exc:
        errors |= exc.fields
    try:
        clean_variants = _variants_clean(variants)
    except ApplicationError as exc:
        errors |= exc.fields
    if errors:
        raise ApplicationError("Invalid experiment.", fields=errors)
    _key_check_free(shop=shop, key=key)
    try:
        with transaction.atomic():
            experiment = Experiment.objects.create(shop=shop, live_key=key, **cleaned)
            _variants_replace(experiment=experiment, variants=clean_variants)
            _cache_drop_on_commit(shop.pk)
    except IntegrityError as exc:
        raise _key_conflict(exc, key) from exc
    return experiment


def experiment_update(
    *, experiment: Experiment, data: Mapping[str, Any], now: datetime
) -> Experiment:
    """Edit fields (and `variants`, a list of VariantIn) of a draft or running experiment.

    While running only the analysis settings may change, and new variants or weights start a new
    phase (`experiment_variants_change`); a stopped experiment is read-only.
    """
    unknown = set(data) - ANALYSIS_FIELDS - DESIGN_FIELDS - {"variants"}
    if unknown:
        raise ApplicationError(
            "Unknown fields.", fields={name: ["unknown field"] for name in sorted(unknown)}
        )
    try:
        with transaction.atomic():
            experiment = _locked(experiment)
            _stopped_refuse(experiment, "edited")
            fields = {name: value for name, value in data.items() if name != "variants"}
            _design_change_refuse(experiment, fields)
            cleaned = _fields_clean(shop=experiment.shop, data=fields)
            if "key" in cleaned:
                _key_check_free(shop=experiment.shop, key=cleaned["key"], exclude_id=experiment.pk)
                cleaned["live_key"] = cleaned["key"]
            for name, value in cleaned.items():
                setattr(experiment, name, value)
            experiment.save()
            if "variants" in data:
                _variants_change(experiment=experiment, variants=data["variants"], now=now)
            _cache_drop_on_commit(experiment.shop_id)
    except IntegrityError as exc:
        raise _key_conflict(exc, str(data.get("key"))) from exc
    return experiment


def _variants_change(
    *, experiment: Experiment, variants: Sequence[VariantIn], now: datetime
) -> None:
    """Replace the variants of a locked draft or running experiment; running → a new phase."""
    clean = _variants_clean(variants)
    current = [
        (v.key, v.weight, v.is_control, v.name) for v in experiment.variants.order_by("position")
    ]
    if current == [(v.key, v.weight, v.is_control, v.name) for v in clean]:
        return
    _variants_replace(experiment=experiment, variants=clean)
    if experiment.status == ExperimentStatus.RUNNING:
        _phase_close(experiment=experiment, now=now)
        _phase_open(experiment=experiment, now=now)
        experiment.save(update_fields=["phase", "updated_at"])


def experiment_variants_change(
    *, experiment: Experiment, variants: Sequence[VariantIn], now: datetime
) -> Experiment:
    """New variants or weights: on a draft a plain edit, on a running experiment a new phase.

    The old phase ends at `now` and the next one starts there, with a new assignment hash (the
    phase number is part of it), so each phase is analysed on its own. The same variants again
    change nothing.
    """
    with transaction.atomic():
        experiment = _locked(experiment)
        _stopped_refuse(experiment, "edited")
        _variants_change(experiment=experiment, variants=variants, now=now)
        _cache_drop_on_commit(experiment.shop_id)
    return experiment


def experiment_start(*, experiment: Experiment, now: datetime) -> Experiment:
    """draft → running: phase 1 starts at `now` with the current variants."""
    with transaction.atomic():
        experiment = _locked(experiment)
        _stopped_refuse(experiment, "started again")
        if experiment.status == ExperimentStatus.RUNNING:
            raise ApplicationError(
                "The experiment is already running.", fields={"status": ["running"]}
            )
        experiment.status = ExperimentStatus.RUNNING
        experiment.started_at = now
        _phase_open(experiment=experiment, now=now)
        experiment.save()
        _cache_drop_on_commit(experiment.shop_id)
    return experiment


def experiment_stop(*, experiment: Experiment, now: datetime) -> Experiment:
    """running → stopped (its phase ends at `now`), or a draft discarded; frees the key."""
    with transaction.atomic():
        experiment = _locked(experiment)
        _stopped_refuse(experiment, "stopped again")
        if experiment.started_at is not None and now < experiment.started_at:
            raise ApplicationError(
                "The stop time is before the start time.", fields={"stopped_at": ["before start"]}
            )
        if experiment.status == ExperimentStatus.RUNNING:
            _phase_close(experiment=experiment, now=now)
        experiment.status = ExperimentStatus.STOPPED
        experiment.stopped_at = now
        experiment.live_key = None
        experiment.save()
        _cache_drop_on_commit(experiment.shop_id)
    return experiment
