"""The OpenAPI schema describes what the API does: generated clients and fuzzers read it."""

import pytest
from django.core.management import call_command
from drf_spectacular.generators import SchemaGenerator

ENVELOPE = {"$ref": "#/components/schemas/Error"}


@pytest.fixture(scope="module")
def schema():
    return SchemaGenerator().get_schema(request=None, public=True)


def _operation(schema, path: str, method: str = "get") -> dict:
    return schema["paths"][path][method]


def _parameters(operation: dict) -> set[str]:
    return {parameter["name"] for parameter in operation.get("parameters", [])}


def _error_codes(operation: dict) -> set[str]:
    return {
        code
        for code, response in operation["responses"].items()
        if response.get("content", {}).get("application/json", {}).get("schema") == ENVELOPE
    }


def test_schema_generation_passes_validation_without_a_warning(tmp_path):
    # Raises CommandError on any warning or error, and validates against the OpenAPI 3 spec.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "s.yml"))

    assert (tmp_path / "s.yml").stat().st_size > 10_000


def test_every_operation_documents_its_errors_in_the_envelope(schema):
    operations = {
        f"{method.upper()} {path}": _error_codes(operation)
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
        if not path.startswith("/health")
    }

    assert [name for name, codes in operations.items() if not {"400", "503"} <= codes] == []
    # Only Shopify's webhooks go unthrottled: Shopify signs them, and retries on a 429.
    assert [name for name, codes in operations.items() if "429" not in codes] == [
        "POST /events/shopify_webhook_purchase/",
        "POST /webhooks/shopify/",
    ]


@pytest.mark.parametrize(
    "path",
    ["/analytics/kpis/", "/analytics/session_count/", "/analytics/retention/"],
)
def test_analytics_endpoints_document_the_period_and_filters(schema, path):
    operation = _operation(schema, path)

    assert _parameters(operation) == {
        "shop", "start", "end", "compare", "format", "utm_source", "device", "country"
    }  # fmt: skip
    assert _error_codes(operation) == {"400", "401", "404", "406", "429", "503"}
    assert set(operation["responses"]["200"]["content"]) == {"application/json", "text/csv"}


def test_funnel_documents_its_steps_and_options(schema):
    operation = _operation(schema, "/analytics/funnel/")
    steps = next(p for p in operation["parameters"] if p["name"] == "steps")

    assert {"steps", "step_filters", "unit", "mode", "window", "breakdown"} <= _parameters(
        operation
    )
    assert steps["required"] is True


def test_segment_create_documents_its_body(schema):
    operation = _operation(schema, "/segments/", "post")
    body = operation["requestBody"]["content"]["application/json"]["schema"]

    assert body == {"$ref": "#/components/schemas/SegmentIn"}
    assert set(schema["components"]["schemas"]["SegmentIn"]["required"]) == {"name", "rules"}
    assert _error_codes(operation) == {"400", "401", "404", "429", "503"}


def test_storefront_endpoints_document_the_write_key_header_and_limit(schema):
    operation = _operation(schema, "/api/crowd_favorites/")

    # Never a `write_key` query parameter: the key is not read from URLs.
    assert _parameters(operation) == {"X-Write-Key", "shop", "limit"}
    assert _error_codes(operation) == {"400", "401", "429", "503"}


def test_ingestion_documents_its_refusals(schema):
    operation = _operation(schema, "/events/", "post")

    assert _error_codes(operation) == {"400", "401", "413", "415", "429", "503"}


@pytest.mark.parametrize("path", ["/api/featured_collection/", "/api/pick_up_where_you_left_off/"])
def test_personal_storefront_endpoints_document_the_identity_token_and_its_403(schema, path):
    operation = _operation(schema, path)

    assert _parameters(operation) == {
        "X-Write-Key",
        "X-Identity-Token",
        "shop",
        "limit",
        "anonymous_id",
        "user_id",
    }
    assert _error_codes(operation) == {"400", "401", "403", "429", "503"}


def test_bodies_the_api_rejects_when_empty_are_required(schema):
    required = {
        f"POST {path}"
        for path, methods in schema["paths"].items()
        if methods.get("post", {}).get("requestBody", {}).get("required")
    }

    # Shopify's webhooks are signed: the signature, not our schema, says what a body may be.
    # Starting and stopping an experiment or a campaign (pausing it too, or all of a shop's
    # campaigns), acknowledging and resolving an anomaly take no body at all.
    assert {
        f"POST {path}" for path, methods in schema["paths"].items() if "post" in methods
    } - required == {
        "POST /events/shopify_webhook_purchase/",
        "POST /webhooks/shopify/",
        "POST /experiments/{experiment_id}/start/",
        "POST /experiments/{experiment_id}/stop/",
        "POST /analytics/anomalies/{anomaly_id}/acknowledge/",
        "POST /analytics/anomalies/{anomaly_id}/resolve/",
        "POST /notifications/campaigns/{campaign_id}/start/",
        "POST /notifications/campaigns/{campaign_id}/pause/",
        "POST /notifications/campaigns/{campaign_id}/stop/",
        "POST /notifications/campaigns/pause-all/",
    }
