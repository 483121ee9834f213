from datetime import timedelta
from io import StringIO

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from sklearn.metrics import brier_score_loss

from notifications import selectors
from notifications.models import ScoreSample
from notifications.tests.factories import T0, SessionFactory

NOW = T0 + timedelta(days=1)


def sample(session, *, event_count: int, score: float, scored_at=None) -> ScoreSample:
    return ScoreSample.objects.create(
        shop=session.shop,
        session=session,
        event_count=event_count,
        score=score,
        scored_at=scored_at or session.started_at,
    )


@pytest.mark.django_db
def test_live_calibration_compares_every_score_of_a_finished_session_with_its_outcome(shop):
    bought = SessionFactory(shop=shop, started_at=NOW - timedelta(hours=3), is_converted=True)
    left = SessionFactory(shop=shop, started_at=NOW - timedelta(hours=2))
    live = SessionFactory(
        shop=shop, started_at=NOW - timedelta(minutes=10), ended_at=NOW - timedelta(minutes=1)
    )
    sample(bought, event_count=1, score=0.15)
    sample(bought, event_count=2, score=0.65)
    sample(left, event_count=1, score=0.15)
    sample(live, event_count=1, score=0.9)

    report = selectors.live_calibration_get(shop=shop, now=NOW, since=NOW - timedelta(days=1))

    labels, scores = np.array([1, 1, 0]), np.array([0.15, 0.65, 0.15])
    assert report.count == 3
    assert report.brier == pytest.approx(brier_score_loss(labels, scores), abs=1e-4)
    assert [(b.low, b.count, b.mean_predicted, b.observed_rate) for b in report.bins] == [
        (0.1, 2, 0.15, 0.5),
        (0.6, 1, 0.65, 1.0),
    ]
    assert report.ece == pytest.approx(2 / 3 * 0.35 + 1 / 3 * 0.35, abs=1e-4)


@pytest.mark.django_db
def test_live_calibration_command_prints_the_table_and_refuses_without_scores(shop):
    # The command is an interface: it reads the clock, so the session is placed around it.
    started = timezone.now() - timedelta(hours=3)
    session = SessionFactory(shop=shop, started_at=started, is_converted=True)
    out = StringIO()

    with pytest.raises(CommandError, match="No live score"):
        call_command("live_calibration", shop=shop.domain)
    sample(session, event_count=1, score=0.75, scored_at=started)
    call_command("live_calibration", shop=shop.domain, stdout=out)

    lines = out.getvalue().splitlines()
    assert lines[0].startswith("1 live scores of finished sessions: mean score 0.750")
    assert lines[-1].split() == ["0.7-0.8", "1", "0.750", "1.000"]
