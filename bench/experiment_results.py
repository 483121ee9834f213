"""Experiment analysis time at 1 million exposed units (issue 17: ≤ 2 s).

    python bench/experiment_results.py --units 1000000

Builds, in memory, the per-unit frame that `notifications.experiments.metrics.metrics_read`
hands to the analysis (variant, first exposure over 30 days, orders, net revenue, add-to-cart,
a custom event count and bounce, each with its 14-day pre-period value; revenue lognormal with a
heavy tail, a +3 % conversion effect in B), then times `results_analyse` (every metric of a
three-arm experiment with CUPED, AOV, winsorising at 99.9, the sequential intervals, SRM,
warnings, guardrails, power and the 30-day timeline), the verdict and the JSON clean-up. The SQL
reads that build the frame from the database are not timed here. Takes the median of `--repeat`
runs after one warm-up; prints the parts, then one JSON object on the last line.

`--db N` also measures the whole path on a migrated database (DATABASE_URL): it bulk-inserts N
exposed persons (a session with one page view each, orders for 5 %, add-to-cart events for 6 %,
ExperimentExposure rows written directly, not folded from events) under a fresh bench shop, then
times `units_read`, `metrics_read` and the whole `results_document`, and deletes the shop
(`--keep` keeps it and reuses it when it holds N units).
"""

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from notifications.experiments.analysis import (
    AnalysisConfig,
    ArmSpec,
    arm_codes,
    json_ready,
    metric_analyse,
    results_analyse,
    timeline,
)
from notifications.experiments.verdict import verdict_write

BENCH_DOMAIN = "bench-experiments.example"
START = datetime(2026, 3, 1, tzinfo=UTC)
END = datetime(2026, 3, 31, tzinfo=UTC)
ARMS = (
    ArmSpec("control", "A", 0.5, True),
    ArmSpec("b", "B", 0.25, False),
    ArmSpec("c", "C", 0.25, False),
)
CONFIG = AnalysisConfig(
    arms=ARMS,
    primary={"kind": "conversion"},
    secondary=(
        {"kind": "revenue_per_unit"},
        {"kind": "aov"},
        {"kind": "add_to_cart_rate"},
        {"kind": "custom_event_count", "event": "newsletter_signup"},
    ),
    guardrails=({"kind": "bounce"},),
    winsor_percentile=99.9,
    is_sequential=True,
    planned_mde=0.05,
)


def frame_build(units: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    variant = rng.choice(["control", "b", "c"], size=units, p=[0.5, 0.25, 0.25])
    rate = np.where(variant == "b", 0.0515, 0.05)
    orders = rng.binomial(2, rate / 2).astype(np.float64)
    pre_orders = rng.binomial(2, 0.03, units).astype(np.float64)
    basket = rng.lognormal(3.5, 1.0, units)
    return pd.DataFrame(
        {
            "variant": variant,
            "first_exposed_at": pd.Timestamp("2026-03-01")
            + pd.to_timedelta(rng.integers(0, 30 * 86400, units), unit="s"),
            "orders": orders,
            "revenue": orders * basket,
            "pre_orders": pre_orders,
            "pre_revenue": pre_orders * rng.lognormal(3.5, 1.0, units),
            "add_to_cart": rng.binomial(3, 0.06, units).astype(np.float64),
            "pre_add_to_cart": rng.binomial(3, 0.05, units).astype(np.float64),
            "event:newsletter_signup": rng.poisson(0.2, units).astype(np.float64),
            "pre_event:newsletter_signup": rng.poisson(0.2, units).astype(np.float64),
            "bounce": (rng.random(units) < 0.4).astype(np.float64),
        }
    )


def once(frame: pd.DataFrame, exposed: list[int]) -> dict[str, float]:
    started = time.perf_counter()
    document = results_analyse(frame=frame, exposed=exposed, config=CONFIG, start=START, end=END)
    document["verdict"] = verdict_write(document)
    json_ready(document)
    return {"total": time.perf_counter() - started}


def parts(frame: pd.DataFrame) -> dict[str, float]:
    """Each piece alone, to see where the time goes."""
    timings = {}
    started = time.perf_counter()
    codes = arm_codes(frame, ARMS)
    timings["arm_codes"] = time.perf_counter() - started
    for metric in (CONFIG.primary, *CONFIG.secondary, *CONFIG.guardrails):
        started = time.perf_counter()
        metric_analyse(frame=frame, codes=codes, metric=metric, config=CONFIG)
        timings[f"metric {metric['kind']}"] = time.perf_counter() - started
    started = time.perf_counter()
    timeline(frame=frame, codes=codes, metric=CONFIG.primary, config=CONFIG, start=START)
    timings["timeline (30 days)"] = time.perf_counter() - started
    return timings


def db_measure(units: int, seed: int, *, keep: bool) -> dict[str, float]:
    """The SQL reads and the whole document on MariaDB for `units` exposed persons."""
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clickserver.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench")
    django.setup()
    from events.models import Event, Order, Person, Session, Shop
    from notifications.experiments import services
    from notifications.experiments.rules import VariantIn
    from notifications.models import ExperimentExposure

    rng = np.random.default_rng(seed)
    kept = ExperimentExposure.objects.filter(experiment__shop__domain=BENCH_DOMAIN)
    if keep and kept.count() == units:
        return db_time(kept.first().experiment, {"load_s": 0.0})
    Shop.objects.filter(domain=BENCH_DOMAIN).delete()
    shop = Shop.objects.create(domain=BENCH_DOMAIN)
    experiment = services.experiment_create(
        shop=shop,
        key="bench",
        name="bench",
        unit="person",
        primary_metric=CONFIG.primary,
        secondary_metrics=list(CONFIG.secondary),
        guardrail_metrics=list(CONFIG.guardrails),
        variants=[VariantIn(a.key, a.weight, a.is_control, a.name) for a in ARMS],
    )
    experiment = services.experiment_start(experiment=experiment, now=START)
    started = time.perf_counter()
    seconds = rng.integers(0, 30 * 86400, units)
    at = [START + pd.Timedelta(seconds=int(s)) for s in seconds]
    persons = Person.objects.bulk_create(
        [Person(shop=shop, first_seen_at=t, last_seen_at=t) for t in at], batch_size=5000
    )
    sessions = Session.objects.bulk_create(
        [
            Session(shop=shop, person=p, started_at=t, ended_at=t)
            for p, t in zip(persons, at, strict=True)
        ],
        batch_size=5000,
    )
    Event.objects.bulk_create(
        [
            Event(shop=shop, event_id=f"pv-{i}", type="page_view", occurred_at=t, received_at=t,
                  person=p, session=s)
            for i, (p, s, t) in enumerate(zip(persons, sessions, at, strict=True))
        ]
        + [
            Event(shop=shop, event_id=f"atc-{i}", type="add_to_cart", occurred_at=at[i],
                  received_at=at[i], person=persons[i], session=sessions[i])
            for i in np.flatnonzero(rng.random(units) < 0.06)
        ],
        batch_size=5000,
    )  # fmt: skip
    Order.objects.bulk_create(
        [
            Order(shop=shop, order_id=f"o-{i}", person=persons[i], placed_at=at[i],
                  total=round(float(rng.lognormal(3.5, 1.0)), 2))
            for i in np.flatnonzero(rng.random(units) < 0.05)
        ],
        batch_size=5000,
    )  # fmt: skip
    variants = rng.choice([a.key for a in ARMS], size=units, p=[a.weight for a in ARMS])
    ExperimentExposure.objects.bulk_create(
        [
            ExperimentExposure(experiment=experiment, phase=1, unit_id=f"anon:{p.pk}", person=p,
                               session=s, variant=v, first_exposed_at=t, first_event_id=0,
                               exposure_count=1)
            for p, s, v, t in zip(persons, sessions, variants, at, strict=True)
        ],
        batch_size=5000,
    )  # fmt: skip
    timings = db_time(experiment, {"load_s": time.perf_counter() - started})
    if not keep:
        shop.delete()
    return timings


def db_time(experiment, timings: dict[str, float]) -> dict[str, float]:
    from notifications.experiments.metrics import metrics_read, units_read
    from notifications.experiments.results import results_document
    from notifications.models import ExperimentPhase

    phase = ExperimentPhase.objects.get(experiment=experiment, number=1)
    started = time.perf_counter()
    read = units_read(experiment=experiment, phase=1, end=END)
    timings["units_read_s"] = time.perf_counter() - started
    started = time.perf_counter()
    metrics_read(experiment=experiment, phase=1, read=read, custom_events=["newsletter_signup"])
    timings["metrics_read_s"] = time.perf_counter() - started
    started = time.perf_counter()
    document = results_document(experiment=experiment, phase=phase, now=END)
    timings["whole_s"] = time.perf_counter() - started
    timings["document_read_s"] = document["seconds"]["read"]
    timings["document_analysis_s"] = document["seconds"]["analysis"]
    return {name: round(value, 3) for name, value in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--db", type=int, default=0, help="also time the SQL reads for N units")
    parser.add_argument("--keep", action="store_true", help="keep (and reuse) the --db data")
    args = parser.parse_args()
    database = db_measure(args.db, args.seed, keep=args.keep) if args.db else None
    started = time.perf_counter()
    frame = frame_build(args.units, args.seed)
    built = time.perf_counter() - started
    exposed = frame["variant"].value_counts().reindex([a.key for a in ARMS]).tolist()
    once(frame, exposed)  # warm-up: imports, scipy's first calls
    runs = [once(frame, exposed)["total"] for _ in range(args.repeat)]
    pieces = parts(frame)
    for name, seconds in pieces.items():
        print(f"{name:<40} {seconds * 1000:8.1f} ms", file=sys.stderr)
    print(
        json.dumps(
            {
                "bench": "experiment_results",
                "units": args.units,
                "arms": len(ARMS),
                "metrics": 1 + len(CONFIG.secondary) + len(CONFIG.guardrails),
                "input": "in-memory per-unit frame (the SQL reads are not timed)",
                "build_s": round(built, 3),
                "analysis_s_median": round(statistics.median(runs), 3),
                "analysis_s_max": round(max(runs), 3),
                "parts_ms": {name: round(s * 1000, 1) for name, s in pieces.items()},
                "target_s": 2.0,
                "db_units": args.db or None,
                "db": database,
            }
        )
    )


if __name__ == "__main__":
    main()
