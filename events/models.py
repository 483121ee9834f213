"""Shops, the raw event log, and what the pipeline derives from it (people, sessions, orders).

Raw events are append-only: only the pipeline's `session`/`person` assignment is ever updated.
Everything else here is derived and can be recomputed from the log and the Shopify payloads.
"""

import secrets

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models


def new_write_key() -> str:
    return "wk_" + secrets.token_urlsafe(24)


def new_webhook_secret() -> str:
    return secrets.token_hex(32)


def new_identity_secret() -> str:
    return secrets.token_hex(32)


class ConsentMode(models.TextChoices):
    NONE = "none", "No consent needed"
    REQUIRED = "required", "Track only after consent"


class Shop(models.Model):
    domain = models.CharField(max_length=255, unique=True)
    name = models.CharField(max_length=255, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    currency = models.CharField(max_length=3, default="USD")
    write_key = models.CharField(max_length=64, unique=True, default=new_write_key)
    # The Shopify app secret: webhook bodies are signed with it (HMAC-SHA256).
    webhook_secret = models.CharField(max_length=128, default=new_webhook_secret)
    # Private to the shop's server: it signs a logged-in customer's user id with it so that a
    # storefront may ask for that customer's recommendations (events/storefront_auth.py).
    identity_secret = models.CharField(max_length=64, default=new_identity_secret)
    session_timeout_minutes = models.PositiveIntegerField(default=30)
    # Set when the timeout changes, cleared once every session is rebuilt with it: the sweep
    # sends the rebuild again if its message was lost (events/tasks.py).
    sessions_rebuild_requested_at = models.DateTimeField(null=True, blank=True, editable=False)
    is_ip_anonymized = models.BooleanField(default=True)
    consent_mode = models.CharField(
        max_length=16, choices=ConsentMode.choices, default=ConsentMode.NONE
    )
    is_active = models.BooleanField(default=True)
    # Set by Shopify's app/uninstalled webhook; shop/redact follows about 48 hours later.
    uninstalled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="ShopMembership", related_name="shops"
    )

    class Meta:
        ordering = ["domain"]

    def __str__(self) -> str:
        return self.domain


class ShopMembership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        ANALYST = "analyst", "Analyst"

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="shop_memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ANALYST)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["shop", "user"], name="uniq_membership_shop_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.shop} ({self.role})"


class Person(models.Model):
    """One shopper after identity stitching; identifiers live in PersonIdentifier."""

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="persons")
    # The identified user id, if any. Two different identified ids are never merged.
    user_id = models.CharField(max_length=255, blank=True, default="")
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    traits = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["shop", "user_id"], name="person_shop_user"),
            models.Index(fields=["shop", "last_seen_at"], name="person_shop_last_seen"),
            # New visitors of a period (the audience breakdown): a range read of ids.
            models.Index(fields=["shop", "first_seen_at"], name="person_shop_first_seen"),
        ]

    def __str__(self) -> str:
        return self.user_id or f"person {self.pk}"


class IdentifierKind(models.TextChoices):
    ANONYMOUS_ID = "anonymous_id", "Anonymous id"
    USER_ID = "user_id", "User id"
    SHOPIFY_CUSTOMER = "shopify_customer", "Shopify customer id"
    EMAIL_HASH = "email_hash", "Email (SHA-256)"


class PersonIdentifier(models.Model):
    """An edge of the identity graph: this identifier belongs to this person."""

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="identifiers")
    person = models.ForeignKey(Person, on_delete=models.CASCADE, related_name="identifiers")
    kind = models.CharField(max_length=24, choices=IdentifierKind.choices)
    value = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["shop", "kind", "value"], name="uniq_identifier_shop_kind_value"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind}={self.value}"


class Session(models.Model):
    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="sessions")
    person = models.ForeignKey(Person, on_delete=models.CASCADE, related_name="sessions")
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField()
    duration_seconds = models.PositiveIntegerField(default=0)
    event_count = models.PositiveIntegerField(default=0)
    pageview_count = models.PositiveIntegerField(default=0)
    entry_url = models.CharField(max_length=2048, blank=True, default="")
    exit_url = models.CharField(max_length=2048, blank=True, default="")
    referrer = models.CharField(max_length=2048, blank=True, default="")
    utm_source = models.CharField(max_length=255, blank=True, default="")
    utm_medium = models.CharField(max_length=255, blank=True, default="")
    utm_campaign = models.CharField(max_length=255, blank=True, default="")
    device = models.CharField(max_length=16, blank=True, default="")
    browser = models.CharField(max_length=64, blank=True, default="")
    os = models.CharField(max_length=64, blank=True, default="")
    country = models.CharField(max_length=2, blank=True, default="")
    is_converted = models.BooleanField(default=False)
    revenue = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    is_bounce = models.BooleanField(default=False)

    class Meta:
        indexes = [
            # Covering for the audience breakdown (analytics/selectors/audience.py): the period's
            # (person, converted) pairs are an index-only range scan; every read on
            # (shop, started_at) uses its prefix.
            models.Index(
                fields=["shop", "started_at", "person", "is_converted"],
                name="session_shop_started_person",
            ),
            models.Index(fields=["shop", "ended_at"], name="session_shop_ended"),
            models.Index(fields=["person", "started_at"], name="session_person_started"),
        ]

    def __str__(self) -> str:
        return f"session {self.pk} ({self.started_at:%Y-%m-%d %H:%M})"


class Event(models.Model):
    """One raw event as received. Append-only; `(shop, event_id)` is the idempotency key."""

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="events")
    event_id = models.CharField(max_length=64)
    type = models.CharField(max_length=64)
    anonymous_id = models.CharField(max_length=255, blank=True, default="")
    user_id = models.CharField(max_length=255, blank=True, default="")
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField()
    url = models.CharField(max_length=2048, blank=True, default="")
    referrer = models.CharField(max_length=2048, blank=True, default="")
    title = models.CharField(max_length=512, blank=True, default="")
    product_id = models.CharField(max_length=128, blank=True, default="")
    product_name = models.CharField(max_length=255, blank=True, default="")
    product_category = models.CharField(max_length=255, blank=True, default="")
    product_price = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    product_quantity = models.IntegerField(null=True, blank=True)
    order_id = models.CharField(max_length=128, blank=True, default="")
    revenue = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True, default="")
    utm_source = models.CharField(max_length=255, blank=True, default="")
    utm_medium = models.CharField(max_length=255, blank=True, default="")
    utm_campaign = models.CharField(max_length=255, blank=True, default="")
    utm_term = models.CharField(max_length=255, blank=True, default="")
    utm_content = models.CharField(max_length=255, blank=True, default="")
    user_agent = models.CharField(max_length=512, blank=True, default="")
    ip = models.GenericIPAddressField(null=True, blank=True)
    country = models.CharField(max_length=2, blank=True, default="")
    properties = models.JSONField(default=dict, blank=True)
    session = models.ForeignKey(
        Session, on_delete=models.SET_NULL, null=True, blank=True, related_name="events"
    )
    person = models.ForeignKey(
        Person, on_delete=models.SET_NULL, null=True, blank=True, related_name="events"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["shop", "event_id"], name="uniq_event_shop_event_id")
        ]
        indexes = [
            models.Index(fields=["shop", "occurred_at"], name="event_shop_occurred"),
            models.Index(fields=["shop", "type", "occurred_at"], name="event_shop_type_occurred"),
            models.Index(fields=["shop", "anonymous_id"], name="event_shop_anonymous"),
            models.Index(fields=["shop", "user_id"], name="event_shop_user"),
            models.Index(fields=["person", "occurred_at"], name="event_person_occurred"),
            models.Index(fields=["shop", "received_at"], name="event_shop_received"),
            # The pipeline walks a shop's log in id order from its watermark.
            models.Index(fields=["shop", "id"], name="event_shop_id"),
            # And looks below its watermark for events that no batch assigned: an insert that
            # committed after the watermark passed its ids (docs/pipeline.md, "Stragglers").
            models.Index(fields=["shop", "person", "id"], name="event_shop_person_id"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class EventFormat(models.TextChoices):
    CLICKSERVER = "clickserver", "clickserver"
    SEGMENT = "segment", "Segment / RudderStack"


class RejectedEvent(models.Model):
    """An event that failed validation, kept verbatim so it can be inspected and replayed."""

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="rejected_events")
    payload = models.JSONField()
    format = models.CharField(
        max_length=16, choices=EventFormat.choices, default=EventFormat.CLICKSERVER
    )
    code = models.CharField(max_length=64)
    detail = models.CharField(max_length=1024)
    received_at = models.DateTimeField()
    replayed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["shop", "received_at"], name="rejected_shop_received"),
            models.Index(fields=["code"], name="rejected_code"),
        ]

    def __str__(self) -> str:
        return f"{self.code}: {self.detail[:60]}"


class PipelineJob(models.TextChoices):
    """The batched jobs that keep a watermark per shop."""

    EVENTS = "events", "sessions and identity (Event.id)"
    ANALYTICS = "analytics", "rollups from events (Event.id)"
    ANALYTICS_ORDERS = "analytics-orders", "rollups from orders (updated_at, µs since 1970)"
    ANALYTICS_REFUNDS = "analytics-refunds", "rollups from refunds (Refund.id)"
    EXPERIMENTS = "experiments", "experiment exposures from events (Event.id)"


class PipelineWatermark(models.Model):
    """How far a batched job has read its log for one shop, Zulip FillState style."""

    job = models.CharField(max_length=32, choices=PipelineJob.choices)
    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="watermarks")
    position = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)
    # The last batch's failure (readiness reports the shop); cleared by the next batch that ends.
    failed_at = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=1024, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "shop"], name="uniq_watermark_job_shop"),
        ]

    def __str__(self) -> str:
        return f"{self.job} of shop {self.shop_id} @ {self.position}"


class Product(models.Model):
    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="products")
    product_id = models.CharField(max_length=128)
    title = models.CharField(max_length=512, blank=True, default="")
    category = models.CharField(max_length=255, blank=True, default="")
    vendor = models.CharField(max_length=255, blank=True, default="")
    price = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    url = models.CharField(max_length=2048, blank=True, default="")
    image_url = models.CharField(max_length=2048, blank=True, default="")
    is_available = models.BooleanField(default=True)
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["shop", "product_id"], name="uniq_product_shop_pid")
        ]

    def __str__(self) -> str:
        return self.title or self.product_id


class Order(models.Model):
    """An order (an invoice). Revenue is `total - refunded_amount`, zero when cancelled."""

    class Source(models.TextChoices):
        API = "api", "Tracking API"
        SHOPIFY = "shopify", "Shopify"
        IMPORT = "import", "Import"

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="orders")
    order_id = models.CharField(max_length=128)
    person = models.ForeignKey(
        Person, on_delete=models.SET_NULL, null=True, blank=True, related_name="orders"
    )
    anonymous_id = models.CharField(max_length=255, blank=True, default="")
    user_id = models.CharField(max_length=255, blank=True, default="")
    placed_at = models.DateTimeField()
    currency = models.CharField(max_length=3, blank=True, default="")
    total = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    refunded_amount = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    is_cancelled = models.BooleanField(default=False)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    country = models.CharField(max_length=2, blank=True, default="")
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.API)
    properties = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["shop", "order_id"], name="uniq_order_shop_oid")
        ]
        indexes = [models.Index(fields=["shop", "placed_at"], name="order_shop_placed")]

    def __str__(self) -> str:
        return f"order {self.order_id}"


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    product_id = models.CharField(max_length=128, blank=True, default="")
    sku = models.CharField(max_length=128, blank=True, default="")
    name = models.CharField(max_length=512, blank=True, default="")
    quantity = models.IntegerField(default=1)
    unit_price = models.DecimalField(max_digits=14, decimal_places=2, default=0)

    def __str__(self) -> str:
        return f"{self.quantity} × {self.name or self.product_id}"


class Refund(models.Model):
    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="refunds")
    refund_id = models.CharField(max_length=128)
    # The order's id at the source, so a refund that arrives before its order is linked later.
    source_order_id = models.CharField(max_length=128, blank=True, default="")
    order = models.ForeignKey(
        Order, on_delete=models.SET_NULL, null=True, blank=True, related_name="refunds"
    )
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    refunded_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["shop", "refund_id"], name="uniq_refund_shop_rid")
        ]
        indexes = [
            models.Index(fields=["shop", "refunded_at"], name="refund_shop_refunded"),
            # A refund that came before its order is found by the order's id when it arrives.
            models.Index(fields=["shop", "source_order_id"], name="refund_shop_source_order"),
        ]

    def __str__(self) -> str:
        return f"refund {self.refund_id}"


class RefundLine(models.Model):
    """What a refund took back: a product's units and the amount refunded for them (the
    Online Retail `C` invoice's lines, Shopify's `refund_line_items`, a refund event's product)."""

    refund = models.ForeignKey(Refund, on_delete=models.CASCADE, related_name="lines")
    product_id = models.CharField(max_length=128, blank=True, default="")
    sku = models.CharField(max_length=128, blank=True, default="")
    name = models.CharField(max_length=512, blank=True, default="")
    quantity = models.IntegerField(default=0)
    amount = models.DecimalField(max_digits=14, decimal_places=2, default=0)

    def __str__(self) -> str:
        return f"refund of {self.quantity} × {self.name or self.product_id}"


class Checkout(models.Model):
    """A Shopify cart or checkout, kept for abandonment analysis."""

    class Kind(models.TextChoices):
        CART = "cart", "Cart"
        CHECKOUT = "checkout", "Checkout"

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="checkouts")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    token = models.CharField(max_length=128)
    cart_token = models.CharField(max_length=128, blank=True, default="")
    person = models.ForeignKey(
        Person, on_delete=models.SET_NULL, null=True, blank=True, related_name="checkouts"
    )
    anonymous_id = models.CharField(max_length=255, blank=True, default="")
    email_hash = models.CharField(max_length=64, blank=True, default="")
    total = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    currency = models.CharField(max_length=3, blank=True, default="")
    line_items = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["shop", "kind", "token"], name="uniq_checkout_shop_kind_token"
            )
        ]
        indexes = [models.Index(fields=["shop", "created_at"], name="checkout_shop_created")]

    def __str__(self) -> str:
        return f"{self.kind} {self.token}"


class WebhookDelivery(models.Model):
    """A Shopify webhook delivery, kept so a repeated `X-Shopify-Webhook-Id` runs once."""

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="webhook_deliveries")
    webhook_id = models.CharField(max_length=128)
    topic = models.CharField(max_length=64)
    payload = models.JSONField()
    received_at = models.DateTimeField()
    processed_at = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=1024, blank=True, default="")
    # The Shopify customer the payload is about, so customers/redact can erase raw payloads too.
    customer_id = models.CharField(max_length=32, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["shop", "webhook_id"], name="uniq_webhook_shop_delivery"
            )
        ]
        indexes = [
            models.Index(fields=["shop", "received_at"], name="webhook_shop_received"),
            models.Index(fields=["shop", "customer_id"], name="webhook_shop_customer"),
            models.Index(fields=["processed_at", "received_at"], name="webhook_processed"),
        ]

    def __str__(self) -> str:
        return f"{self.topic} {self.webhook_id}"


class PrivacyRequest(models.Model):
    """A GDPR request from Shopify and what was done about it (the export, or what was erased)."""

    class Kind(models.TextChoices):
        DATA_REQUEST = "customers/data_request", "Customer data request"
        CUSTOMER_REDACT = "customers/redact", "Customer redaction"
        SHOP_REDACT = "shop/redact", "Shop redaction"

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="privacy_requests")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    shopify_customer_id = models.CharField(max_length=32, blank=True, default="")
    email_hash = models.CharField(max_length=64, blank=True, default="")
    # The exported data for a data request; for a redaction, only the counts of erased rows.
    export = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    erased = models.JSONField(default=dict, blank=True)
    requested_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["shop", "requested_at"], name="privacy_shop_requested")]

    def __str__(self) -> str:
        return f"{self.kind} {self.shopify_customer_id or self.shop_id}"


class ErasureRequest(models.Model):
    """One erasure of a person (or of a whole shop) and what it removed; no personal data.

    The identifier's kind is kept, never its value. `days` are the shop-local days whose derived
    data (rollups, visitor bitmaps, session paths) held the person and are recomputed; null means
    every day (a whole-shop erasure). `completed_at` is set once that recomputation has run.
    """

    class Kind(models.TextChoices):
        USER_ID = "user_id", "User id"
        ANONYMOUS_ID = "anonymous_id", "Anonymous id"
        EMAIL = "email", "Email"
        PERSON = "person", "Person (admin)"
        SHOPIFY_CUSTOMER = "shopify_customer", "Shopify customer (customers/redact)"
        SHOP = "shop", "Whole shop (shop/redact)"

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="erasure_requests")
    kind = models.CharField(max_length=24, choices=Kind.choices)
    # The raw rows are gone when the request is recorded; the derived ones at completed_at.
    requested_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)
    # Rows removed per table, e.g. {"events": 120, "sessions": 9}.
    counts = models.JSONField(default=dict, blank=True)
    days = models.JSONField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["shop", "requested_at"], name="erasure_shop_requested"),
            models.Index(fields=["completed_at", "shop"], name="erasure_pending"),
        ]

    def __str__(self) -> str:
        return f"erasure {self.pk} ({self.kind}) of {self.shop_id}"
