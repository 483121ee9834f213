"""Results: analyse a phase of an experiment and store the document (`ExperimentResult`).

`experiments_refresh` is what the pipeline follow-up and beat's sweep run for a shop: fold the new
exposure events (`exposures.exposures_extract`, from the `experiments` watermark), then recompute
the results that are stale. A running experiment's result is stale once older than
`RESULTS_MAX_AGE` (orders and refunds keep arriving without new exposures); a stopped one's until
a result computed `RESULTS_FINAL_AFTER` after its stop exists (late events and refunds of its last
days), then it is final. docs/experiments.md, "Results".
"""

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction

from clickserver.errors import ApplicationError
from notifications.experiments.analysis import AnalysisConfig, ArmSpec, json_ready, results_analyse
from notifications.experiments.exposures import exposures_extract
from notifications.experiments.metrics import metrics_read, units_read
from notifications.experiments.verdict import verdict_write
from notifications.models import (
    Experiment,
    ExperimentPhase,
    ExperimentResult,
    ExperimentStatus,
)

RESULTS_MAX_AGE = timedelta(minutes=5)
RESULTS_FINAL_AFTER = timedelta(days=7)


def _config(experiment: Experiment, phase: ExperimentPhase) -> AnalysisConfig:
    names = dict(experiment.variants.values_list("key", "name"))
    return AnalysisConfig(
        arms=tuple(
            ArmSpec(
                key=v["key"],
                name=names.get(v["key"], ""),
                weight=v["weight"],
                is_control=v["is_control"],
            )
            for v in phase.variants
        ),
        primary=experiment.primary_metric,
        secondary=tuple(experiment.secondary_metrics),
        guardrails=tuple(experiment.guardrail_metrics),
        winsor_percentile=experiment.winsor_percentile,
        is_sequential=experiment.is_sequential,
        planned_mde=experiment.planned_mde,
    )


def _custom_events(experiment: Experiment) -> list[str]:
    return sorted({m["event"] for m in experiment.metrics if m["kind"] == "custom_event_count"})


def results_document(
    *, experiment: Experiment, phase: ExperimentPhase, now: datetime
) -> dict[str, Any]:
    """Read and analyse one phase; the window of every unit ends at the phase's end or now."""
    end = min(phase.ended_at or now, now)
    started = time.monotonic()
    read = units_read(experiment=experiment, phase=phase.number, end=end)
    frame = metrics_read(
        experiment=experiment,
        phase=phase.number,
        read=read,
        custom_events=_custom_events(experiment),
    )
    read_seconds = time.monotonic() - started
    config = _config(experiment, phase)
    document = results_analyse(
        frame=frame,
        exposed=[read.exposed.get(arm.key, 0) for arm in config.arms],
        config=config,
        start=phase.started_at,
        end=end,
    )
    document |= {
        "experiment": experiment.pk,
        "key": experiment.key,
        "phase": phase.number,
        "window": {"start": phase.started_at.isoformat(), "end": end.isoformat()},
        # A stopped experiment or an ended phase collects no more units: its verdict is final.
        "is_collecting": experiment.status == ExperimentStatus.RUNNING and phase.ended_at is None,
        "exposures": {
            "units": sum(read.exposed.values()),
            "analysed": len(frame),
            "excluded": read.exclusions.as_dict(),
        },
        "seconds": {"read": read_seconds, "analysis": time.monotonic() - started - read_seconds},
    }
    document["verdict"] = verdict_write(document)
    return json_ready(document)


def experiment_results_compute(
    *, experiment: Experiment, now: datetime, phase: int | None = None
) -> ExperimentResult:
    """Analyse a phase (the current one by default) and store it as its `ExperimentResult`."""
    number = phase if phase is not None else experiment.phase
    found = ExperimentPhase.objects.filter(experiment=experiment, number=number).first()
    if found is None:
        raise ApplicationError(
            "The experiment has no such phase; a draft has no results.",
            code="not_found",
            status=404,
            fields={"phase": ["no such phase"]},
        )
    document = results_document(experiment=experiment, phase=found, now=now)
    with transaction.atomic():
        result, _ = ExperimentResult.objects.update_or_create(
            experiment=experiment,
            phase=number,
            defaults={"data": document, "computed_at": now},
        )
    return result


def experiment_result_ensure(
    *, experiment: Experiment, now: datetime, phase: int | None = None
) -> ExperimentResult:
    """The stored result of the phase, computed now when there is none yet."""
    number = phase if phase is not None else experiment.phase
    stored = ExperimentResult.objects.filter(experiment=experiment, phase=number).first()
    return stored or experiment_results_compute(experiment=experiment, now=now, phase=number)


def _is_stale(experiment: Experiment, result: ExperimentResult | None, now: datetime) -> bool:
    if result is None:
        return True
    if experiment.status == ExperimentStatus.RUNNING:
        return result.computed_at <= now - RESULTS_MAX_AGE
    stopped = experiment.stopped_at or now
    return result.computed_at < stopped + RESULTS_FINAL_AFTER and (
        result.computed_at <= now - RESULTS_MAX_AGE or result.computed_at < stopped
    )


@dataclass(frozen=True, slots=True)
class RefreshResult:
    exposure_events: int
    results: int


def experiments_refresh(*, shop_id: int, now: datetime) -> RefreshResult:
    """Fold new exposures, then recompute each started experiment's stale current-phase result.

    New exposures make a result stale at once, even a final one: exposures sent late (a storefront
    or an import catching up) would otherwise never reach a stopped experiment's result.
    """
    extracted = exposures_extract(shop_id=shop_id, now=now)
    computed = 0
    experiments = Experiment.objects.filter(shop_id=shop_id).exclude(status=ExperimentStatus.DRAFT)
    stored = {
        r.experiment_id: r
        # Only the stamps: this runs after every pipeline batch, and `data` is the whole document.
        for r in ExperimentResult.objects.filter(experiment__shop_id=shop_id)
        .defer("data")
        .order_by("phase")
    }
    for experiment in experiments:
        result = stored.get(experiment.pk)
        if result is not None and result.phase != experiment.phase:
            result = None
        if experiment.pk in extracted.experiment_ids or _is_stale(experiment, result, now):
            experiment_results_compute(experiment=experiment, now=now)
            computed += 1
    return RefreshResult(exposure_events=extracted.events, results=computed)


def shops_with_experiments(*, now: datetime) -> list[int]:
    """Shops with a running experiment or one stopped less than RESULTS_FINAL_AFTER ago."""
    return sorted(
        set(
            Experiment.objects.filter(status=ExperimentStatus.RUNNING).values_list(
                "shop_id", flat=True
            )
        )
        | set(
            Experiment.objects.filter(
                status=ExperimentStatus.STOPPED,
                stopped_at__gte=now - RESULTS_FINAL_AFTER - RESULTS_MAX_AGE,
            ).values_list("shop_id", flat=True)
        )
    )
