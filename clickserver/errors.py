"""The application error and its envelope, for domain code and for the HTTP layer alike.

Services, selectors and tasks raise `ApplicationError` when a rule is broken; the API renders it
as {"code", "detail", "fields"} (clickserver/api.py for DRF views, `error_http_response` for the
plain Django views on the ingestion hot path). Nothing here imports DRF, so domain code can raise
without pulling in the web layer.
"""

import logging
from typing import Any

import orjson
from django.db import InterfaceError
from django.db import OperationalError as DatabaseOperationalError
from django.http import HttpResponse

logger = logging.getLogger(__name__)


class ApplicationError(Exception):
    """A rule was broken; services raise it and the API renders it in the envelope."""

    def __init__(
        self,
        detail: str,
        *,
        code: str = "invalid",
        status: int = 400,
        fields: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code
        self.status = status
        self.fields = fields or {}
        self.headers = headers or {}


# Errors rendered in the envelope by this module rather than by DRF's defaults.
ENVELOPE_ERRORS = (ApplicationError, DatabaseOperationalError, InterfaceError)


def known_error(exc: Exception) -> ApplicationError | None:
    """The application error that `exc` stands for, if it is one we render ourselves."""
    if isinstance(exc, ApplicationError):
        return exc
    if isinstance(exc, DatabaseOperationalError | InterfaceError):
        # Nothing was acknowledged; the client retries later.
        logger.warning("database unavailable: %s", exc)
        return ApplicationError(
            "Storage is unavailable; retry later.",
            code="unavailable",
            status=503,
            headers={"Retry-After": "5"},
        )
    return None


def error_http_response(exc: Exception, *, with_message: bool = False) -> HttpResponse:
    """The envelope for one of ENVELOPE_ERRORS, for a plain Django view (the ingestion hot path).

    `with_message` repeats `detail` as `message`: Segment's and RudderStack's SDKs build their
    error from `code` and `message`, and RudderStack's Python SDK fails on a body without both.
    """
    error = known_error(exc)
    if error is None:
        raise TypeError(f"{type(exc).__name__} is not one of ENVELOPE_ERRORS") from exc
    body = {"code": error.code, "detail": error.detail, "fields": error.fields}
    if with_message:
        body["message"] = error.detail
    return HttpResponse(
        orjson.dumps(body),
        status=error.status,
        headers=error.headers,
        content_type="application/json",
    )
