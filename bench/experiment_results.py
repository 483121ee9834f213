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

`--db N` also measures the whole path on a migrated MariaDB database (DATABASE_URL): it loads N
exposed persons with SQL (`_sql_load`: per person a session with a page view and its
`experiment_exposure` event, add-to-cart events for 6 %, a custom event for 10 %, orders after
exposure for 5 % and in the pre-period for 3 %; the ExperimentExposure rows written directly, not
folded from the events) under a fresh bench shop, then times `units_read`, `metrics_read` and the
whole `results_document` (median of `--repeat`, after one warm-up read), and deletes the shop
(`--keep` keeps it and reuses it when it holds N units). Like the other database benches it sets
the InnoDB buffer pool to deploy's 1 GiB first (`--buffer-pool-mib`).
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

from bench.buffer_pool import buffer_pool_apply, buffer_pool_option
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


def _django_setup() -> None:
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clickserver.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench")
    django.setup()


def _sql_load(shop_id: int, experiment_id: int, units: int, seed: int) -> None:
    """N exposed persons in a handful of INSERT … SELECT statements over MariaDB's sequence
    engine (`seq_1_to_N`): the ORM's bulk_create took ~11 minutes for a million persons.

    Per person: one session holding a page view and the `experiment_exposure` event (a bounce),
    6 % an add-to-cart in the same session (not a bounce), 10 % a newsletter signup event, 5 % an
    order after exposure and 3 % one in the 14 days before (lognormal totals, μ 3.5, σ 1, by
    Box-Muller), 1 % of the orders partly refunded. Ids are given explicitly (above the
    tables' current maximum) so that every row can name its person and session without a join.
    """
    from django.db import connection

    start = START.strftime("%Y-%m-%d %H:%M:%S")
    with connection.cursor() as cursor:

        def run(sql: str, *params) -> None:
            cursor.execute(sql, params)

        def base(table: str) -> int:
            cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}")
            return int(cursor.fetchone()[0]) + 1

        run("DROP TEMPORARY TABLE IF EXISTS bench_unit")
        run(
            "CREATE TEMPORARY TABLE bench_unit (n INT PRIMARY KEY, at DATETIME(6), variant"
            " VARCHAR(16), atc DOUBLE, signup DOUBLE, buy DOUBLE, pre DOUBLE, u1 DOUBLE, u2 DOUBLE)"
        )
        # RAND(seed) seeds the statement's generator once; the other calls continue it.
        run(
            f"INSERT INTO bench_unit SELECT seq, %s + INTERVAL FLOOR(RAND(%s) * 2592000) SECOND,"
            " '',"
            f" RAND(), RAND(), RAND(), RAND(), RAND(), RAND() FROM seq_1_to_{units}",
            start,
            seed,
        )
        # Variants by weight 0.5 / 0.25 / 0.25 from one more uniform each.
        run(
            "UPDATE bench_unit SET variant = CASE WHEN u2 < 0.5 THEN 'control'"
            " WHEN u2 < 0.75 THEN 'b' ELSE 'c' END"
        )
        person, session, event, order = (
            base(t) for t in ("events_person", "events_session", "events_event", "events_order")
        )
        run(
            "INSERT INTO events_person (id, user_id, first_seen_at, last_seen_at, traits,"
            " created_at, shop_id) SELECT %s + n, '', at, at, '{}', at, %s FROM bench_unit",
            person - 1,
            shop_id,
        )
        run(
            "INSERT INTO events_session (id, started_at, ended_at, duration_seconds, event_count,"
            " pageview_count, entry_url, exit_url, referrer, utm_source, utm_medium, utm_campaign,"
            " device, browser, os, country, is_converted, revenue, is_bounce, person_id, shop_id)"
            " SELECT %s + n, at, at, 0, 2 + (atc < 0.06), 1, '/', '/', '', '', '', '', 'desktop',"
            " '', '', 'GB', 0, 0, atc >= 0.06, %s + n, %s FROM bench_unit",
            session - 1,
            person - 1,
            shop_id,
        )
        columns = (
            "id, event_id, type, anonymous_id, user_id, occurred_at, received_at, url, referrer,"
            " title, product_id, product_name, product_category, order_id, currency, utm_source,"
            " utm_medium, utm_campaign, utm_term, utm_content, user_agent, country, properties,"
            " shop_id, person_id, session_id"
        )
        common = "'', '', '', '', '', '', '', '', '', '', '', '', '', 'GB'"
        for offset, kind, where, properties in (
            (0, "page_view", "1", "'{}'"),
            (
                units,
                "experiment_exposure",
                "1",
                'CONCAT(\'{"experiment": "bench", "phase": 1, "variant": "\', variant, \'"}\')',
            ),
            (2 * units, "add_to_cart", "atc < 0.06", "'{}'"),
            (3 * units, "newsletter_signup", "signup < 0.10", "'{}'"),
        ):
            run(
                f"INSERT INTO events_event ({columns}) SELECT %s + n, CONCAT(%s, n), %s, CONCAT("
                f"'a', n), '', at, at, '/', {common}, {properties}, %s, %s + n, %s + n"
                f" FROM bench_unit WHERE {where}",
                event - 1 + offset,
                kind + "-",
                kind,
                shop_id,
                person - 1,
                session - 1,
            )
        total = "ROUND(EXP(3.5 + SQRT(-2 * LN(GREATEST(u1, 1e-12))) * COS(2 * PI() * %s)), 2)"
        for offset, where, placed, phase in (
            (0, "buy < 0.05", "at + INTERVAL FLOOR(buy * 1e7) SECOND", "buy"),
            (units, "pre < 0.03", "at - INTERVAL FLOOR(pre * 4e7) SECOND", "pre"),
        ):
            run(
                "INSERT INTO events_order (id, order_id, anonymous_id, user_id, placed_at,"
                " currency, total, refunded_amount, is_cancelled, country, source, properties,"
                " updated_at, shop_id, person_id) SELECT %s + n, CONCAT(%s, n), '', '', "
                f"{placed}, 'GBP', {total.replace('%s', phase)}, 0, 0, 'GB', 'api', '{{}}', at,"
                f" %s, %s + n FROM bench_unit WHERE {where}",
                order - 1 + offset,
                f"o{offset}-",
                shop_id,
                person - 1,
            )
        run(
            "UPDATE events_order SET refunded_amount = ROUND(total / 2, 2)"
            " WHERE shop_id = %s AND MOD(id, 100) = 0",
            shop_id,
        )
        run(
            "INSERT INTO notifications_experimentexposure (experiment_id, phase, unit_id,"
            " person_id, session_id, variant, first_exposed_at, first_event_id, exposure_count,"
            " is_seen_in_other_variant, is_outside_targeting) SELECT %s, 1, CONCAT('anon:a', n),"
            " %s + n, %s + n, variant, at, %s + n, 1, 0, 0 FROM bench_unit",
            experiment_id,
            person - 1,
            session - 1,
            event - 1 + units,
        )
        run("DROP TEMPORARY TABLE bench_unit")


def db_measure(units: int, seed: int, *, keep: bool, repeat: int) -> dict[str, float]:
    """The SQL reads and the whole document on MariaDB for `units` exposed persons."""
    from django.db import connection

    from events.models import Shop
    from notifications.experiments import services
    from notifications.experiments.rules import VariantIn
    from notifications.models import ExperimentExposure

    if connection.vendor != "mysql":
        raise SystemExit("--db needs MariaDB (DATABASE_URL=mysql://…): the loader is MariaDB SQL")
    kept = ExperimentExposure.objects.filter(experiment__shop__domain=BENCH_DOMAIN)
    if keep and kept.count() == units:
        return db_time(kept.first().experiment, {"load_s": 0.0}, repeat)
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
    _sql_load(shop.pk, experiment.pk, units, seed)
    timings = db_time(experiment, {"load_s": time.perf_counter() - started}, repeat)
    if not keep:
        shop.delete()
    return timings


def db_time(experiment, timings: dict[str, float], repeat: int) -> dict[str, float]:
    from notifications.experiments.metrics import metrics_read, units_read
    from notifications.experiments.results import results_document
    from notifications.models import ExperimentPhase

    phase = ExperimentPhase.objects.get(experiment=experiment, number=1)
    results_document(experiment=experiment, phase=phase, now=END)  # warm-up: the buffer pool
    runs: dict[str, list[float]] = {}
    for _ in range(repeat):
        started = time.perf_counter()
        read = units_read(experiment=experiment, phase=1, end=END)
        runs.setdefault("units_read_s", []).append(time.perf_counter() - started)
        started = time.perf_counter()
        metrics_read(experiment=experiment, phase=1, read=read, custom_events=["newsletter_signup"])
        runs.setdefault("metrics_read_s", []).append(time.perf_counter() - started)
        started = time.perf_counter()
        document = results_document(experiment=experiment, phase=phase, now=END)
        runs.setdefault("whole_s", []).append(time.perf_counter() - started)
        runs.setdefault("document_read_s", []).append(document["seconds"]["read"])
        runs.setdefault("document_analysis_s", []).append(document["seconds"]["analysis"])
    timings |= {name: statistics.median(values) for name, values in runs.items()}
    timings["whole_s_max"] = max(runs["whole_s"])
    return {name: round(value, 3) for name, value in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--db", type=int, default=0, help="also time the SQL reads for N units")
    parser.add_argument("--keep", action="store_true", help="keep (and reuse) the --db data")
    buffer_pool_option(parser)
    args = parser.parse_args()
    database = None
    if args.db:
        _django_setup()
        buffer_pool_apply(args.buffer_pool_mib)
        database = db_measure(args.db, args.seed, keep=args.keep, repeat=args.repeat)
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
                "buffer_pool_mib": args.buffer_pool_mib if args.db else None,
                "db": database,
            }
        )
    )


if __name__ == "__main__":
    main()
