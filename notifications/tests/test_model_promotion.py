"""Retraining keeps the last good model: `conversion_model_train` scores the active version on
the new model's test split and activates the new one only if its test ROC-AUC is not worse
(within `PROMOTION_TOLERANCE`). Real training (a tiny config) on the first 200 Taobao users: the
new model that is not worse is the session's trained model (conftest `trained`, the same config
on the same 200 users), handed to the service's own code path in place of a second identical
training; the worse one is trained here."""

import copy
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from events.tests.factories import ShopFactory
from notifications import dataset, services
from notifications import model as conversion_model
from notifications.model import TrainingConfig, TrainingResult, lstm_build, model_export
from notifications.models import ModelVersion
from notifications.tests.conftest import TINY
from notifications.tests.factories import T0

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


@pytest.fixture(scope="module")
def small_csv(taobao_csv, tmp_path_factory) -> Path:
    raw = pd.read_csv(taobao_csv)
    users = raw.iloc[:, 0].drop_duplicates().head(200)
    path = tmp_path_factory.mktemp("data") / "taobao_200.csv"
    raw[raw.iloc[:, 0].isin(users)].to_csv(path, index=False)
    return path


def active_version(shop, path: Path, *, version: int) -> ModelVersion:
    return ModelVersion.objects.create(
        shop=shop, version=version, path=str(path), metrics={}, trained_at=T0, is_active=True
    )


def sizes(split: dataset.Split) -> list[int]:
    return [len(split.train), len(split.validation), len(split.test)]


def saved_model_auc(path: Path, split: dataset.Split) -> float:
    """The active model's test ROC-AUC computed here, apart from the service's code path."""
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    inputs = {k: tf.constant(v) for k, v in split.test.inputs().items()}
    scores = serve(**inputs)["conversion_probability"].numpy().reshape(-1)
    return round(float(roc_auc_score(split.test.labels, scores)), 4)


def test_a_new_model_not_worse_than_the_active_one_is_activated(
    small_csv, taobao_split, trained, tmp_path, settings, caplog, monkeypatch
):
    settings.MODEL_DIR = str(tmp_path)
    trainings = []

    def train_and_evaluate(split, *, config=None, progress=None):
        # What the service would train: TINY on the same 200 users, so the same split.
        trainings.append((config, sizes(split), split.test.labels.tolist()))
        return TrainingResult(model=trained.model, card=copy.deepcopy(trained.card))

    monkeypatch.setattr(conversion_model, "train_and_evaluate", train_and_evaluate)
    shop = ShopFactory()
    # The active version says 0.5 for every session: a ranking no better than chance.
    constant = lstm_build(TrainingConfig())
    constant.set_weights([np.zeros_like(w) for w in constant.get_weights()])
    old = active_version(
        shop, model_export(constant, path=tmp_path / "old" / "1", card={}), version=1
    )

    with caplog.at_level(logging.INFO, logger="notifications.services"):
        new = services.conversion_model_train(
            shop=shop, now=T0, csv_path=str(small_csv), config=TINY
        )

    old.refresh_from_db()
    promotion = new.metrics["promotion"]
    assert trainings == [(TINY, sizes(taobao_split), taobao_split.test.labels.tolist())]
    assert (new.version, new.is_active, old.is_active) == (2, True, False)
    assert promotion["active_version"] == 1
    assert promotion["active_roc_auc"] == 0.5
    assert promotion["new_roc_auc"] == new.metrics["metrics"]["roc_auc"] > 0.5
    assert promotion["reason"].startswith(f"test ROC-AUC {promotion['new_roc_auc']:.4f} against")
    assert json.loads((Path(new.path) / "model_card.json").read_text())["promotion"] == promotion
    assert f"conversion model v2 of {shop.domain} activated" in caplog.text


def test_a_new_model_worse_than_the_active_one_is_registered_but_left_inactive(
    small_csv, taobao_split, trained_model_path, tmp_path, settings, caplog
):
    settings.MODEL_DIR = str(tmp_path)
    shop = ShopFactory()
    old = active_version(shop, trained_model_path, version=1)
    # Barely trained: a learning rate that leaves the weights where they started.
    untrained = TrainingConfig(epochs=1, batch_size=256, learning_rate=1e-9)

    with caplog.at_level(logging.WARNING, logger="notifications.services"):
        new = services.conversion_model_train(
            shop=shop, now=T0, csv_path=str(small_csv), config=untrained
        )

    old.refresh_from_db()
    promotion = new.metrics["promotion"]
    # The CSV holds the same 200 users as `taobao_split`: the same test split.
    assert promotion["active_roc_auc"] == saved_model_auc(trained_model_path, taobao_split)
    assert promotion["new_roc_auc"] + services.PROMOTION_TOLERANCE < promotion["active_roc_auc"]
    assert (new.version, new.is_active, old.is_active) == (2, False, True)
    assert ModelVersion.objects.filter(shop=shop, is_active=True).get() == old
    assert promotion["is_activated"] is False
    assert promotion["reason"].endswith("v1 stays active")
    assert (Path(new.path) / "saved_model.pb").is_file()
    assert f"conversion model v2 of {shop.domain} registered, not activated" in caplog.text


def test_without_an_active_version_or_its_files_the_new_one_is_activated(taobao_split, tmp_path):
    shop = ShopFactory()
    missing = active_version(shop, tmp_path / "gone", version=1)

    first = services.model_promotion_decide(active=None, test=taobao_split.test, new_roc_auc=0.6)
    second = services.model_promotion_decide(
        active=missing, test=taobao_split.test, new_roc_auc=0.6
    )

    assert (first["is_activated"], first["reason"]) == (True, "no version was active")
    assert second["is_activated"] is True
    assert second["reason"] == "the active v1's files are missing, so it cannot be compared"
