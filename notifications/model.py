"""The conversion model: a small Keras LSTM, its baselines, evaluation and export.

TensorFlow/Keras are imported inside the functions that need them: importing this module (the
admin, the API, a web worker) must not pay TensorFlow's start-up time and memory.
"""

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, f1_score, precision_recall_curve, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from notifications.calibration import calibration_report
from notifications.dataset import (
    CATEGORY_BUCKETS,
    CONTEXT_FEATURES,
    EVENT_TYPES,
    MAX_LEN,
    NUMERIC_FEATURES,
    SequenceBatch,
    Split,
    prefixes_expand,
    sequences_prefix,
)
from notifications.monitor.metrics import score_distribution

PREFIX_LENGTHS = (3, 5, 10)
# The standardised aggregates are clipped to this many standard deviations: a session unlike any
# in training (no landing page, a 400-view bot) must not drive the linear term to +-infinity.
WIDE_CLIP = 5.0
# What the model card's test-split calibration is held to.
TARGET_ECE = 0.03
OUTPUT_NAME = "conversion_probability"
SIGNATURE = {
    "name": "serving_default",
    "inputs": {
        "event_type": {"dtype": "int32", "shape": [-1, MAX_LEN]},
        "category": {"dtype": "int32", "shape": [-1, MAX_LEN]},
        "numeric": {"dtype": "float32", "shape": [-1, MAX_LEN, len(NUMERIC_FEATURES)]},
        "context": {"dtype": "float32", "shape": [-1, len(CONTEXT_FEATURES)]},
    },
    "outputs": {OUTPUT_NAME: {"dtype": "float32", "shape": [-1, 1]}},
    "event_types": list(EVENT_TYPES),
    "category_buckets": CATEGORY_BUCKETS,
    "numeric_features": list(NUMERIC_FEATURES),
    "context_features": list(CONTEXT_FEATURES),
}

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class TrainingConfig:
    # Chosen on validation ROC-AUC of the Taobao head (seed 7), never on test: 16 units, batch
    # 256 and patience 5 beat 32 units / batch 64 (0.695 vs 0.677); dropout 0.5 tied 0.3.
    lstm_units: int = 16
    embedding_dim: int = 8
    hidden_units: int = 8
    dropout: float = 0.3
    learning_rate: float = 3e-3
    epochs: int = 25
    batch_size: int = 256
    patience: int = 5
    seed: int = 7


@dataclass(slots=True)
class Metrics:
    roc_auc: float | None
    pr_auc: float | None
    f1: float
    threshold: float
    roc_auc_at: dict[str, float | None] = field(default_factory=dict)


@dataclass(slots=True)
class TrainingResult:
    model: Any  # keras.Model
    card: dict[str, Any]


def _roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    # Undefined with one class; a tiny test slice can have no buyer at all.
    if len(np.unique(labels)) < 2:
        return None
    return round(float(roc_auc_score(labels, scores)), 4)


def threshold_choose(labels: np.ndarray, scores: np.ndarray) -> float:
    """The threshold that maximises F1 on these (validation) scores."""
    if labels.sum() == 0:
        return 0.5
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def metrics_compute(
    *,
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    prefix_scores: dict[int, np.ndarray],
) -> Metrics:
    has_both = len(np.unique(labels)) == 2
    return Metrics(
        roc_auc=_roc_auc(labels, scores),
        pr_auc=round(float(average_precision_score(labels, scores)), 4) if has_both else None,
        f1=round(float(f1_score(labels, scores >= threshold, zero_division=0)), 4),
        threshold=round(threshold, 4),
        roc_auc_at={str(k): _roc_auc(labels, s) for k, s in prefix_scores.items()},
    )


def aggregate_features(batch: SequenceBatch) -> np.ndarray:
    """Per-session aggregates for the baselines, from the same (possibly prefixed) arrays.

    The person's context (history before the session) is appended, as the LSTM gets it too.
    """
    mask = batch.event_type > 0
    length = mask.sum(axis=1)
    vocabulary = len(EVENT_TYPES)
    counts = np.eye(vocabulary, dtype=np.float32)[batch.event_type][:, :, 1:].sum(axis=1)
    last = batch.event_type[np.arange(len(batch)), np.maximum(length - 1, 0)]
    last_onehot = np.eye(vocabulary, dtype=np.float32)[last][:, 1:]
    gaps = np.where(mask, batch.numeric[:, :, 0], 0.0)
    prices = np.where(mask, batch.numeric[:, :, 2], 0.0)
    safe_length = np.maximum(length, 1)[:, None]
    categories = np.array(
        [len(np.unique(row[m])) for row, m in zip(batch.category, mask, strict=True)]
    )
    return np.hstack(
        [
            np.log1p(length)[:, None],
            np.log1p(counts),
            counts / safe_length,
            last_onehot,
            gaps.sum(axis=1, keepdims=True),
            gaps.max(axis=1, keepdims=True),
            prices.sum(axis=1, keepdims=True) / safe_length,
            np.log1p(categories)[:, None],
            batch.context,
        ]
    ).astype(np.float32)


def _balanced_weights(batch: SequenceBatch) -> np.ndarray:
    """The batch's row weights times class weights that give both classes the same total."""
    weights = batch.sample_weights().astype(np.float64)
    positive = batch.labels == 1
    total = weights.sum()
    positives = max(weights[positive].sum(), 1e-9)
    negatives = max(weights[~positive].sum(), 1e-9)
    balanced = np.where(positive, total / (2 * positives), total / (2 * negatives))
    return (weights * balanced).astype(np.float32)


def baselines_evaluate(
    split: Split, *, validation_roc_auc: dict[str, float | None] | None = None
) -> dict[str, dict[str, Any]]:
    """Logistic regression and gradient-boosted trees on aggregates, on the same split.

    Fitted on the training sessions' prefixes (as the LSTM is), evaluated like it.
    `validation_roc_auc`, when given, receives each baseline's validation ROC-AUC.
    """
    models = {
        "logistic_regression": make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=1000, class_weight="balanced")
        ),
        "gradient_boosted_trees": HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.05, class_weight="balanced", random_state=0
        ),
    }
    results = {}
    train = prefixes_expand(split.train)
    for name, estimator in models.items():
        step = estimator.steps[-1][0] if hasattr(estimator, "steps") else None
        weight_name = f"{step}__sample_weight" if step else "sample_weight"
        estimator.fit(
            aggregate_features(train), train.labels, **{weight_name: train.sample_weights()}
        )

        def score(batch: SequenceBatch, estimator=estimator) -> np.ndarray:
            return estimator.predict_proba(aggregate_features(batch))[:, 1]

        metrics, validation = _evaluate(split, score)
        results[name] = asdict(metrics)
        if validation_roc_auc is not None:
            validation_roc_auc[name] = validation
    return results


def _evaluate(
    split: Split, score: Callable[[SequenceBatch], np.ndarray]
) -> tuple[Metrics, float | None]:
    """Test metrics (threshold chosen on validation) and the validation ROC-AUC."""
    validation_scores = score(split.validation)
    threshold = threshold_choose(split.validation.labels, validation_scores)
    metrics = metrics_compute(
        labels=split.test.labels,
        scores=score(split.test),
        threshold=threshold,
        prefix_scores={k: score(sequences_prefix(split.test, events=k)) for k in PREFIX_LENGTHS},
    )
    return metrics, _roc_auc(split.validation.labels, validation_scores)


def aggregates_graph(event_type: Any, category: Any, numeric: Any, context: Any) -> Any:
    """`aggregate_features` as Keras ops, inside the model: the baselines' columns, in order.

    Computed in-graph from the signature's inputs, so serving sends nothing extra;
    test_model checks that it equals the numpy version.
    """
    import keras
    from keras import ops

    vocabulary = len(EVENT_TYPES)
    mask = ops.cast(ops.greater(event_type, 0), "float32")
    length = ops.sum(mask, axis=1, keepdims=True)
    counts = ops.sum(ops.one_hot(event_type, vocabulary), axis=1)[:, 1:]
    last_index = ops.maximum(ops.cast(length, "int32") - 1, 0)
    last = ops.take_along_axis(event_type, last_index, axis=1)[:, 0]
    last_onehot = ops.one_hot(last, vocabulary)[:, 1:]
    gaps = numeric[:, :, 0] * mask
    prices = numeric[:, :, 2] * mask
    safe_length = ops.maximum(length, 1.0)
    seen = ops.sum(ops.one_hot(category, CATEGORY_BUCKETS + 1) * mask[:, :, None], axis=1)
    categories = ops.sum(ops.cast(ops.greater(seen, 0), "float32"), axis=1, keepdims=True)
    return keras.layers.Concatenate(name="aggregates")(
        [
            ops.log1p(length),
            ops.log1p(counts),
            counts / safe_length,
            last_onehot,
            ops.sum(gaps, axis=1, keepdims=True),
            ops.max(gaps, axis=1, keepdims=True),
            ops.sum(prices, axis=1, keepdims=True) / safe_length,
            ops.log1p(categories),
            context,
        ]
    )


def lstm_build(config: TrainingConfig, *, aggregates_train: np.ndarray | None = None) -> Any:
    """Wide & deep: the LSTM over the steps (deep) and the per-session aggregates with the
    person's context (wide: the baselines' columns, computed in-graph).

    `aggregates_train` (`aggregate_features` of the training split) sets their normalisation,
    which is stored in the model, so serving sends the raw inputs.
    """
    # One function on purpose (~60 lines): the functional graph reads whole, input to output, and
    # its layer names are what lstm_calibrate and the exported signature rely on.
    import keras

    event_type = keras.Input(shape=(MAX_LEN,), dtype="int32", name="event_type")
    category = keras.Input(shape=(MAX_LEN,), dtype="int32", name="category")
    numeric = keras.Input(shape=(MAX_LEN, len(NUMERIC_FEATURES)), dtype="float32", name="numeric")
    context = keras.Input(shape=(len(CONTEXT_FEATURES),), dtype="float32", name="context")
    # Padding is event_type 0; mask_zero carries that mask through the concatenation to the LSTM.
    type_vectors = keras.layers.Embedding(
        len(EVENT_TYPES), config.embedding_dim, mask_zero=True, name="type_embedding"
    )(event_type)
    category_vectors = keras.layers.Embedding(
        CATEGORY_BUCKETS + 1, config.embedding_dim, name="category_embedding"
    )(category)
    # log seconds reach ~11; bring the numbers near the embeddings' scale.
    scaled = keras.layers.Rescaling(1 / 8, name="numeric_scale")(numeric)
    steps = keras.layers.Concatenate(name="steps")([type_vectors, category_vectors, scaled])
    # Unrolled: 50 small steps as straight-line ops beat a while loop for single-session latency.
    state = keras.layers.LSTM(config.lstm_units, unroll=True, name="lstm")(steps)
    # The masked mean of the steps gives the dense head the session's mix of behaviour directly,
    # which the LSTM would otherwise have to learn to count.
    mix = keras.layers.GlobalAveragePooling1D(name="step_mean")(steps)
    # The person's history before the session is the strongest signal and no step carries it;
    # the session's aggregates are what sessions this short mostly say.
    normalise = keras.layers.Normalization(name="aggregates_norm")
    aggregates = aggregates_graph(event_type, category, numeric, context)
    if aggregates_train is not None and len(aggregates_train):
        normalise.adapt(aggregates_train)
    else:
        normalise.build((None, aggregates.shape[-1]))
    wide = keras.layers.Activation(
        lambda x: keras.ops.clip(x, -WIDE_CLIP, WIDE_CLIP), name="aggregates_clip"
    )(normalise(aggregates))
    joined = keras.layers.Concatenate(name="joined")([state, mix, wide])
    hidden = keras.layers.Dense(config.hidden_units, activation="relu", name="hidden")(joined)
    hidden = keras.layers.Dropout(config.dropout, name="dropout")(hidden)
    # The wide part reaches the output directly (a logistic term on what the linear baseline
    # sees); the deep part adds what the order of the steps knows.
    logit = keras.layers.Add(name="logit")(
        [
            keras.layers.Dense(1, name="deep_logit")(hidden),
            keras.layers.Dense(1, use_bias=False, name="wide_logit")(wide),
        ]
    )
    probability = keras.layers.Activation("sigmoid", name=OUTPUT_NAME)(logit)
    model = keras.Model(
        [event_type, category, numeric, context], probability, name="conversion_lstm"
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc")],
    )
    return model


def lstm_predict(model: Any, batch: SequenceBatch, *, batch_size: int = 1024) -> np.ndarray:
    return model.predict(batch.inputs(), batch_size=batch_size, verbose=0).reshape(-1)


def lstm_calibrate(model: Any, validation: SequenceBatch) -> tuple[Any, dict[str, Any]]:
    """Platt scaling on validation: class weights inflate the raw output (a balanced model says
    ~0.5 for a typical session), so the exported model maps its logit `z` to
    `sigmoid(a * z + b)`, fitted on the validation split's prefixes (what live scoring sees),
    with their weights. Monotonic (a > 0): rankings and ROC-AUC do not change; the score becomes
    a usable probability.
    """
    import keras

    logit_model = keras.Model(model.inputs, model.get_layer("logit").output)
    logits = logit_model.predict(validation.inputs(), batch_size=1024, verbose=0).reshape(-1, 1)
    a, b = 1.0, 0.0
    if len(np.unique(validation.labels)) == 2:
        platt = LogisticRegression(C=1e4, max_iter=1000).fit(
            logits, validation.labels, sample_weight=validation.sample_weights()
        )
        a, b = float(platt.coef_[0, 0]), float(platt.intercept_[0])
    if a <= 0:  # a model no better than chance on validation: keep its ranking
        a, b = 1.0, 0.0
    scale = keras.layers.Dense(1, activation="sigmoid", name="calibrated")
    probability = scale(model.get_layer("logit").output)
    scale.set_weights([np.array([[a]], dtype=np.float32), np.array([b], dtype=np.float32)])
    calibrated = keras.Model(model.inputs, probability, name="conversion_lstm_calibrated")
    return calibrated, {"a": round(a, 6), "b": round(b, 6)}


def monitoring_reference(test: SequenceBatch, scores: np.ndarray) -> dict[str, Any]:
    """The card's `monitoring` part from the test split's prefixes and their scores."""
    weights = test.sample_weights()
    auc = None
    if len(np.unique(test.labels)) == 2:
        auc = round(float(roc_auc_score(test.labels, scores, sample_weight=weights)), 4)
    return {
        "test_prefix_roc_auc": auc,
        "score_distribution": score_distribution(scores, weights=weights),
    }


def train_and_evaluate(
    split: Split, *, config: TrainingConfig | None = None, progress: Progress | None = None
) -> TrainingResult:
    """Fit the LSTM (class-weighted, early-stopped on validation AUC), evaluate it and baselines."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    config = config if config is not None else TrainingConfig()
    say = progress or (lambda message: None)
    if len(split.train) == 0 or len(split.validation) == 0 or len(split.test) == 0:
        raise ValueError("every part of the split needs sessions")
    keras.utils.set_random_seed(config.seed)
    # Live sessions are scored while they are going: fit and calibrate on every prefix.
    train = prefixes_expand(split.train)
    validation = prefixes_expand(split.validation)
    test = prefixes_expand(split.test)
    model = lstm_build(config, aggregates_train=aggregate_features(train))
    started = time.monotonic()
    _lstm_fit(model, split=split, train=train, validation=validation, config=config, say=say)
    say(f"trained in {time.monotonic() - started:.1f}s; evaluating LSTM and baselines")
    model, calibration = lstm_calibrate(model, validation)
    test_scores = lstm_predict(model, test)
    test_prefixes = calibration_report(
        labels=test.labels, scores=test_scores, weights=test.sample_weights()
    )
    # On prefixes only: a finished session's score conditions on "nothing more happened", which
    # the model is never asked live, so its calibration would measure a question nobody asks.
    calibration.update(target_ece=TARGET_ECE, test=test_prefixes.as_dict())
    say(f"test calibration (prefixes): ECE {test_prefixes.ece}, Brier {test_prefixes.brier}")
    lstm, lstm_validation = _evaluate(split, lambda batch: lstm_predict(model, batch))
    validation_auc = {"lstm": lstm_validation}
    baselines = baselines_evaluate(split, validation_roc_auc=validation_auc)
    card = {
        **_card_data(split, train_prefixes=len(train)),
        "config": asdict(config),
        "metrics": asdict(lstm),
        "calibration": calibration,
        "baselines": baselines,
        # Validation ROC-AUC of every model: what model choices may be based on (never test).
        "validation": validation_auc,
        "signature": SIGNATURE,
        # What the daily check in production compares the live scores with: the test prefixes'
        # ROC-AUC (live scores are prefixes too) and their score distribution (drift).
        "monitoring": monitoring_reference(test, test_scores),
    }
    return TrainingResult(model=model, card=card)


def _lstm_fit(
    model: Any,
    *,
    split: Split,
    train: SequenceBatch,
    validation: SequenceBatch,
    config: TrainingConfig,
    say: Progress,
) -> None:
    """Class-weighted fit on the prefixes, early-stopped on validation AUC when it has both
    classes; `say` hears each epoch."""
    import keras

    class Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            say(
                f"epoch {epoch + 1}/{config.epochs}: loss {logs.get('loss', 0):.4f} "
                f"val_auc {logs.get('val_auc', 0):.4f}"
            )

    monitor = "val_auc" if split.validation.labels.min() != split.validation.labels.max() else None
    callbacks: list[Any] = [Report()]
    if monitor:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor, mode="max", patience=config.patience, restore_best_weights=True
            )
        )
    model.fit(
        train.inputs(),
        train.labels,
        sample_weight=_balanced_weights(train),
        validation_data=(validation.inputs(), validation.labels, validation.sample_weights()),
        epochs=config.epochs,
        batch_size=config.batch_size,
        callbacks=callbacks,
        verbose=0,
    )


def _card_data(split: Split, *, train_prefixes: int) -> dict[str, Any]:
    """What the model card says of the data: its time window, sizes and class balance."""
    return {
        "name": "conversion",
        "data_window": {
            "train_from": _iso(split.train.started_at.min()),
            "validation_from": split.validation_starts_at.isoformat() + "Z",
            "test_from": split.test_starts_at.isoformat() + "Z",
            "test_to": _iso(split.test.ended_at.max()),
        },
        "sizes": {
            "train": len(split.train),
            "validation": len(split.validation),
            "test": len(split.test),
            "train_prefixes": train_prefixes,
        },
        "class_balance": {
            part: round(float(batch.labels.mean()), 4)
            for part, batch in (
                ("train", split.train),
                ("validation", split.validation),
                ("test", split.test),
            )
        },
    }


def _iso(value: np.datetime64) -> str:
    return str(np.datetime_as_string(value, unit="s")) + "Z"


def model_export(model: Any, *, path: Path, card: dict[str, Any]) -> Path:
    """Write a SavedModel with a `serving_default` signature, and the card next to it."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(event_type: Any, category: Any, numeric: Any, context: Any) -> dict[str, Any]:
        output = model([event_type, category, numeric, context], training=False)
        return {OUTPUT_NAME: output}

    archive.add_endpoint(
        name="serving_default",
        fn=serve,
        input_signature=[
            tf.TensorSpec([None, MAX_LEN], tf.int32, name="event_type"),
            tf.TensorSpec([None, MAX_LEN], tf.int32, name="category"),
            tf.TensorSpec([None, MAX_LEN, len(NUMERIC_FEATURES)], tf.float32, name="numeric"),
            tf.TensorSpec([None, len(CONTEXT_FEATURES)], tf.float32, name="context"),
        ],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    archive.write_out(str(path), verbose=False)
    (path / "model_card.json").write_text(json.dumps(card, indent=2, sort_keys=True))
    return path
