"""Shops: creating one with its owner and API token, changing its settings, rotating its keys."""

import logging
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError
from rest_framework.authtoken.models import Token

from events.models import Shop, ShopMembership, new_identity_secret, new_write_key

logger = logging.getLogger(__name__)

# What `shop_update` may change; the keys and secrets have their own rotation services.
SHOP_UPDATABLE = frozenset(
    {
        "domain",
        "name",
        "timezone",
        "currency",
        "webhook_secret",
        "session_timeout_minutes",
        "is_ip_anonymized",
        "consent_mode",
        "is_active",
        "uninstalled_at",
    }
)


@dataclass(frozen=True, slots=True)
class ShopCreated:
    shop: Shop
    api_token: str


def shop_timezone_validate(timezone: str) -> None:
    """Raise ValidationError unless `timezone` is an IANA zone name."""
    if timezone not in zoneinfo.available_timezones():
        raise ValidationError({"timezone": [f"Unknown time zone {timezone!r}."]})


@transaction.atomic
def shop_create(
    *,
    domain: str,
    owner_username: str,
    name: str = "",
    webhook_secret: str | None = None,
    timezone: str = "UTC",
    currency: str = "USD",
) -> ShopCreated:
    """Create a shop, its owner (if new) and the owner's API token."""
    shop_timezone_validate(timezone)
    user_model = get_user_model()
    owner, _ = user_model.objects.get_or_create(username=owner_username)
    shop = Shop(domain=domain, name=name or domain, timezone=timezone, currency=currency.upper())
    if webhook_secret:
        shop.webhook_secret = webhook_secret
    shop.full_clean()
    shop.save()
    ShopMembership.objects.create(shop=shop, user=owner, role=ShopMembership.Role.OWNER)
    token, _ = Token.objects.get_or_create(user=owner)
    return ShopCreated(shop=shop, api_token=token.key)


@transaction.atomic
def shop_update(*, shop: Shop, data: Mapping[str, Any]) -> Shop:
    """Change a shop's settings; a new session timeout re-sessionises the shop's history.

    Sessions are derived with the timeout, so after a change every session of the shop is
    recomputed (with the rollups and segments built from them) by a task sent on commit.
    """
    unknown = sorted(set(data) - SHOP_UPDATABLE)
    if unknown:
        raise ValueError(f"shop_update cannot change {unknown}")
    if "timezone" in data:
        shop_timezone_validate(data["timezone"])
    stored_timeout = (
        Shop.objects.select_for_update()
        .values_list("session_timeout_minutes", flat=True)
        .get(pk=shop.pk)
    )
    for name, value in data.items():
        setattr(shop, name, value)
    shop.full_clean()
    update_fields = set(data)
    if shop.session_timeout_minutes != stored_timeout:
        shop.sessions_rebuild_requested_at = timezone.now()
        update_fields.add("sessions_rebuild_requested_at")
    shop.save(update_fields=sorted(update_fields))
    if "sessions_rebuild_requested_at" in update_fields:
        shop_id = shop.pk
        transaction.on_commit(lambda: shop_sessions_rebuild_schedule(shop_id=shop_id))
    return shop


def shop_sessions_rebuild_schedule(*, shop_id: int) -> None:
    # events.tasks imports the services for its task bodies.
    from events.tasks import shop_sessions_rebuild_task

    try:
        shop_sessions_rebuild_task.delay(shop_id)
    except BrokerError:
        # The shop's sessions_rebuild_requested_at stays set: the sweep sends it again.
        logger.error("broker unavailable; shop %s keeps its old sessions until rebuilt", shop_id)


def shop_rotate_write_key(*, shop: Shop) -> Shop:
    """Give the shop a new public write key; the old one stops working at once."""
    shop.write_key = new_write_key()
    shop.save(update_fields=["write_key"])
    return shop


def shop_rotate_identity_secret(*, shop: Shop) -> Shop:
    """A new identity secret; tokens the shop's server signed with the old one stop working."""
    shop.identity_secret = new_identity_secret()
    shop.save(update_fields=["identity_secret"])
    return shop
