"""Where a storefront request carries its shop's public write key: the X-Write-Key header, the
Basic-auth user name, or `write_key` in a JSON body (sendBeacon cannot set headers). Never a URL:
query strings end up in access logs, Referer headers and browser history.

One reading for everything that needs the key: the shop check of ingestion and of the storefront
recommendation endpoints (events/storefront_auth.py) and the storefront throttle's limiter key
(clickserver/throttles.py).
"""

import base64
import binascii
from typing import Any

from django.http import HttpRequest

from clickserver.errors import ApplicationError


def write_key_from_request(*, request: HttpRequest, payload: Any = None) -> str:
    """The write key the request carries, or "" when it carries none."""
    key = request.headers.get("X-Write-Key", "")
    authorization = request.headers.get("Authorization", "")
    if not key and authorization.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ApplicationError(
                "Malformed Basic authorization.", code="not_authenticated", status=401
            ) from None
        key = decoded.split(":", 1)[0]
    if not key and isinstance(payload, dict):
        # writeKey: Segment's SDKs put it in the body as well as in the Authorization header.
        body_key = payload.get("write_key", payload.get("writeKey"))
        key = body_key if isinstance(body_key, str) else ""
    return key
