"""Cross-cutting DRF pieces: the error envelope handler, pagination, the API's 404.

The application error itself lives in clickserver/errors.py, which domain code imports.
"""

from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.views.defaults import page_not_found
from rest_framework import exceptions
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from clickserver.errors import ApplicationError, known_error


def error_response(
    detail: str,
    *,
    code: str,
    status: int,
    fields: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    return Response(
        {"code": code, "detail": detail, "fields": fields or {}}, status=status, headers=headers
    )


def _flatten(detail: Any) -> Any:
    if isinstance(detail, list):
        return [str(item) for item in detail]
    if isinstance(detail, dict):
        return {key: _flatten(value) for key, value in detail.items()}
    return str(detail)


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """Render every error as {"code", "detail", "fields"}."""
    error = known_error(exc)
    if error is not None:
        return error_response(
            error.detail,
            code=error.code,
            status=error.status,
            fields=error.fields,
            headers=error.headers,
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail) if isinstance(exc.detail, dict) else {}
        detail = "Invalid input." if fields else "; ".join(_flatten(exc.detail))
        response.data = {"code": "invalid", "detail": detail, "fields": fields}
    else:
        codes = exc.get_codes()
        # One code for every 429, ingestion's included.
        codes = "rate_limited" if isinstance(exc, exceptions.Throttled) else codes
        response.data = {
            "code": codes if isinstance(codes, str) else "error",
            "detail": str(exc.detail),
            "fields": {},
        }
    return response


class Pagination(PageNumberPagination):
    page_size: int = settings.API_PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = 1000

    def get_page_size(self, request: Any) -> int:
        """`page_size` from 1 to 1000, else a 400 (DRF would quietly clamp or ignore it)."""
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not raw.isdigit() or not 1 <= int(raw) <= self.max_page_size:
            message = f"must be an integer from 1 to {self.max_page_size}"
            raise ApplicationError(
                f"page_size: {message}", fields={self.page_size_query_param: [message]}
            )
        return int(raw)


# The API's URL prefixes: a path under one that matches no route is a 404 in the envelope, not
# Django's HTML page, so that clients and the schema's fuzzers see one error format.
API_PREFIXES = (
    "/analytics/",
    "/segments/",
    "/notifications/",
    "/experiments/",
    "/api/",
    "/events/",
    "/v1/",
)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler404: the envelope under the API's prefixes, Django's page elsewhere."""
    if request.path.startswith(API_PREFIXES):
        body = {"code": "not_found", "detail": "Not found.", "fields": {}}
        return HttpResponse(orjson.dumps(body), status=404, content_type="application/json")
    return page_not_found(request, exception)
