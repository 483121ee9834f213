"""Who a storefront request speaks for: the shop (its public write key) and, optionally, a
logged-in customer (a user id the shop's own server signed).

The write key is read by `clickserver.write_key.write_key_from_request` (header, Basic-auth user
name or JSON body; never a URL). The ingestion endpoints and the recommendation endpoints share
this one check. Both are rate-limited: ingestion per shop (INGEST_RATE_LIMIT_REQUESTS per
INGEST_RATE_LIMIT_WINDOW_SECONDS, events/api.py), the recommendation endpoints per write key and
client address (STOREFRONT_RATE_LIMIT_REQUESTS, clickserver/throttles.py StorefrontThrottle): a
storefront page asks for a few recommendations, a tracking SDK sends thousands of batches.

A user id is not proof of anything: anyone holding the public write key can type one. The shop's
server, which knows who is logged in, issues `hex(HMAC-SHA256(identity_secret, user_id))` and the
storefront sends it as X-Identity-Token (docs/recommendations.md).
"""

import hashlib
import hmac
from typing import Any

from django.http import HttpRequest

from clickserver.errors import ApplicationError
from clickserver.write_key import write_key_from_request
from events.models import Shop
from events.selectors import shop_get_by_write_key


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


def user_id_verify(*, request: HttpRequest, shop: Shop, user_id: str) -> None:
    """403 unless a `user_id` comes with the X-Identity-Token the shop's server issued for it."""
    token = request.headers.get("X-Identity-Token", "")
    if user_id and not identity_token_is_valid(shop=shop, user_id=user_id, token=token):
        raise ApplicationError(
            "A user_id needs the X-Identity-Token the shop's server issued for it.",
            code="permission_denied",
            status=403,
            fields={"user_id": ["unverified"]},
        )
