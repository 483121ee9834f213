"""Translate Segment / RudderStack HTTP Tracking API messages into clickserver's event format.

The official SDKs then work by changing only their host. Segment's e-commerce v2 event names map
to our event types; any other `track` name is kept as the type so custom events still arrive.
"""

from typing import Any

ECOMMERCE_TYPES = {
    "Product Viewed": "product_view",
    "Product Added": "add_to_cart",
    "Product Removed": "remove_from_cart",
    "Checkout Started": "checkout_started",
    "Order Completed": "purchase",
    "Product Added to Wishlist": "add_to_wishlist",
    "Cart Viewed": "cart_view",
    "Products Searched": "search",
    "Order Refunded": "refund",
}
MESSAGE_TYPES = {
    "page": "page_view",
    "screen": "screen_view",
    "identify": "identify",
    "alias": "alias",
    "group": "group",
}


def _product(properties: dict[str, Any]) -> dict[str, Any] | None:
    product_id = properties.get("product_id", properties.get("sku"))
    if product_id is None and "name" not in properties:
        return None
    return {
        "id": product_id,
        "name": properties.get("name"),
        "category": properties.get("category"),
        "price": properties.get("price"),
        "quantity": properties.get("quantity"),
    }


def _object(value: Any) -> dict[str, Any]:
    """A nested object of the message, or an empty one when absent or malformed."""
    return value if isinstance(value, dict) else {}


def _event_type(message: dict[str, Any], kind: Any) -> str | None:
    if kind == "track":
        name = message.get("event")
        return ECOMMERCE_TYPES.get(name, name) if isinstance(name, str) else None
    return MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None


def _properties(message: dict[str, Any], kind: Any, context: dict[str, Any]) -> dict[str, Any]:
    """Our `properties`: a track's or page's own, or what identify, alias and group carry."""
    if kind == "identify":
        traits = message.get("traits", context.get("traits"))
        return {"traits": traits} if isinstance(traits, dict) else {}
    if kind == "alias":
        return {"previous_id": message.get("previousId")}
    if kind == "group":
        return {"group_id": message.get("groupId"), "traits": message.get("traits")}
    properties = dict(_object(message.get("properties")))
    if kind in ("page", "screen") and message.get("name"):
        properties.setdefault("name", message.get("name"))
    return properties


def segment_to_event(message: Any, *, message_type: str | None = None) -> Any:
    """Map one Segment message to our raw event dict; non-objects pass through to be rejected."""
    if not isinstance(message, dict):
        return message
    kind = message_type or message.get("type")
    context = _object(message.get("context"))
    page = _object(context.get("page"))
    campaign = _object(context.get("campaign"))
    location = _object(context.get("location"))
    event_type = _event_type(message, kind)
    properties = _properties(message, kind, context)
    event: dict[str, Any] = {
        "type": event_type,
        "event_id": message.get("messageId"),
        "anonymous_id": message.get("anonymousId"),
        "user_id": message.get("userId"),
        "timestamp": message.get("timestamp", message.get("originalTimestamp")),
        "url": properties.get("url", page.get("url")),
        "referrer": properties.get("referrer", page.get("referrer")),
        "title": properties.get("title", page.get("title")),
        "utm": {
            "source": campaign.get("source"),
            "medium": campaign.get("medium"),
            "campaign": campaign.get("name"),
            "term": campaign.get("term"),
            "content": campaign.get("content"),
        },
        "properties": properties,
        "context": {
            "user_agent": context.get("userAgent"),
            "ip": context.get("ip"),
            "country": location.get("country") if len(location.get("country") or "") == 2 else None,
        },
    }
    if message.get("sentAt") is not None:
        event["sent_at"] = message["sentAt"]
    if event_type in ("product_view", "add_to_cart", "remove_from_cart", "add_to_wishlist"):
        event["product"] = _product(properties)
    elif event_type in ("purchase", "refund"):
        # "Order Refunded": the order refunded, the amount paid back (`total`), and its
        # `products` (the refund lines) stay in the properties.
        event["order"] = {
            "id": properties.get("order_id"),
            "revenue": properties.get("revenue", properties.get("total")),
            "currency": properties.get("currency"),
        }
    return event


def segment_cdn_settings(*, write_key: str, api_host: str, protocol: str) -> dict[str, Any]:
    """What Segment's CDN serves analytics.js at /v1/projects/<write key>/settings.

    Only the Segment.io destination, sending to `protocol://api_host/<t|i|p|a|g|s>`: no device-mode
    destinations, middleware or remote plugins, so the SDK loads no code from elsewhere, and a
    metrics sample rate of 0, so it posts no telemetry of its own.
    """
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": api_host,
                "protocol": protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": True,
                "maybeBundledConfigIds": {},
            }
        },
        "plan": {
            "track": {"__default": {"enabled": True, "integrations": {}}},
            "identify": {"__default": {"enabled": True}},
            "group": {"__default": {"enabled": True}},
        },
        "edgeFunction": {},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
    }


def rudderstack_source_config(*, shop_id: int, shop_name: str, write_key: str) -> dict[str, Any]:
    """What RudderStack's control plane serves its JavaScript SDK at /sourceConfig/.

    The SDK checks `source.id`, `source.config` and `source.destinations` and stops if `enabled`
    is false. No destinations, so it loads no device-mode integration code; stats collection
    off, so it posts no error reports or metrics of its own. Where it sends events is the data
    plane URL the shop passes to `load()`, not part of this answer.
    """
    source_id = f"clickserver-{shop_id}"
    return {
        "isHosted": False,
        "source": {
            "id": source_id,
            "name": shop_name,
            "writeKey": write_key,
            "enabled": True,
            "workspaceId": source_id,
            "deleted": False,
            "sourceDefinitionName": "Javascript",
            "config": {
                "statsCollection": {
                    "errors": {"enabled": False},
                    "metrics": {"enabled": False},
                }
            },
            "destinations": [],
        },
    }
