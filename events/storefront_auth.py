"""Who a storefront request speaks for: the shop (its public write key) and, optionally, a
logged-in customer (a user id the shop's own server signed).

The write key is read from the X-Write-Key header, the Basic-auth user name or `write_key` in a
JSON body (sendBeacon cannot set headers), never from a URL: query strings end up in access logs,
Referer headers and browser history. The ingestion endpoints and the recommendation endpoints
share this one reading.

A user id is not proof of anything: anyone holding the public write key can type one. The shop's
server, which knows who is logged in, issues `hex(HMAC-SHA256(identity_secret, user_id))` and the
storefront sends it as X-Identity-Token (docs/recommendations.md).
"""

import base64
import binascii
import hashlib
import hmac
from typing import Any

from django.http import HttpRequest

from clickserver.errors import ApplicationError
from events.models import Shop
from events.selectors import shop_get_by_write_key


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


def shop_authenticate(*, request: HttpRequest, payload: Any = None) -> Shop:
    """The active shop whose write key the request carries; 401 otherwise."""
    key = write_key_from_request(request=request, payload=payload)
    shop = shop_get_by_write_key(write_key=key) if key else None
    if shop is None:
        raise ApplicationError(
            "Unknown or missing write key.", code="not_authenticated", status=401
        )
    return shop


def identity_token_compute(*, shop: Shop, user_id: str) -> str:
    """The token the shop's server hands its storefront for a logged-in customer."""
    return hmac.new(shop.identity_secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def identity_token_is_valid(*, shop: Shop, user_id: str, token: str) -> bool:
    if not token or not user_id:
        return False
    expected = identity_token_compute(shop=shop, user_id=user_id)
    return hmac.compare_digest(expected.encode(), token.strip().lower().encode())
