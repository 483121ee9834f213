"""The lean handler of clickserver/wsgi.py answers the ingestion URLs exactly as the full stack."""

import gzip
import inspect
import time

import orjson
import pytest
from django.db import connection
from django.test import Client
from django.test.client import ClientHandler, RequestFactory

from clickserver import wsgi
from events.models import Event, RejectedEvent

ORIGIN = "https://any-storefront.example"


class IngestClientHandler(wsgi.IngestStack, ClientHandler):
    """The test client's handler with the lean stack, as the WSGI entry point builds it."""


def lean_client() -> Client:
    client = Client()
    client.handler = IngestClientHandler(enforce_csrf_checks=False)
    return client


def post(client: Client, path: str, body, **headers):
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.generic("POST", path, data, content_type="application/json", headers=headers)


def page_view(event_id: str) -> dict:
    return {"event_id": event_id, "type": "page_view", "anonymous_id": "anon-1"}


def answer(response) -> tuple:
    return response.status_code, response.content, sorted(response.items())


@pytest.mark.parametrize(
    "path",
    ["/events/", "/events/purchase/", "/events/add_cart/", "/v1/batch", "/v1/track", "/v1/alias"],
)
def test_the_ingestion_paths_take_the_lean_handler(path):
    assert path in wsgi.INGEST_PATHS


@pytest.mark.parametrize(
    "path", ["/events", "/events/shopify_webhook_purchase/", "/webhooks/shopify/", "/health/"]
)
def test_every_other_path_takes_the_full_handler(path):
    assert path not in wsgi.INGEST_PATHS


def test_the_lean_handler_runs_only_the_ingestion_middleware():
    handler = wsgi.IngestHandler()

    chain = []
    layer = handler._middleware_chain
    # Each layer is convert_exception_to_response(middleware); the innermost wraps the view call.
    while not inspect.ismethod(middleware := layer.__wrapped__):
        chain.append(type(middleware).__name__)
        layer = middleware.get_response

    assert chain == [
        "MetricsMiddleware",
        "SecurityMiddleware",
        "CorsMiddleware",
        "CommonMiddleware",
        "XFrameOptionsMiddleware",
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "body", "extra"),
    [
        ("/events/", page_view("same-id"), {}),
        ("/events/", {"batch": [page_view("b-1"), {"type": "page_view"}]}, {}),
        ("/events/", b'{"type": "page_view",', {}),
        ("/events/", {"batch": [page_view(f"e-{i}") for i in range(501)]}, {}),
        ("/events/", gzip.compress(orjson.dumps(page_view("gz"))), {"Content-Encoding": "gzip"}),
        ("/events/", page_view("e-1"), {"X-Write-Key": "wk_unknown"}),
        ("/events/purchase/", {"event_id": "p-1", "user_id": "u-1"}, {}),
        ("/v1/track", {"messageId": "m-1", "anonymousId": "a", "event": "Product Viewed"}, {}),
    ],
)
def test_lean_and_full_stacks_give_the_same_answer(shop, path, body, extra):
    headers = {"X-Write-Key": shop.write_key, "Origin": ORIGIN, **extra}

    full = post(Client(), path, body, **headers)
    Event.objects.all().delete()
    RejectedEvent.objects.all().delete()
    lean = post(lean_client(), path, body, **headers)

    assert answer(lean) == answer(full)
    assert lean["Access-Control-Allow-Origin"] == "*"


@pytest.mark.django_db
def test_lean_stack_stores_the_event(shop):
    response = post(lean_client(), "/events/", page_view("e-1"), **{"X-Write-Key": shop.write_key})

    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert list(Event.objects.values_list("shop_id", "event_id")) == [(shop.pk, "e-1")]


@pytest.mark.django_db
def test_lean_stack_answers_cors_preflight_like_the_full_one():
    headers = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-write-key",
    }

    full = Client().options("/events/", headers=headers)
    lean = lean_client().options("/events/", headers=headers)

    assert answer(lean) == answer(full)
    assert lean.status_code == 200
    assert "x-write-key" in lean["Access-Control-Allow-Headers"]


@pytest.mark.django_db
def test_lean_stack_answers_other_methods_through_drf():
    full = Client().get("/events/")
    lean = lean_client().get("/events/")

    assert answer(lean) == answer(full)
    assert lean.status_code == 405
    assert lean.json()["code"] == "method_not_allowed"


@pytest.mark.django_db
def test_lean_stack_refuses_an_unknown_host(shop):
    response = post(lean_client(), "/events/", page_view("e-1"), **{"Host": "evil.example"})

    assert response.status_code == 400
    assert not Event.objects.exists()


def wsgi_post(path: str, body: dict, **headers) -> tuple[str, dict, type]:
    """POST through the real WSGI entry point: its signals open and close connections."""
    environ = (
        RequestFactory()
        .generic("POST", path, orjson.dumps(body), content_type="application/json", headers=headers)
        .environ
    )
    started = []
    response = wsgi.application(environ, lambda status, headers: started.append(status))
    content = b"".join(response)
    response.close()
    return started[0], orjson.loads(content), response._handler_class


def kill_this_threads_connection() -> None:
    """End the server side of this thread's connection; the client is not told."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        (connection_id,) = cursor.fetchone()
    other = connection.get_new_connection(connection.get_connection_params())
    other.cursor().execute(f"KILL CONNECTION {int(connection_id)}")
    other.close()


@pytest.mark.django_db(transaction=True)
def test_the_wsgi_entry_point_serves_ingestion_with_the_lean_handler(shop):
    key = {"X-Write-Key": shop.write_key}

    status, body, handler_class = wsgi_post("/events/", page_view("e-1"), **key)

    assert (status, body) == ("202 Accepted", {"accepted": 1, "duplicates": 0, "rejected": []})
    assert handler_class is wsgi.IngestHandler
    assert Event.objects.get().event_id == "e-1"


@pytest.mark.django_db(transaction=True)
def test_a_connection_lost_between_busy_requests_costs_one_503_then_recovers(shop):
    key = {"X-Write-Key": shop.write_key}
    wsgi_post("/events/", page_view("warm-up"), **key)
    kill_this_threads_connection()

    lost, lost_body, _ = wsgi_post("/events/", page_view("lost"), **key)
    again, _, _ = wsgi_post("/events/", page_view("again"), **key)

    assert (lost, lost_body["code"]) == ("503 Service Unavailable", "unavailable")
    assert again == "202 Accepted"
    assert set(Event.objects.values_list("event_id", flat=True)) == {"warm-up", "again"}


@pytest.mark.django_db(transaction=True)
def test_a_connection_idle_for_a_while_is_checked_before_use(shop):
    key = {"X-Write-Key": shop.write_key}
    wsgi_post("/events/", page_view("warm-up"), **key)
    kill_this_threads_connection()
    time.sleep(wsgi.HEALTH_CHECK_AFTER_IDLE_SECONDS + 0.1)

    status, _, _ = wsgi_post("/events/", page_view("after-idle"), **key)

    assert status == "202 Accepted"
