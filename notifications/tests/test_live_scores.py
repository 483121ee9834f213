from datetime import timedelta
from io import StringIO

import orjson
import pandas as pd
import pytest
from django.core.management import call_command
from django.utils import timezone

from events.models import Event, Session
from events.tests.factories import EventFactory
from notifications import dataset, selectors, services
from notifications.models import ConversionScore, ModelVersion, ScoreSample
from notifications.tasks import conversion_model_train_task, scores_refresh_task
from notifications.tests.factories import ModelVersionFactory, SessionFactory

pytestmark = pytest.mark.slow


def session_with_events(shop, *, ended_ago: timedelta, types: list[str], person=None) -> Session:
    now = timezone.now()
    started = now - ended_ago - timedelta(minutes=len(types) - 1)
    extra = {"person": person} if person is not None else {}
    session = SessionFactory(
        shop=shop,
        started_at=started,
        ended_at=now - ended_ago,
        event_count=len(types),
        **extra,
    )
    for i, event_type in enumerate(types):
        EventFactory(
            shop=shop,
            type=event_type,
            occurred_at=started + timedelta(minutes=i),
            product_category="7",
            session=session,
            person=session.person,
        )
    return session


@pytest.mark.django_db
def test_scores_appear_for_live_sessions_after_the_refresh_task(shop, trained_model_path):
    model_version = ModelVersionFactory(shop=shop, path=str(trained_model_path))
    services.model_version_activate(model_version=model_version)
    live = session_with_events(
        shop, ended_ago=timedelta(minutes=2), types=["product_view", "add_to_cart"]
    )
    also_live = session_with_events(shop, ended_ago=timedelta(minutes=20), types=["product_view"])
    finished = session_with_events(shop, ended_ago=timedelta(hours=2), types=["product_view"])

    first = scores_refresh_task(shop.id)
    again = scores_refresh_task(shop.id)
    # A new event in one live session: only that one is scored again.
    EventFactory(
        shop=shop,
        type="begin_checkout",
        occurred_at=timezone.now() - timedelta(minutes=1),
        session=live,
        person=live.person,
    )
    Session.objects.filter(pk=live.pk).update(event_count=3)
    after_event = scores_refresh_task(shop.id)

    assert (first, again, after_event) == (2, 0, 1)
    scores = {s.session_id: s for s in ConversionScore.objects.filter(shop=shop)}
    assert set(scores) == {live.id, also_live.id}
    assert finished.id not in scores
    assert scores[live.id].person_id == live.person_id
    assert scores[live.id].model_version == model_version
    assert 0.0 < scores[live.id].score < 1.0


@pytest.mark.django_db
def test_live_scores_read_the_persons_earlier_sessions(shop, trained_model_path):
    model_version = ModelVersionFactory(shop=shop, path=str(trained_model_path))
    services.model_version_activate(model_version=model_version)
    types = ["product_view", "product_view", "add_to_cart"]
    returning = session_with_events(shop, ended_ago=timedelta(minutes=3), types=types)
    for days in (9, 5, 2):
        session_with_events(
            shop,
            ended_ago=timedelta(days=days),
            types=["product_view", "add_to_cart", "purchase"],
            person=returning.person,
        )
    newcomer = session_with_events(shop, ended_ago=timedelta(minutes=3), types=types)

    assert scores_refresh_task(shop.id) == 2

    history = selectors.events_frame(shop=shop, person_ids=[returning.person_id])
    assert history["session_key"].nunique() == 4
    scores = {s.session_id: s.score for s in ConversionScore.objects.filter(shop=shop)}
    assert scores[returning.id] != pytest.approx(scores[newcomer.id], abs=1e-6)


@pytest.mark.django_db
def test_refresh_without_an_active_model_scores_nothing(shop):
    session_with_events(shop, ended_ago=timedelta(minutes=2), types=["product_view"])

    assert scores_refresh_task(shop.id) == 0
    assert ConversionScore.objects.count() == 0


@pytest.mark.django_db
def test_activating_a_version_deactivates_the_previous_one(shop):
    old = ModelVersionFactory(shop=shop, is_active=True)
    new = ModelVersionFactory(shop=shop)

    services.model_version_activate(model_version=new)

    assert list(ModelVersion.objects.filter(is_active=True)) == [new]
    old.refresh_from_db()
    assert old.is_active is False


@pytest.mark.django_db
def test_train_command_on_imported_taobao_events(shop, taobao_csv, tmp_path, settings):
    settings.MODEL_DIR = tmp_path / "models"
    head = pd.read_csv(taobao_csv, dtype=str)
    head = head[head["user_id"].isin(head["user_id"].drop_duplicates().head(60))]
    csv = tmp_path / "head.csv"
    head.to_csv(csv, index=False)
    call_command(
        "import_events", str(csv), "--shop", shop.domain, "--format", "taobao", stdout=StringIO()
    )
    call_command("process_events", "--shop", shop.domain, stdout=StringIO(), stderr=StringIO())
    sessions = Session.objects.filter(shop=shop).count()
    out, progress = StringIO(), StringIO()

    call_command(
        "train_conversion_model",
        "--shop",
        shop.domain,
        "--epochs",
        "1",
        stdout=out,
        stderr=progress,
    )

    summary = orjson.loads(out.getvalue())
    model_version = ModelVersion.objects.get(shop=shop)
    assert model_version.is_active is True
    assert summary["version"] == model_version.version == 1
    assert summary["path"] == str(tmp_path / "models" / "conversion" / "1")
    assert (tmp_path / "models" / "conversion" / "1" / "saved_model.pb").is_file()
    assert (tmp_path / "models" / "conversion" / "1" / "model_card.json").is_file()
    sequences = dataset.sequences_build(selectors.events_frame(shop=shop))
    assert Event.objects.filter(shop=shop, session__isnull=True).count() == 0
    parts = summary["sizes"]["train"] + summary["sizes"]["validation"] + summary["sizes"]["test"]
    assert parts <= len(sequences) <= sessions
    assert summary["sizes"]["train_prefixes"] >= summary["sizes"]["train"]
    test = model_version.metrics["calibration"]["test"]
    assert summary["calibration"] == {"ece": test["ece"], "brier": test["brier"]}
    assert 0.0 <= test["ece"] <= 1.0
    assert "epoch 1/1" in progress.getvalue()
    assert summary["is_active"] is True
    assert summary["promotion"] == model_version.metrics["promotion"]
    assert summary["promotion"]["reason"] == "no version was active"


@pytest.mark.django_db
def test_weekly_training_of_a_shop_without_sessions_registers_nothing(shop):
    assert conversion_model_train_task(shop.id) is None
    assert ModelVersion.objects.count() == 0


def test_train_command_defaults_to_the_tuned_number_of_epochs():
    from notifications.management.commands.train_conversion_model import Command
    from notifications.model import TrainingConfig

    parser = Command().create_parser("manage.py", "train_conversion_model")

    assert parser.get_default("epochs") == TrainingConfig().epochs == 25


@pytest.mark.django_db
def test_a_session_that_bought_is_not_scored_and_each_prefix_keeps_its_first_sample(
    shop, trained_model_path
):
    model_version = ModelVersionFactory(shop=shop, path=str(trained_model_path))
    services.model_version_activate(model_version=model_version)
    prospect = session_with_events(
        shop, ended_ago=timedelta(minutes=2), types=["product_view", "add_to_cart"]
    )
    # The pipeline has not flagged it yet (is_converted False): its events hold the purchase.
    buyer = session_with_events(
        shop, ended_ago=timedelta(minutes=2), types=["product_view", "purchase"]
    )

    assert scores_refresh_task(shop.id) == 1
    first = ScoreSample.objects.get(session=prospect)
    ConversionScore.objects.filter(session=prospect).update(score=0.5)
    # Nothing new in the session: not scored again. A newly activated model scores it again
    # (the same prefix: its sample keeps the first score).
    assert scores_refresh_task(shop.id) == 0
    retrained = ModelVersionFactory(shop=shop, path=str(trained_model_path))
    services.model_version_activate(model_version=retrained)
    assert scores_refresh_task(shop.id) == 1

    assert not ConversionScore.objects.filter(session=buyer).exists()
    assert list(ScoreSample.objects.values_list("session_id", "event_count", "score")) == [
        (prospect.id, 2, first.score)
    ]
    assert ConversionScore.objects.get(session=prospect).score == pytest.approx(first.score)


@pytest.mark.django_db
def test_people_tagged_as_bots_are_not_scored_while_the_shop_excludes_bots(
    shop, trained_model_path
):
    from analytics.models import BotTag, DetectionSettings

    model_version = ModelVersionFactory(shop=shop, path=str(trained_model_path))
    services.model_version_activate(model_version=model_version)
    human = session_with_events(shop, ended_ago=timedelta(minutes=2), types=["product_view"])
    bot = session_with_events(shop, ended_ago=timedelta(minutes=2), types=["product_view"] * 3)
    now = timezone.now()
    BotTag.objects.create(
        shop=shop, person_id=bot.person_id, first_at=now, last_at=now, tagged_at=now
    )

    assert scores_refresh_task(shop.id) == 1
    assert set(ConversionScore.objects.values_list("session_id", flat=True)) == {human.id}

    DetectionSettings.objects.create(shop=shop, exclude_bots=False)  # the shop keeps bots
    assert scores_refresh_task(shop.id) == 1
    assert set(ConversionScore.objects.values_list("session_id", flat=True)) == {human.id, bot.id}
