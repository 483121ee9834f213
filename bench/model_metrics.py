"""Test-split metrics of the conversion LSTM and its baselines on the Taobao head.

    python bench/model_metrics.py [CSV] [--seeds 1,2,3] [--export DIR]
        [--units N] [--hidden N] [--dropout F] [--learning-rate F] [--epochs N] [--batch-size N]

Prints one JSON object: sizes, class balance, and ROC-AUC / PR-AUC / F1 / ROC-AUC@3,5,10 of the
LSTM, logistic regression and gradient-boosted trees, for each seed and as mean and spread
(min, max, standard deviation) over the seeds, and the LSTM's calibration on the test split's
prefixes (Brier, ECE, the first seed's reliability bins). Everything is chosen on validation
(early stopping, F1 threshold); the test split is only scored. With --export the first seed's
model is also written as a SavedModel (bench/scoring.py can time it).
"""

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from notifications import dataset
from notifications.model import TrainingConfig, model_export, train_and_evaluate

DEFAULT_CSV = (
    Path(os.environ.get("CLICKSERVER_SHARED_DATA", Path(__file__).parents[2] / "shared" / "data"))
    / "clickstream/taobao_userbehavior/UserBehavior_head_814users.csv"
)


def _flat(metrics: dict) -> dict[str, float | None]:
    flat = {k: metrics[k] for k in ("roc_auc", "pr_auc", "f1")}
    flat.update({f"roc_auc_at_{k}": v for k, v in metrics["roc_auc_at"].items()})
    return flat


def _summary(runs: list[dict[str, float | None]]) -> dict[str, dict[str, float]]:
    out = {}
    for key in runs[0]:
        values = np.array([r[key] for r in runs if r[key] is not None], dtype=float)
        if len(values):
            out[key] = {
                "mean": round(float(values.mean()), 4),
                "min": round(float(values.min()), 4),
                "max": round(float(values.max()), 4),
                "std": round(float(values.std()), 4),
            }
    return out


def _spread(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=float)
    return {
        "mean": round(float(array.mean()), 4),
        "min": round(float(array.min()), 4),
        "max": round(float(array.max()), 4),
    }


# Long on purpose: arguments, one training per seed, then the table; splitting it would only
# pass the parsed arguments around.
def main() -> None:
    defaults = TrainingConfig()
    parser = argparse.ArgumentParser()
    parser.add_argument("csv", nargs="?", default=str(DEFAULT_CSV))
    parser.add_argument("--export", help="write the (first seed's) SavedModel to this directory")
    parser.add_argument("--seeds", default=str(defaults.seed), help="comma-separated seeds")
    parser.add_argument("--units", type=int, default=defaults.lstm_units)
    parser.add_argument("--hidden", type=int, default=defaults.hidden_units)
    parser.add_argument("--dropout", type=float, default=defaults.dropout)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    args = parser.parse_args()
    started = time.monotonic()
    frame = dataset.taobao_sessionize(dataset.taobao_read(args.csv))
    split = dataset.split_by_time(dataset.sequences_build(frame))
    config = replace(
        defaults,
        lstm_units=args.units,
        hidden_units=args.hidden,
        dropout=args.dropout,
        learning_rate=args.learning_rate,
        epochs=args.epochs,
        batch_size=args.batch_size,
    )
    seeds = [int(s) for s in args.seeds.split(",")]
    cards = []
    for seed in seeds:
        result = train_and_evaluate(
            split,
            config=replace(config, seed=seed),
            progress=lambda m, seed=seed: print(f"seed {seed}: {m}", file=sys.stderr),
        )
        if args.export and not cards:
            model_export(result.model, path=Path(args.export), card=result.card)
        cards.append(result.card)
    card = cards[0]
    models = {"lstm": [c["metrics"] for c in cards]}
    for name in card["baselines"]:
        models[name] = [c["baselines"][name] for c in cards]
    print(
        json.dumps(
            {
                "csv": args.csv,
                "events": len(frame),
                "sizes": card["sizes"],
                "class_balance": card["class_balance"],
                "data_window": card["data_window"],
                "config": {k: v for k, v in card["config"].items() if k != "seed"},
                "seeds": seeds,
                "validation_roc_auc": {
                    "lstm": [c["validation"]["lstm"] for c in cards],
                    **{n: card["validation"][n] for n in card["baselines"]},
                },
                "test": {name: _summary([_flat(m) for m in runs]) for name, runs in models.items()},
                "per_seed": models,
                # Test-split prefixes (what live scoring sees): Brier, ECE, reliability bins.
                "calibration": {
                    "ece": _spread([c["calibration"]["test"]["ece"] for c in cards]),
                    "brier": _spread([c["calibration"]["test"]["brier"] for c in cards]),
                    "platt": [{k: c["calibration"][k] for k in ("a", "b")} for c in cards],
                    "first_seed": card["calibration"]["test"],
                },
                "seconds": round(time.monotonic() - started, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
