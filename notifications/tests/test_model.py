import json
import socket

import numpy as np
import pytest
from django.test import override_settings
from sklearn.metrics import roc_auc_score

from notifications import dataset
from notifications.dataset import prefixes_expand
from notifications.model import (
    PREFIX_LENGTHS,
    SIGNATURE,
    WIDE_CLIP,
    TrainingConfig,
    aggregate_features,
    lstm_build,
)
from notifications.models import ModelVersion
from notifications.scoring import InProcessScorer, TFServingScorer, scores_predict

pytestmark = pytest.mark.slow


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_plain_saved_model_load_serves_the_documented_signature(trained_model_path, taobao_split):
    import tensorflow as tf

    signature = tf.saved_model.load(str(trained_model_path)).signatures["serving_default"]
    batch = taobao_split.test.take(np.arange(4))

    outputs = signature(
        event_type=tf.constant(batch.event_type),
        category=tf.constant(batch.category),
        numeric=tf.constant(batch.numeric),
        context=tf.constant(batch.context),
    )

    inputs = signature.structured_input_signature[1]
    assert {name: (spec.dtype.name, spec.shape.as_list()) for name, spec in inputs.items()} == {
        name: (spec["dtype"], [None, *spec["shape"][1:]])
        for name, spec in SIGNATURE["inputs"].items()
    }
    assert list(outputs) == ["conversion_probability"]
    probabilities = outputs["conversion_probability"].numpy()
    assert probabilities.shape == (4, 1)
    assert ((probabilities > 0) & (probabilities < 1)).all()


def test_model_card_is_saved_next_to_the_model(trained_model_path, taobao_split):
    card = json.loads((trained_model_path / "model_card.json").read_text())

    assert card["sizes"] == {
        "train": len(taobao_split.train),
        "validation": len(taobao_split.validation),
        "test": len(taobao_split.test),
        "train_prefixes": len(prefixes_expand(taobao_split.train)),
    }
    assert set(card["baselines"]) == {"logistic_regression", "gradient_boosted_trees"}
    for metrics in [card["metrics"], *card["baselines"].values()]:
        assert set(metrics) == {"roc_auc", "pr_auc", "f1", "threshold", "roc_auc_at"}
        assert set(metrics["roc_auc_at"]) == {str(k) for k in PREFIX_LENGTHS}
    assert card["signature"]["outputs"] == {
        "conversion_probability": {"dtype": "float32", "shape": [-1, 1]}
    }
    assert (trained_model_path / "saved_model.pb").is_file()
    assert set(card["validation"]) == {"lstm", "logistic_regression", "gradient_boosted_trees"}
    assert card["calibration"]["a"] > 0
    test = prefixes_expand(taobao_split.test)
    calibration = card["calibration"]["test"]
    assert calibration["count"] == len(test)
    assert calibration["positive_rate"] == round(
        float(np.average(test.labels, weights=test.weights)), 4
    )
    assert card["calibration"]["target_ece"] == 0.03
    weights = sum(b["weight"] for b in calibration["bins"])
    assert weights == pytest.approx(test.weights.sum(), abs=0.01)
    assert card["signature"]["inputs"]["context"] == {"dtype": "float32", "shape": [-1, 6]}


def test_the_card_keeps_what_monitoring_compares_live_scores_with(trained_model_path, taobao_split):
    card = json.loads((trained_model_path / "model_card.json").read_text())
    test = prefixes_expand(taobao_split.test)
    scores = InProcessScorer.for_path(str(trained_model_path)).predict(test)

    monitoring = card["monitoring"]

    assert monitoring["test_prefix_roc_auc"] == pytest.approx(
        roc_auc_score(test.labels, scores, sample_weight=test.weights), abs=5e-5
    )
    stored = monitoring["score_distribution"]
    assert stored["count"] == len(test)
    shares, _ = np.histogram(scores, bins=[-np.inf, *stored["edges"], np.inf], weights=test.weights)
    assert stored["shares"] == pytest.approx(shares / test.weights.sum(), abs=1e-4)


def test_the_wide_part_sees_exactly_the_baselines_columns(taobao_split):
    import keras

    batch = taobao_split.test.take(np.arange(64))
    model = lstm_build(TrainingConfig(), aggregates_train=aggregate_features(batch))
    aggregates = keras.Model(model.inputs, model.get_layer("aggregates").output)

    for seen in (batch, dataset.sequences_prefix(batch, events=3)):
        np.testing.assert_allclose(
            aggregates.predict(seen.inputs(), verbose=0),
            aggregate_features(seen),
            rtol=1e-5,
            atol=1e-4,
        )


def test_rest_client_speaks_tf_servings_predict_format(
    tf_serving, trained_model_path, taobao_split
):
    batch = taobao_split.test.take(np.arange(5))
    # A generous timeout: this test is about the wire format, and a retry would add requests.
    client = TFServingScorer(tf_serving.url, version=1, timeout=30)

    remote = client.predict(batch, batch_size=3)

    local = InProcessScorer.for_path(str(trained_model_path)).predict(batch)
    np.testing.assert_allclose(remote, local, rtol=1e-5)
    assert [path for path, _ in tf_serving.requests] == [
        "/v1/models/conversion/versions/1:predict"
    ] * 2
    body = tf_serving.requests[0][1]
    assert body["signature_name"] == "serving_default"
    assert len(body["instances"]) == 3
    instance = body["instances"][0]
    assert sorted(instance) == ["category", "context", "event_type", "numeric"]
    assert len(instance["event_type"]) == dataset.MAX_LEN
    assert np.asarray(instance["numeric"]).shape == (dataset.MAX_LEN, 3)
    assert np.asarray(instance["context"]).shape == (len(dataset.CONTEXT_FEATURES),)
    np.testing.assert_allclose(instance["context"], batch.context[0], rtol=1e-6)


def test_the_context_input_changes_the_score(trained_model_path, taobao_split):
    batch = taobao_split.test.take(np.arange(8))
    scorer = InProcessScorer.for_path(str(trained_model_path))
    blank = dataset.SequenceBatch(
        **{
            name: np.zeros_like(batch.context) if name == "context" else getattr(batch, name)
            for name in dataset.SequenceBatch.__slots__
        }
    )

    assert batch.context.any()
    assert not np.allclose(scorer.predict(batch), scorer.predict(blank))


def test_rest_client_parses_named_output_predictions():
    body = {"predictions": [{"conversion_probability": [0.25]}, {"conversion_probability": [0.5]}]}

    assert TFServingScorer.parse_predictions(body, rows=2).tolist() == [0.25, 0.5]


def test_scoring_falls_back_in_process_when_tf_serving_is_down(trained_model_path, taobao_split):
    batch = taobao_split.test.take(np.arange(3))
    model_version = ModelVersion(name="conversion", version=1, path=str(trained_model_path))

    with override_settings(TF_SERVING_URL=closed_port_url()):
        scores = scores_predict(model_version=model_version, batch=batch)

    local = InProcessScorer.for_path(str(trained_model_path)).predict(batch)
    np.testing.assert_allclose(scores, local, rtol=1e-6)


def test_scoring_uses_tf_serving_when_it_answers(tf_serving, trained_model_path, taobao_split):
    batch = taobao_split.test.take(np.arange(2))
    model_version = ModelVersion(name="conversion", version=7, path=str(trained_model_path))

    with override_settings(TF_SERVING_URL=tf_serving.url):
        scores_predict(model_version=model_version, batch=batch)

    assert [path for path, _ in tf_serving.requests] == ["/v1/models/conversion/versions/7:predict"]


def test_a_session_unlike_any_in_training_cannot_push_the_wide_term_past_the_clip(taobao_split):
    import keras

    batch = taobao_split.test.take(np.arange(64))
    model = lstm_build(TrainingConfig(), aggregates_train=aggregate_features(batch))
    wide = keras.Model(model.inputs, model.get_layer("aggregates_clip").output)
    inputs = batch.inputs()
    inputs["context"] = np.full_like(inputs["context"], 50.0)

    values = wide.predict(inputs, verbose=0)

    assert np.abs(values).max() == pytest.approx(WIDE_CLIP)
