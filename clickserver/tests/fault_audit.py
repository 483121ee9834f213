"""Compare what the live pipeline left behind with a full recomputation; print one JSON object.

    DATABASE_URL=... python -m clickserver.tests.fault_audit --shop-id 1

Run by the fault-injection suite against its private MariaDB, in a process of its own so that the
test process keeps its own Django settings. Rollups are compared first (on the pipeline's
sessions: the rollups reference session and person ids), then `rollups_rebuild`; then sessions
against `sessions_rebuild`, which recomputes every session of every person from their events.
"""

import argparse
import hashlib
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import django
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clickserver.settings")
django.setup()

from analytics import models as analytics_models  # noqa: E402
from analytics.services.rollups import rollups_rebuild  # noqa: E402
from events.models import Event, Session  # noqa: E402
from events.services.sessions import sessions_rebuild  # noqa: E402

ROLLUP_MODELS = (
    analytics_models.HourlyRollup,
    analytics_models.DailyRollup,
    analytics_models.HourlyRevenue,
    analytics_models.DailyVisitors,
    analytics_models.ProductDailyRollup,
    analytics_models.ProductMonthlyRollup,
    analytics_models.SessionPath,
    analytics_models.DailySessionPaths,
)
# Surrogate keys: a rebuilt row is the same row under a new id.
IGNORED_COLUMNS = {"id"}


def _rows(model, shop_id: int) -> list[str]:
    return sorted(
        repr(sorted((k, v) for k, v in row.items() if k not in IGNORED_COLUMNS))
        for row in model.objects.filter(shop_id=shop_id).values()
    )


def _sessions(shop_id: int) -> list[str]:
    events: dict[int, list[str]] = {}
    for session_id, event_id in Event.objects.filter(shop_id=shop_id).values_list(
        "session_id", "event_id"
    ):
        events.setdefault(session_id, []).append(event_id)
    return sorted(
        repr(
            (
                sorted((k, v) for k, v in row.items() if k not in IGNORED_COLUMNS),
                sorted(events.get(row["id"], [])),
            )
        )
        for row in Session.objects.filter(shop_id=shop_id).values()
    )


def _compare(before: list[str], after: list[str]) -> dict:
    only_before = sorted(set(before) - set(after))
    only_after = sorted(set(after) - set(before))
    return {
        "rows": len(before),
        "rebuilt_rows": len(after),
        "equal": before == after,
        "digest": hashlib.sha256("\n".join(before).encode()).hexdigest()[:16],
        "only_live": only_before[:3],
        "only_rebuilt": only_after[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shop-id", type=int, required=True)
    shop_id = parser.parse_args().shop_id

    report: dict = {"rollups": {}, "sessions": None}
    live = {model.__name__: _rows(model, shop_id) for model in ROLLUP_MODELS}
    rollups_rebuild(shop_id=shop_id, now=datetime.now(UTC))
    for model in ROLLUP_MODELS:
        report["rollups"][model.__name__] = _compare(live[model.__name__], _rows(model, shop_id))

    live_sessions = _sessions(shop_id)
    sessions_rebuild(shop_id=shop_id)
    report["sessions"] = _compare(live_sessions, _sessions(shop_id))
    print(orjson.dumps(report, default=str).decode())


if __name__ == "__main__":
    main()
