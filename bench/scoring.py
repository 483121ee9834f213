"""In-process scoring speed of the conversion SavedModel.

    python bench/scoring.py [--model MODEL_DIR/conversion/N] [--sessions 20000]

Without --model a small model is trained on the Taobao head first (not timed). The sessions are
the Taobao head's with their person context (`dataset.sequences_build`), sent through all four
inputs of `serving_default`, as the live task does. Prints JSON:
batched throughput in sessions/s (batches of 256, the size the live task sends) and the latency
of scoring one session (p50/p99 over 1,000 calls). Targets: >= 5,000 sessions/s, p99 < 10 ms.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clickserver.settings")
os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only")

import django

django.setup()

from notifications import dataset  # noqa: E402
from notifications.model import TrainingConfig, model_export, train_and_evaluate  # noqa: E402
from notifications.scoring import BATCH_SIZE, InProcessScorer  # noqa: E402

DEFAULT_CSV = (
    Path(os.environ.get("CLICKSERVER_SHARED_DATA", Path(__file__).parents[2] / "shared" / "data"))
    / "clickstream/taobao_userbehavior/UserBehavior_head_814users.csv"
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    parser.add_argument("--csv", default=str(DEFAULT_CSV))
    parser.add_argument("--sessions", type=int, default=20_000)
    args = parser.parse_args()
    batch = dataset.sequences_build(
        dataset.taobao_sessionize(dataset.taobao_read(args.csv, max_users=300))
    )
    model_path = args.model
    if not model_path:
        split = dataset.split_by_time(batch)
        result = train_and_evaluate(split, config=TrainingConfig(epochs=2))
        model_path = str(Path(tempfile.mkdtemp()) / "conversion" / "1")
        model_export(result.model, path=Path(model_path), card=result.card)

    load_started = time.perf_counter()
    scorer = InProcessScorer.for_path(model_path)
    load_seconds = time.perf_counter() - load_started
    sessions = batch.take(np.arange(args.sessions) % len(batch))

    scorer.predict(sessions.take(np.arange(BATCH_SIZE)))
    started = time.perf_counter()
    scores = scorer.predict(sessions)
    batched_seconds = time.perf_counter() - started

    latencies = []
    for i in range(1000):
        one = sessions.take(np.array([i % len(sessions)]))
        t0 = time.perf_counter()
        scorer.predict(one)
        latencies.append((time.perf_counter() - t0) * 1000)
    print(
        json.dumps(
            {
                "model": model_path,
                "load_and_warm_up_s": round(load_seconds, 2),
                "batch_size": BATCH_SIZE,
                "sessions": len(scores),
                "sessions_per_s": round(len(scores) / batched_seconds),
                "single_session_ms": {
                    "p50": round(float(np.percentile(latencies, 50)), 3),
                    "p99": round(float(np.percentile(latencies, 99)), 3),
                },
                "cpu_threads": os.cpu_count(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
