"""Ingestion through gunicorn into MariaDB, next to the same run's physical limit.

Measures, with MariaDB, Redis and RabbitMQ as in production:
- single-event requests/s at a fixed concurrency (wrk with a Lua script: a new event id per
  request), then p50/p99 latency at about 70 % of that maximum (wrk's per-request delay);
- batched ingestion (100 events a request, also from wrk, which leaves the two cores to the
  server where a Python client took a fifth of them): events/s accepted and durable in MariaDB;
- the raw rate of LOAD DATA LOCAL INFILE and of executemany into a table with the same schema and
  indexes as events_event, and the ratio of ours to LOAD DATA.
Every load run is bounded in seconds (--seconds) and talks to 127.0.0.1 only; the raw runs in
rows (--raw-rows). Prints one JSON object.
"""

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import MySQLdb
import requests

ROOT = Path(__file__).resolve().parent.parent
# Overridable so that two checkouts on one machine can measure without dropping each other's data.
DB = os.environ.get("BENCH_INGEST_DATABASE", "clickserver_bench_ingest")
PORT = int(os.environ.get("BENCH_INGEST_PORT", "8077"))
ENV = {
    **os.environ,
    "DATABASE_URL": f"mysql://root@127.0.0.1:3306/{DB}",
    "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9"),
    "CELERY_BROKER_URL": os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    "CELERY_DEFAULT_QUEUE": "clickserver-bench",
    "DJANGO_SECRET_KEY": "bench",
    "DJANGO_SECURE_SSL_REDIRECT": "0",  # plain HTTP to gunicorn, no nginx in front
    "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
    "INGEST_RATE_LIMIT_REQUESTS": "100000000",
}
WRK_SCRIPT = """
local counter = 0
local key = os.getenv("WRITE_KEY")
local pause = tonumber(os.getenv("WRK_DELAY_MS") or "0")
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
local prefix = tostring(math.random(1, 1e9))
request = function()
  counter = counter + 1
  local body = '{"event_id":"w' .. prefix .. '-' .. counter .. '","type":"page_view",' ..
    '"anonymous_id":"anon-' .. (counter % 500) .. '","url":"https://bench.example/p/1"}'
  return wrk.format("POST", "/events/", {["Content-Type"] = "application/json",
    ["X-Write-Key"] = key}, body)
end
if pause > 0 then
  delay = function() return pause end
end
"""

# Batches of BATCH_SIZE product views (UTM-tagged URL, price, category, user agent), each with a
# new event id, from 500 visitors; the accepted counts come from the 202 bodies.
WRK_BATCH_SCRIPT = """
local key = os.getenv("WRITE_KEY")
local size = tonumber(os.getenv("BATCH_SIZE"))
local counter = 0
accepted = 0  -- a global: done() reads it from each thread
local threads = {}
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
local prefix = tostring(math.random(1, 1e9))
setup = function(thread) table.insert(threads, thread) end
request = function()
  local events = {}
  for i = 1, size do
    counter = counter + 1
    events[i] = '{"event_id":"b' .. prefix .. '-' .. counter .. '","type":"product_view",' ..
      '"anonymous_id":"anon-' .. (counter % 500) .. '",' ..
      '"url":"https://bench.example/products/p1?utm_source=bench",' ..
      '"product":{"id":"p' .. (counter % 40) .. '","price":"12.50","category":"Mugs"},' ..
      '"context":{"user_agent":"bench/1.0"}}'
  end
  return wrk.format("POST", "/events/", {["Content-Type"] = "application/json",
    ["X-Write-Key"] = key}, '{"batch":[' .. table.concat(events, ",") .. ']}')
end
response = function(status, headers, body)
  if status == 202 then
    accepted = accepted + tonumber(body:match('"accepted":%s*(%d+)') or 0)
  end
end
done = function(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("accepted") end
  io.write(string.format("accepted: %d\\n", total))
end
"""


def mysql(sql: str, database: str = "") -> str:
    command = ["mysql", "-uroot", "-h127.0.0.1", "-N", "-e", sql]
    if database:
        command.insert(1, database)
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def manage(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=ENV,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


def start_server(workers: int, threads: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "clickserver.wsgi"],
        cwd=ROOT,
        env={
            **ENV,
            "GUNICORN_BIND": f"127.0.0.1:{PORT}",
            "GUNICORN_WORKERS": str(workers),
            "GUNICORN_THREADS": str(threads),
            "GUNICORN_ACCESS_LOG": "",  # off
        },
        stderr=subprocess.DEVNULL,
    )
    for _ in range(240):
        try:
            requests.get(f"http://127.0.0.1:{PORT}/health/", timeout=5)
            return server
        except requests.RequestException:
            time.sleep(0.5)
    server.terminate()
    raise SystemExit("gunicorn did not start")


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name (state first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_counters(server: subprocess.Popen) -> Callable[[], dict[str, float]]:
    """CPU seconds used so far by gunicorn's workers and by mariadbd, read from /proc.

    CPU per request, unlike requests/s, hardly moves with what else the two cores are doing.
    Workers come and go (`max_requests` recycles them): a running worker counts its own time,
    one that has exited counts in its master's reaped-children time (cutime + cstime).
    """
    ticks = os.sysconf("SC_CLK_TCK")
    mariadb = subprocess.run(["pidof", "mariadbd"], capture_output=True, text=True, check=False)
    mariadb_pids = [int(pid) for pid in mariadb.stdout.split()]

    def read() -> dict[str, float]:
        master = _stat(server.pid)
        workers = int(master[13]) + int(master[14])  # cutime, cstime
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        for pid in children:
            try:
                fields = _stat(int(pid))
            except FileNotFoundError:  # exited since: counted in cutime at the next read
                continue
            workers += int(fields[11]) + int(fields[12])  # utime, stime
        database = sum(int(f[11]) + int(f[12]) for f in map(_stat, mariadb_pids))
        return {"workers": workers / ticks, "mariadb": database / ticks}

    return read


def cpu_per(
    counters: Callable[[], dict[str, float]], run: Callable[[], dict], unit: str, count: str
) -> dict:
    """`run()`'s result with the CPU milliseconds the workers and mariadbd spent per `unit`."""
    before = counters()
    result = run()
    for name, seconds in counters().items():
        spent = seconds - before[name]
        result[f"{name}_cpu_ms_per_{unit}"] = round(spent * 1000 / max(result[count], 1), 3)
    return result


def wrk(script: str, env: dict[str, str], *, seconds: int, connections: int) -> tuple[str, dict]:
    """Run wrk (one thread, so that the load generator takes a small share of the two cores)
    with a Lua script; returns its output and the figures it prints."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    done = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", handle.name,
         f"http://127.0.0.1:{PORT}/events/"],
        env={**os.environ, **env},
        check=True, capture_output=True, text=True, timeout=seconds + 60,
    )  # fmt: skip
    os.unlink(handle.name)
    out = done.stdout

    def millis(label: str) -> float:
        match = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", out)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return out, {
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": millis("50%"),
        "p99_ms": millis("99%"),
        "errors": int(non_2xx.group(1)) if non_2xx else 0,
    }


def single(write_key: str, *, seconds: int, connections: int, delay_ms: float = 0) -> dict:
    env = {"WRITE_KEY": write_key, "WRK_DELAY_MS": str(delay_ms)}
    return wrk(WRK_SCRIPT, env, seconds=seconds, connections=connections)[1]


def batched(write_key: str, *, seconds: int, clients: int, size: int) -> dict:
    """Batches of `size` events from wrk for `seconds`, against the rows MariaDB gained.

    Durable counts only acknowledged events that are in the table: when wrk stops, requests in
    flight are dropped unanswered, and their events may or may not be written.
    """
    before = int(mysql("SELECT COUNT(*) FROM events_event", DB))
    env = {"WRITE_KEY": write_key, "BATCH_SIZE": str(size)}
    out, figures = wrk(WRK_BATCH_SCRIPT, env, seconds=seconds, connections=clients)
    accepted = int(re.search(r"accepted: (\d+)", out).group(1))
    elapsed = figures["requests"] / figures["requests_per_s"]  # wrk's own run time
    time.sleep(0.5)  # let requests in flight when wrk stopped finish
    durable = min(accepted, int(mysql("SELECT COUNT(*) FROM events_event", DB)) - before)
    return {
        "requests": figures["requests"],
        "errors": figures["errors"],
        "accepted": accepted,
        "durable": durable,
        "seconds": round(elapsed, 2),
        "events_per_s_accepted": round(accepted / elapsed),
        "events_per_s_durable": round(durable / elapsed),
        "request_p50_ms": figures["p50_ms"],
        "request_p99_ms": figures["p99_ms"],
    }


def raw_limits(rows: int) -> dict:
    """LOAD DATA and executemany into a copy of events_event: the database's own ceiling."""
    mysql("DROP TABLE IF EXISTS rawbench; CREATE TABLE rawbench LIKE events_event", DB)
    shop_id = mysql("SELECT MIN(id) FROM events_shop", DB)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    columns = ["shop_id", "event_id", "type", "anonymous_id", "user_id", "occurred_at",
               "received_at", "url", "referrer", "title", "product_id", "product_name",
               "product_category", "currency", "utm_source", "utm_medium", "utm_campaign",
               "utm_term", "utm_content", "user_agent", "country", "properties",
               "order_id"]  # fmt: skip

    def row(i: int) -> list:
        return [shop_id, uuid.uuid4().hex, "product_view", f"anon-{i % 500}", "", now, now,
                "https://bench.example/products/p1?utm_source=bench", "", "", f"p{i % 40}", "",
                "Mugs", "", "bench", "", "", "", "", "bench/1.0", "", "{}", ""]  # fmt: skip

    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False, newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        for i in range(rows):
            writer.writerow(row(i))
    connection = MySQLdb.connect(
        host="127.0.0.1", user="root", database=DB, local_infile=1, charset="utf8mb4"
    )
    cursor = connection.cursor()
    started = time.perf_counter()
    cursor.execute(
        f"LOAD DATA LOCAL INFILE '{handle.name}' INTO TABLE rawbench ({', '.join(columns)})"
    )
    connection.commit()
    load_data = rows / (time.perf_counter() - started)
    os.unlink(handle.name)

    data = [row(i) for i in range(rows)]
    placeholders = ", ".join(["%s"] * len(columns))
    sql = f"INSERT IGNORE INTO rawbench ({', '.join(columns)}) VALUES ({placeholders})"
    started = time.perf_counter()
    for chunk in range(0, rows, 500):
        cursor.executemany(sql, data[chunk : chunk + 500])
        connection.commit()
    executemany = rows / (time.perf_counter() - started)
    connection.close()
    mysql("DROP TABLE rawbench", DB)
    return {"load_data_rows_per_s": round(load_data), "executemany_rows_per_s": round(executemany)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--clients", type=int, default=4, help="connections sending batches")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--raw-rows", type=int, default=100_000)
    args = parser.parse_args()

    mysql(f"DROP DATABASE IF EXISTS {DB}")
    mysql(f"CREATE DATABASE {DB} CHARACTER SET utf8mb4")
    manage("migrate", "--noinput", "-v0")
    shop = json.loads(manage("create_shop", "--domain", "bench.example", "--owner", "bench"))
    server = start_server(args.workers, args.threads)
    try:
        single(shop["write_key"], seconds=2, connections=args.connections)  # warm-up
        counters = cpu_counters(server)
        peak = cpu_per(
            counters,
            lambda: single(shop["write_key"], seconds=args.seconds, connections=args.connections),
            "request",
            "requests",
        )
        # Each connection waits `delay` after a response: C / (latency + delay) ≈ 70 % of peak.
        target = 0.7 * peak["requests_per_s"]
        delay = max(0.0, args.connections * 1000 / target - peak["p50_ms"])
        paced = single(
            shop["write_key"], seconds=args.seconds, connections=args.connections, delay_ms=delay
        )
        batch = cpu_per(
            counters,
            lambda: batched(
                shop["write_key"],
                seconds=args.seconds,
                clients=args.clients,
                size=100,
            ),
            "event",
            "durable",
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    limits = raw_limits(args.raw_rows)
    print(
        json.dumps(
            {
                "benchmark": "ingest",
                "single_event_max": peak,
                "single_event_at_70pct": {**paced, "target_requests_per_s": round(target)},
                "batched_100": batch,
                "raw": limits,
                "ratio_to_load_data": round(
                    batch["events_per_s_durable"] / limits["load_data_rows_per_s"], 3
                ),
                "gunicorn": {"workers": args.workers, "threads": args.threads},
            }
        )
    )


if __name__ == "__main__":
    main()
