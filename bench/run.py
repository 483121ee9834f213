"""Run the benchmarks, repeat each, and record median and spread next to each target.

`make bench` (--quick, about 5 minutes) and `make bench-full` (--full: the 10-million-event query
run and longer load runs). Each benchmark script prints one JSON object on its last line; this
runner repeats it, keeps every raw result in bench/results/, and rewrites the table between the
markers in bench/README.md with the date, the machine and each figure next to its target.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


@dataclass(frozen=True)
class Figure:
    label: str
    path: str  # dotted path into the script's JSON
    target: float
    higher_is_better: bool
    unit: str


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str
    quick: list[str]
    full: list[str]
    figures: list[Figure]
    repeats_quick: int = 1
    repeats_full: int = 3


BENCHMARKS = [
    Benchmark(
        "ingest",
        "ingest.py",
        ["--seconds", "5", "--raw-rows", "50000"],
        ["--seconds", "15", "--raw-rows", "200000"],
        [
            Figure(
                "single-event requests/s (max)",
                "single_event_max.requests_per_s",
                3000,
                True,
                "req/s",
            ),
            Figure(
                "single-event p99 at 70 % load", "single_event_at_70pct.p99_ms", 30, False, "ms"
            ),
            Figure(
                "single-event CPU per request: gunicorn workers",
                "single_event_max.workers_cpu_ms_per_request",
                0,
                False,
                "ms",
            ),
            Figure(
                "single-event CPU per request: MariaDB",
                "single_event_max.mariadb_cpu_ms_per_request",
                0,
                False,
                "ms",
            ),
            Figure("batched events/s durable", "batched_100.events_per_s_durable", 0, True, "ev/s"),
            Figure("LOAD DATA rows/s (same run)", "raw.load_data_rows_per_s", 0, True, "rows/s"),
            Figure("batched ÷ LOAD DATA", "ratio_to_load_data", 0.5, True, "×"),
        ],
    ),
    Benchmark(
        "pipeline",
        "pipeline.py",
        ["--events", "50000", "--persons", "2500", "--lag-rate", "2000", "--lag-seconds", "15"],
        ["--events", "1000000", "--persons", "50000", "--lag-rate", "2000", "--lag-seconds", "30"],
        [
            Figure("events/s through sessions and identity", "events_per_s", 50000, True, "ev/s"),
            Figure(
                "assignment UPDATE rows/s (same run)", "raw_assign.rows_per_s", 0, True, "rows/s"
            ),
            Figure("pipeline ÷ assignment UPDATE", "ratio_to_raw_assign", 0, True, "×"),
            Figure(
                "same UPDATE in place (ids → ids) rows/s",
                "raw_assign.in_place_rows_per_s",
                0,
                True,
                "rows/s",
            ),
            Figure("lag p95 at 2,000 events/s (Celery worker)", "lag.p95_s", 5, False, "s"),
        ],
    ),
    Benchmark(
        "freshness",
        "freshness.py",
        ["--rate", "2000", "--seconds", "30"],
        ["--rate", "2000", "--seconds", "90"],
        [
            Figure("202 → /analytics/kpis/ p95 at 2,000 events/s", "kpis.p95_s", 10, False, "s"),
            Figure(
                "202 → /analytics/session_count/ p95 at 2,000 events/s",
                "session_count.p95_s",
                10,
                False,
                "s",
            ),
            Figure("202 → /analytics/kpis/ p50", "kpis.p50_s", 0, False, "s"),
        ],
    ),
    Benchmark(
        "campaign_latency",
        "campaign_latency.py",
        ["--rate", "2000", "--seconds", "30"],
        ["--rate", "2000", "--seconds", "90"],
        [
            Figure(
                "band event → decision at /notifications/pending/ p95 at 2,000 events/s",
                "p95_s",
                10,
                False,
                "s",
            ),
            Figure("band event → decision p50", "p50_s", 0, False, "s"),
            Figure("band event → decision p99", "p99_s", 0, False, "s"),
        ],
    ),
    Benchmark(
        "scoring",
        "scoring.py",
        ["--sessions", "5000"],
        ["--sessions", "20000"],
        [
            Figure("sessions/s batched", "sessions_per_s", 5000, True, "sessions/s"),
            Figure("single session p99", "single_session_ms.p99", 10, False, "ms"),
        ],
    ),
    Benchmark(
        "queries",
        "queries.py",
        ["--events", "100000", "--repeat", "20"],
        # --keep: a run that finds the 10 M events of an earlier one (loading them takes about
        # 20 minutes here) reuses them and rebuilds the rollups.
        ["--events", "10000000", "--repeat", "20", "--keep"],
        [
            Figure("worst endpoint p95, cold", "summary.worst_cold_p95_ms", 50, False, "ms"),
            Figure("worst endpoint p95, warm", "summary.worst_warm_p95_ms", 5, False, "ms"),
            Figure("30-day 3-step funnel p95", "summary.funnel_30d_p95_ms", 300, False, "ms"),
            Figure("rollup rebuild", "summary.rollups_rebuild_s", 0, False, "s"),
        ],
        # One 10 M run in full mode: each endpoint is already sampled 20 times cold and 40 times
        # warm inside it, and a second rebuild would add another half hour.
        repeats_full=1,
    ),
]


def lookup(data: dict, path: str) -> float:
    value = data
    for key in path.split("."):
        value = value[key]
    return float(value)


def machine() -> dict:
    def version(command: list[str]) -> str:
        if not shutil.which(command[0]):
            return "absent"
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        return (done.stdout or done.stderr).strip().splitlines()[0][:80]

    memory_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "mariadb": version(["mariadb", "--version"]),
        "redis": version(["redis-server", "--version"]),
        "load_average_before": os.getloadavg()[0],
    }


# Production-like services for every script (ingest.py manages its own database).
BENCH_ENV = {
    **os.environ,
    "DATABASE_URL": "mysql://root@127.0.0.1:3306/clickserver_bench",
    "REDIS_URL": "redis://127.0.0.1:6379/9",
    "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
    "CACHE_KEY_PREFIX": "bench",
    "DJANGO_SECRET_KEY": "bench",
    "DJANGO_SECURE_SSL_REDIRECT": "0",  # the benches speak plain HTTP to gunicorn
    "MODEL_DIR": str(ROOT / "var" / "bench-models"),
}


def prepare_database() -> None:
    subprocess.run(
        ["mysql", "-uroot", "-h127.0.0.1", "-e", "CREATE DATABASE IF NOT EXISTS clickserver_bench "
         "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"],
        check=True,
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env=BENCH_ENV,
        check=True,
    )


def last_json(output: str) -> dict:
    """The script's result: its whole output as JSON, or else its last line."""
    try:
        return json.loads(output)
    except json.JSONDecodeError:
        return json.loads(output.strip().splitlines()[-1])


def run(benchmark: Benchmark, full: bool) -> list[dict]:
    args = benchmark.full if full else benchmark.quick
    results = []
    for attempt in range(benchmark.repeats_full if full else benchmark.repeats_quick):
        print(f"bench: {benchmark.name} run {attempt + 1}", file=sys.stderr, flush=True)
        done = subprocess.run(
            [sys.executable, str(BENCH / benchmark.script), *args],
            cwd=ROOT,
            env=BENCH_ENV,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            raise BenchmarkFailed(f"bench: {benchmark.name} failed (exit {done.returncode})")
        results.append(last_json(done.stdout))
    return results


class BenchmarkFailed(Exception):
    """One script failed; the others still run and their results are still written."""


def number(value: float) -> str:
    """Three significant figures, with thousands separators rather than an exponent."""
    rounded = float(f"{value:.3g}")
    return f"{rounded:g}" if abs(rounded) < 1000 else f"{rounded:,.0f}"


def table(summary: dict) -> str:
    lines = [
        f"Run {summary['date']} ({summary['mode']}), {summary['machine']['cores']} cores, "
        f"{summary['machine']['memory_gib']} GiB, Python {summary['machine']['python']}, "
        f"{summary['machine']['mariadb']}; load average before: "
        f"{summary['machine']['load_average_before']:.2f}.",
        "",
        "| benchmark | figure | median | spread (min–max) | target | met |",
        "|---|---|---|---|---|---|",
    ]
    if summary["failed"]:
        lines[1:1] = ["", f"Failed, no figures: {', '.join(summary['failed'])}."]
    for row in summary["figures"]:
        target = (">= " if row["higher_is_better"] else "<= ") + f"{row['target']:g}"
        met = "yes" if row["met"] else "no"
        if not row["target"]:
            target, met = "—", "—"
        lines.append(
            f"| {row['benchmark']} | {row['label']} | {number(row['median'])} {row['unit']} | "
            f"{number(row['min'])}–{number(row['max'])} | {target} | {met} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true")
    mode.add_argument("--full", action="store_true")
    parser.add_argument("--only", nargs="*", help="benchmark names to run")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("bench: wrk is missing (apt-get install wrk)")

    summary = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "full" if args.full else "quick",
        "machine": machine(),
        "raw": {},
        "figures": [],
    }
    prepare_database()
    failed = []
    for benchmark in BENCHMARKS:
        if args.only and benchmark.name not in args.only:
            continue
        try:
            results = run(benchmark, args.full)
        except BenchmarkFailed as error:
            # A full run is an hour: a late failure must not throw away the earlier figures.
            print(error, file=sys.stderr, flush=True)
            failed.append(benchmark.name)
            continue
        summary["raw"][benchmark.name] = results
        for figure in benchmark.figures:
            values = [lookup(result, figure.path) for result in results]
            median = statistics.median(values)
            summary["figures"].append(
                {
                    "benchmark": benchmark.name,
                    "label": figure.label,
                    "unit": figure.unit,
                    "median": median,
                    "min": min(values),
                    "max": max(values),
                    "target": figure.target,
                    "higher_is_better": figure.higher_is_better,
                    "met": median >= figure.target
                    if figure.higher_is_better
                    else median <= figure.target,
                }
            )
    summary["failed"] = failed
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    (RESULTS / f"{stamp}-{summary['mode']}.json").write_text(json.dumps(summary, indent=2))
    readme = BENCH / "README.md"
    text = readme.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    readme.write_text(text[:start] + "\n" + table(summary) + "\n" + text[end:])
    print(table(summary))
    if failed:
        raise SystemExit(f"bench: failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
