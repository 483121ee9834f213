"""Test-split metrics of the conversion LSTM and its baselines on the Taobao head.

    python bench/model_metrics.py [CSV] [--export DIR]

Prints one JSON object: sizes, class balance, and ROC-AUC / PR-AUC / F1 / ROC-AUC@3,5,10 of the
LSTM, logistic regression and gradient-boosted trees. With --export the model is also written as a
SavedModel (bench/scoring.py can time it).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from notifications import dataset
from notifications.model import model_export, train_and_evaluate

DEFAULT_CSV = (
    Path(os.environ.get("CLICKSERVER_SHARED_DATA", Path(__file__).parents[2] / "shared" / "data"))
    / "clickstream/taobao_userbehavior/UserBehavior_head_814users.csv"
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("csv", nargs="?", default=str(DEFAULT_CSV))
    parser.add_argument("--export", help="write the SavedModel to this directory")
    args = parser.parse_args()
    started = time.monotonic()
    frame = dataset.taobao_sessionize(dataset.taobao_read(args.csv))
    split = dataset.split_by_time(dataset.sequences_build(frame))
    result = train_and_evaluate(split, progress=lambda m: print(m, file=sys.stderr))
    if args.export:
        model_export(result.model, path=Path(args.export), card=result.card)
    card = result.card
    print(
        json.dumps(
            {
                "csv": args.csv,
                "events": len(frame),
                "sizes": card["sizes"],
                "class_balance": card["class_balance"],
                "data_window": card["data_window"],
                "lstm": card["metrics"],
                **card["baselines"],
                "seconds": round(time.monotonic() - started, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
