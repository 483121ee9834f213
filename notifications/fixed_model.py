"""A fixed conversion model: untrained, with the serving signature, whose score is a known
function of the session's length.

For the tests, the campaign simulator's test and the campaign latency bench: they need live
scores they can predict (which event moves a session into a band) from the real scoring path,
a SavedModel loaded by `scoring.InProcessScorer` (or served by TF Serving), without training a
model first. The score of a session with n events (its last MAX_LEN) is n / (n + HALF_AT):
0.25 after 2 events, 0.4 after 4, 0.5 after HALF_AT, 0.6 after 9.
"""

from datetime import datetime
from pathlib import Path

from events.models import Shop
from notifications import selectors, services
from notifications.dataset import CONTEXT_FEATURES, MAX_LEN, NUMERIC_FEATURES
from notifications.model import OUTPUT_NAME
from notifications.models import ModelVersion
from notifications.scoring import SIGNATURE_NAME

HALF_AT = 6  # events at which the score is 0.5
CARD = {"kind": "fixed", "score": f"events / (events + {HALF_AT})"}


def fixed_score(events: int) -> float:
    """The score the fixed model gives a session of `events` events."""
    counted = min(events, MAX_LEN)
    return counted / (counted + HALF_AT)


def fixed_model_export(*, path: Path) -> Path:
    """Write the fixed model as a SavedModel at `path` (the TF Serving layout's version folder)."""
    import tensorflow as tf

    class FixedModel(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, MAX_LEN], tf.int32, name="event_type"),
                tf.TensorSpec([None, MAX_LEN], tf.int32, name="category"),
                tf.TensorSpec([None, MAX_LEN, len(NUMERIC_FEATURES)], tf.float32, name="numeric"),
                tf.TensorSpec([None, len(CONTEXT_FEATURES)], tf.float32, name="context"),
            ]
        )
        def serve(self, event_type, category, numeric, context):
            del category, numeric, context
            # Padding is event type 0; every event, of whatever type, is a step.
            steps = tf.reduce_sum(tf.cast(event_type > 0, tf.float32), axis=1, keepdims=True)
            return {OUTPUT_NAME: steps / (steps + HALF_AT)}

    module = FixedModel()
    path.parent.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(module, str(path), signatures={SIGNATURE_NAME: module.serve})
    return path


def fixed_model_activate(*, shop: Shop, directory: Path, now: datetime) -> ModelVersion:
    """Export the fixed model under `directory/conversion/<version>/` and make it the shop's
    active model, so the live scores (`services.scores_refresh`) come from it."""
    version = selectors.model_version_next_number()
    path = fixed_model_export(path=directory / services.MODEL_NAME / str(version))
    model_version = services.model_version_register(
        shop=shop, version=version, path=path, card=CARD, trained_at=now
    )
    return services.model_version_activate(model_version=model_version)
