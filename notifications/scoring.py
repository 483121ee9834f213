"""Scoring backends: TensorFlow Serving's REST API, or the same SavedModel in-process.

Both take a `SequenceBatch` (already padded to MAX_LEN) and send it in fixed-size chunks. With
settings.TF_SERVING_URL set, TF Serving is tried first and any failure (after retries) falls back to
in-process inference, so a TF Serving outage degrades latency, never the scores.
TensorFlow is imported only when a model is loaded in-process.
"""

import logging
import os
import threading
import time
from typing import Any

import numpy as np
import requests
from django.conf import settings

from notifications.dataset import SequenceBatch
from notifications.models import ModelVersion

logger = logging.getLogger(__name__)

BATCH_SIZE = 256
SIGNATURE_NAME = "serving_default"
OUTPUT_NAME = "conversion_probability"


class ScoringUnavailable(Exception):
    """The remote backend did not answer usefully after its retries."""


def _chunks(batch: SequenceBatch, size: int):
    inputs = batch.inputs()
    for start in range(0, len(batch), size):
        yield {name: array[start : start + size] for name, array in inputs.items()}


class InProcessScorer:
    """The SavedModel's `serving_default` signature, loaded once per process and warmed up."""

    _lock = threading.Lock()
    _loaded: dict[str, "InProcessScorer"] = {}

    def __init__(self, path: str) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        self._tf = tf
        self._function = tf.saved_model.load(path).signatures[SIGNATURE_NAME]
        self._input_specs = self._function.structured_input_signature[1]
        # The first call traces and allocates; pay for it here, not on the first live request.
        self._call({name: self._zeros(spec, 1) for name, spec in self._input_specs.items()})
        self._call(
            {name: self._zeros(spec, BATCH_SIZE) for name, spec in self._input_specs.items()}
        )

    @classmethod
    def for_path(cls, path: str) -> "InProcessScorer":
        with cls._lock:
            scorer = cls._loaded.get(path)
            if scorer is None:
                scorer = cls._loaded[path] = cls(path)
            return scorer

    @staticmethod
    def _zeros(spec: Any, rows: int) -> np.ndarray:
        return np.zeros([rows, *spec.shape[1:]], dtype=spec.dtype.as_numpy_dtype)

    def _call(self, chunk: dict[str, np.ndarray]) -> np.ndarray:
        tensors = {name: self._tf.constant(value) for name, value in chunk.items()}
        return self._function(**tensors)[OUTPUT_NAME].numpy().reshape(-1)

    def predict(self, batch: SequenceBatch, *, batch_size: int = BATCH_SIZE) -> np.ndarray:
        parts = [self._call(chunk) for chunk in _chunks(batch, batch_size)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


class TFServingScorer:
    """TF Serving's REST predict API in the row ("instances") format.

    Request:  POST {url}/v1/models/{name}[/versions/{version}]:predict
              {"signature_name": "serving_default", "instances": [{"event_type": [...], ...}]}
    Response: {"predictions": [[p], ...]} (one output) or [{"conversion_probability": [p]}, ...].
    """

    def __init__(
        self,
        url: str,
        *,
        name: str = "conversion",
        version: int | None = None,
        timeout: float = 2.0,
        retries: int = 2,
        backoff: float = 0.1,
        http: requests.Session | None = None,
    ) -> None:
        self.endpoint = f"{url.rstrip('/')}/v1/models/{name}"
        if version is not None:
            self.endpoint += f"/versions/{version}"
        self.endpoint += ":predict"
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.http = http or requests.Session()

    @staticmethod
    def request_body(chunk: dict[str, np.ndarray]) -> dict[str, Any]:
        rows = len(next(iter(chunk.values())))
        instances = [
            {name: array[i].tolist() for name, array in chunk.items()} for i in range(rows)
        ]
        return {"signature_name": SIGNATURE_NAME, "instances": instances}

    @staticmethod
    def parse_predictions(body: dict[str, Any], *, rows: int) -> np.ndarray:
        predictions = body.get("predictions")
        if not isinstance(predictions, list) or len(predictions) != rows:
            raise ScoringUnavailable(f"unexpected predict response: {str(body)[:200]}")
        values = [p[OUTPUT_NAME] if isinstance(p, dict) else p for p in predictions]
        return np.asarray(values, dtype=np.float32).reshape(-1)

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        last_error: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                response = self.http.post(self.endpoint, json=body, timeout=self.timeout)
                if response.status_code < 500:
                    response.raise_for_status()
                    return response.json()
                last_error = ScoringUnavailable(f"TF Serving answered {response.status_code}")
            except (requests.ConnectionError, requests.Timeout) as error:
                last_error = error
            except (requests.HTTPError, ValueError) as error:
                # A 4xx or a body that is not JSON will not get better by retrying.
                raise ScoringUnavailable(str(error)) from error
            if attempt < self.retries:
                time.sleep(self.backoff * 2**attempt)
        raise ScoringUnavailable(f"TF Serving unreachable: {last_error}") from last_error

    def predict(self, batch: SequenceBatch, *, batch_size: int = BATCH_SIZE) -> np.ndarray:
        parts = []
        for chunk in _chunks(batch, batch_size):
            body = self._post(self.request_body(chunk))
            parts.append(self.parse_predictions(body, rows=len(chunk["event_type"])))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def scores_predict(*, model_version: ModelVersion, batch: SequenceBatch) -> np.ndarray:
    """Conversion probabilities for the batch: TF Serving if configured, else in-process."""
    if settings.TF_SERVING_URL:
        remote = TFServingScorer(
            settings.TF_SERVING_URL, name=model_version.name, version=model_version.version
        )
        try:
            return remote.predict(batch)
        except ScoringUnavailable as error:
            logger.warning("TF Serving failed, scoring in-process: %s", error)
    return InProcessScorer.for_path(model_version.path).predict(batch)
