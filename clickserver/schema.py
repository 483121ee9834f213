"""OpenAPI pieces shared by every API: the error envelope, the error responses, the parameters.

The schema (/api/schema/) is what generated clients and fuzzers read, so each operation lists every
parameter it reads and every status it answers. Statuses, per kind of endpoint:
400 bad input, 401 no or bad credentials, 404 a shop or object the user cannot see, 406 an
`Accept` no renderer serves, 413 a body too large, 415 an unsupported encoding, 429 a rate limit
(with Retry-After), 503 storage unavailable (with Retry-After).
"""

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework import serializers

ERROR = inline_serializer(
    name="Error",
    fields={
        "code": serializers.CharField(
            help_text="invalid, not_authenticated, not_found, rate_limited, unavailable, …"
        ),
        "detail": serializers.CharField(help_text="One sentence for a person."),
        "fields": serializers.DictField(
            help_text="Offending input by name: a list of messages each (empty if none)."
        ),
    },
)
ERROR_DESCRIPTIONS = {
    400: "Invalid input; `fields` names each offending parameter.",
    401: "Missing or unknown credentials.",
    403: "The user's role in this shop does not allow it.",
    404: "No such shop or object for this user (the two are not told apart).",
    406: "No renderer for the requested Accept header.",
    413: "The body is too large.",
    409: "The object is not in a state that allows this (e.g. already resolved).",
    415: "Unsupported Content-Encoding.",
    429: "Rate limit exceeded; retry after the seconds in the Retry-After header.",
    503: "Storage unavailable; retry after the seconds in the Retry-After header.",
}
# A signed-in API (session or token) over one shop.
MEMBER_ERRORS = (400, 401, 404, 429, 503)


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    return {
        status: OpenApiResponse(response=ERROR, description=ERROR_DESCRIPTIONS[status])
        for status in statuses
    }


def integer_schema(*, low: int, high: int, default: int | None = None) -> dict[str, Any]:
    """A bounded integer parameter's schema (OpenApiParameter takes a raw schema as its type)."""
    schema: dict[str, Any] = {"type": "integer", "minimum": low, "maximum": high}
    if default is not None:
        schema["default"] = default
    return schema


def choice_schema(*values: str, default: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "enum": list(values)}
    if default is not None:
        schema["default"] = default
    return schema


SHOP = OpenApiParameter(
    "shop", str, description="Shop domain; optional when the user belongs to exactly one shop."
)
START = OpenApiParameter(
    "start",
    OpenApiTypes.DATE,
    description="First local day, inclusive (default: 29 days before `end`); from 2000-01-01 to "
    "today + 366 days, at most 1098 days before `end` (today when `end` is not given), and not "
    "after `end`.",
)
END = OpenApiParameter(
    "end",
    OpenApiTypes.DATE,
    description="Last local day, inclusive (default: today); same bounds as `start`.",
)
FORMAT = OpenApiParameter(
    "format",
    # DRF's format override: empty is the same as absent (the Accept header decides).
    choice_schema("", "json", "csv"),
    description="`csv` downloads the answer as CSV.",
)
PAGE = OpenApiParameter("page", integer_schema(low=1, high=2**31 - 1), description="Page number.")
PAGE_SIZE = OpenApiParameter(
    "page_size", integer_schema(low=1, high=1000, default=100), description="Rows per page."
)


def paginated(name: str, rows: serializers.BaseSerializer) -> serializers.Serializer:
    """The page envelope of `clickserver.api.Pagination` around `rows` (a `many=True` one)."""
    return inline_serializer(
        name=name,
        fields={
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": rows,
        },
    )


class BodyRequiredSchema(AutoSchema):
    """For a view that answers 400 to an empty body: its request body is `required`.

    drf-spectacular marks a body required only for a serializer with a required field, so a
    free-form object (the ingestion endpoints) or optional-only fields (erasures) come out
    optional, and clients and fuzzers send an empty POST as if it were valid.
    """

    def _get_request_body(self, direction: str = "request") -> dict[str, Any] | None:
        body = super()._get_request_body(direction)
        if body is not None:
            body["required"] = True
        return body
