import copy
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from notifications import dataset
from notifications.model import (
    OUTPUT_NAME,
    TrainingConfig,
    TrainingResult,
    model_export,
    train_and_evaluate,
)

SHARED_DATA = Path(
    os.environ.get("CLICKSERVER_SHARED_DATA", Path(__file__).parents[3] / "shared" / "data")
)
TAOBAO = "clickstream/taobao_userbehavior/UserBehavior_head_814users.csv"


@pytest.fixture(scope="session")
def taobao_csv() -> Path:
    path = SHARED_DATA / TAOBAO
    if not path.is_file():
        pytest.skip(f"Taobao head not found at {path} (set CLICKSERVER_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def taobao_split(taobao_csv) -> dataset.Split:
    raw = dataset.taobao_read(str(taobao_csv), max_users=200)
    return dataset.split_by_time(dataset.sequences_build(dataset.taobao_sessionize(raw)))


# The small training config of the slow tests: the trained model below, and a retraining
# (test_model_promotion) that reuses it.
TINY = TrainingConfig(epochs=2, batch_size=256)


@pytest.fixture(scope="session")
def trained(taobao_split) -> TrainingResult:
    """One small model trained (TINY) on the first 200 Taobao users, shared by the slow tests;
    its card is never changed here (a user that changes a card works on a copy)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return train_and_evaluate(taobao_split, config=TINY)


@pytest.fixture(scope="session")
def trained_model_path(trained, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "conversion" / "1"
    return model_export(trained.model, path=path, card=copy.deepcopy(trained.card))


class FakeTFServing:
    """A stand-in for the TF Serving binary: its REST `:predict` route, run by the SavedModel.

    Only the outside world is faked; our client talks real HTTP to it.
    """

    def __init__(self, model_path: Path) -> None:
        import tensorflow as tf

        signature = tf.saved_model.load(str(model_path)).signatures["serving_default"]
        # Like the real server, answer only once the model is warm: a first (tracing) call on a
        # loaded CI machine can outlast the client's timeout and turn one request into retries.
        signature(
            **{
                name: tf.zeros([1, *spec.shape[1:]], dtype=spec.dtype)
                for name, spec in signature.structured_input_signature[1].items()
            }
        )
        self.requests: list[tuple[str, dict]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append((self.path, body))
                if not self.path.startswith("/v1/models/conversion") or not self.path.endswith(
                    ":predict"
                ):
                    self._reply(404, {"error": "Servable not found"})
                    return
                instances = body["instances"]
                inputs = {
                    name: tf.constant(
                        np.asarray([row[name] for row in instances]), dtype=spec.dtype
                    )
                    for name, spec in signature.structured_input_signature[1].items()
                }
                outputs = signature(**inputs)[OUTPUT_NAME].numpy().tolist()
                self._reply(200, {"predictions": outputs})

            def _reply(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def tf_serving(trained_model_path):
    server = FakeTFServing(trained_model_path)
    yield server
    server.close()
