"""Rollup tables: pre-aggregated counts that dashboard requests read instead of the raw log.

Hourly rows are keyed by the UTC hour (timezones with 30/45-minute offsets put that part-hour into
the neighbouring local day); daily rows by the shop-local day, which every dashboard period is made
of. Distinct people cannot be summed across days, hence the per-day visitor bitmaps.
Every row is derived and rebuilt by `analytics.services`; nothing else writes here.
"""

from django.conf import settings
from django.db import models

from events.models import Session, Shop

# The summed columns of `RollupCounts` and of `ProductCounts`, in the order reads unpack them.
ROLLUP_COUNTS = (
    "session_count",
    "converted_session_count",
    "bounce_count",
    "cart_session_count",
    "abandoned_session_count",
    "abandoned_value",
    "pageview_count",
    "product_view_count",
    "add_to_cart_count",
    "checkout_count",
    "purchase_count",
)
PRODUCT_SUMS = (
    "view_count",
    "cart_count",
    "abandoned_cart_count",
    "purchase_count",
    "order_count",
    "units",
    "revenue",
)
# The event types that put a session in the cart counts (`cart_session_count`, `SessionPath`).
CART_TYPES = ("add_to_cart", "checkout_started")


class RollupCounts(models.Model):
    """Session and event counts of one bucket, split by the session's source/device/country.

    Sessions count in the bucket they started in; events in the bucket they occurred in,
    attributed to their session's dimensions (events without a session have empty dimensions).
    Each bucket also has one `is_total` row summing all its dimension rows, so unfiltered reads
    touch one row per bucket instead of one per source × device × country.
    """

    is_total = models.BooleanField(default=False)
    utm_source = models.CharField(max_length=255, blank=True, default="")
    device = models.CharField(max_length=16, blank=True, default="")
    country = models.CharField(max_length=2, blank=True, default="")
    session_count = models.PositiveIntegerField(default=0)
    converted_session_count = models.PositiveIntegerField(default=0)
    bounce_count = models.PositiveIntegerField(default=0)
    # Sessions with add_to_cart or checkout_started, and those of them without a purchase.
    cart_session_count = models.PositiveIntegerField(default=0)
    abandoned_session_count = models.PositiveIntegerField(default=0)
    abandoned_value = models.DecimalField(max_digits=16, decimal_places=2, default=0)
    pageview_count = models.PositiveIntegerField(default=0)
    product_view_count = models.PositiveIntegerField(default=0)
    add_to_cart_count = models.PositiveIntegerField(default=0)
    checkout_count = models.PositiveIntegerField(default=0)
    purchase_count = models.PositiveIntegerField(default=0)

    class Meta:
        abstract = True


class HourlyRollup(RollupCounts):
    """`RollupCounts` of one UTC hour: hour-level trends and the hour × weekday heat map."""

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="hourly_rollups")
    hour = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["shop", "is_total", "hour", "utm_source", "device", "country"],
                name="uniq_hourly_rollup_bucket",
            )
        ]

    def __str__(self) -> str:
        return f"{self.shop_id} {self.hour:%Y-%m-%d %H}h"


class HourlyRevenue(models.Model):
    """Orders and refunds of one UTC hour: orders by `placed_at`, refunds by `refunded_at`."""

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="hourly_revenue")
    hour = models.DateTimeField()
    order_count = models.PositiveIntegerField(default=0)
    order_total = models.DecimalField(max_digits=16, decimal_places=2, default=0)
    refund_count = models.PositiveIntegerField(default=0)
    refund_total = models.DecimalField(max_digits=16, decimal_places=2, default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["shop", "hour"], name="uniq_hourly_revenue_bucket")
        ]

    def __str__(self) -> str:
        return f"{self.shop_id} {self.hour:%Y-%m-%d %H}h"


class DailyRollup(RollupCounts):
    """`HourlyRollup` summed over the shop-local day its hours start in (`local_date(hour)`).

    Dashboard periods are whole local days, so totals, sources and countries read about 30 rows
    (or 30 × dimensions) here instead of 720 hourly ones; only hour-level views read the hours.
    """

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="daily_rollups")
    day = models.DateField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["shop", "is_total", "day", "utm_source", "device", "country"],
                name="uniq_daily_rollup_bucket",
            )
        ]

    def __str__(self) -> str:
        return f"{self.shop_id} {self.day}"


class DailyVisitors(models.Model):
    """The persons with at least one event on a shop-local day, as compressed bitmaps of ids.

    Distinct visitors cannot be summed across days; the union of a period's bitmaps counts them
    exactly (`analytics.bitmaps`), and cohort retention is bitmap intersections. `new` holds the
    persons first seen that day.
    """

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="daily_visitors")
    day = models.DateField()
    visitor_count = models.PositiveIntegerField(default=0)
    new_count = models.PositiveIntegerField(default=0)
    visitors = models.BinaryField()
    new = models.BinaryField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["shop", "day"], name="uniq_daily_visitors")]

    def __str__(self) -> str:
        return f"{self.shop_id} {self.day}: {self.visitor_count} visitors"


class ProductCounts(models.Model):
    """What the product rollups count, per day or per month."""

    product_id = models.CharField(max_length=128)
    product_name = models.CharField(max_length=255, blank=True, default="")
    view_count = models.PositiveIntegerField(default=0)
    cart_count = models.PositiveIntegerField(default=0)
    # add_to_cart events of the product in sessions that ended without a purchase.
    abandoned_cart_count = models.PositiveIntegerField(default=0)
    purchase_count = models.PositiveIntegerField(default=0)
    order_count = models.PositiveIntegerField(default=0)
    units = models.IntegerField(default=0)
    revenue = models.DecimalField(max_digits=16, decimal_places=2, default=0)

    class Meta:
        abstract = True


class ProductDailyRollup(ProductCounts):
    """One product's day (shop-local date). Event counts come from the log, sales from orders."""

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="product_rollups")
    day = models.DateField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["shop", "day", "product_id"], name="uniq_product_daily_rollup"
            )
        ]

    def __str__(self) -> str:
        return f"{self.shop_id} {self.day} {self.product_id}"


class SessionPath(models.Model):
    """One session's events in order, so funnels and cart lists read one row per session.

    Events are ordered by (occurred_at, id), the order the funnel algorithm sorts them in. The
    cart columns make the abandoned-cart recovery list one index range scan (newest cart first).
    """

    session = models.OneToOneField(
        Session,
        primary_key=True,
        on_delete=models.CASCADE,
        db_constraint=False,
        related_name="analytics_path",
    )
    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="session_paths")
    started_at = models.DateTimeField()
    person_id = models.BigIntegerField(null=True)
    utm_source = models.CharField(max_length=255, blank=True, default="")
    device = models.CharField(max_length=16, blank=True, default="")
    country = models.CharField(max_length=2, blank=True, default="")
    # Microseconds since 1970 (UTC) of the session's first and last events.
    first_at_us = models.BigIntegerField()
    last_at_us = models.BigIntegerField()
    # JSON lists: the event types, their microseconds after first_at_us, and the positions i
    # whose time equals that of i - 1 ("" when no two events tie). Funnels without a window
    # depend only on `kinds` and `ties`, so they group sessions by those two strings.
    kinds = models.TextField()
    offsets = models.TextField()
    ties = models.TextField(blank=True, default="")
    # A cart event (add_to_cart / checkout_started) and no purchase anywhere in the session.
    is_abandoned = models.BooleanField(default=False)
    # The newest cart event (time, id): the recovery list's order.
    last_cart_at = models.DateTimeField(null=True)
    last_cart_event_id = models.BigIntegerField(null=True)

    class Meta:
        indexes = [
            models.Index(fields=["shop", "started_at"], name="session_path_started"),
            models.Index(
                fields=["shop", "is_abandoned", "last_cart_at", "last_cart_event_id"],
                name="session_path_abandoned",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.shop_id} session {self.session_id}"


class DailySessionPaths(models.Model):
    """The `SessionPath`s of the sessions started on a shop-local day, as one columnar blob.

    Windowless session funnels over a month read ~30 of these instead of one row per session
    and evaluate all sessions at once (`analytics.session_arrays`).
    """

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="daily_session_paths")
    day = models.DateField()
    session_count = models.PositiveIntegerField(default=0)
    event_count = models.PositiveIntegerField(default=0)
    data = models.BinaryField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["shop", "day"], name="uniq_daily_session_paths")
        ]

    def __str__(self) -> str:
        return f"{self.shop_id} {self.day}: {self.session_count} sessions"


class ProductMonthlyRollup(ProductCounts):
    """`ProductDailyRollup` summed over a shop-local calendar month (`month` is its first day).

    A 30-day range reads whole months here and only its edge days from the daily table.
    """

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="product_month_rollups")
    month = models.DateField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["shop", "month", "product_id"], name="uniq_product_monthly_rollup"
            )
        ]

    def __str__(self) -> str:
        return f"{self.shop_id} {self.month:%Y-%m} {self.product_id}"


# --- Anomalies and alerts (issue 19; docs/anomalies.md) -------------------------------------------


class Severity(models.TextChoices):
    """As `analytics.detectors.findings.Severity`, in the order a rule's minimum compares."""

    INFO = "info", "info"
    WARNING = "warning", "warning"
    CRITICAL = "critical", "critical"


SEVERITY_RANK: dict[str, int] = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class AnomalyKind(models.TextChoices):
    TRAFFIC = "traffic", "traffic (sessions, events)"
    BUSINESS = "business", "business (orders, revenue, conversion)"
    ORDER = "order", "purchase outlier or high-value order"
    BOT = "bot", "hyperactive user or bot"
    HEALTH = "health", "tracking health"
    THRESHOLD = "threshold", "a rule's metric threshold"
    MODEL = "model", "conversion model health (AUC, calibration, drift)"


class AnomalyStatus(models.TextChoices):
    OPEN = "open", "open"
    ACKNOWLEDGED = "acknowledged", "acknowledged"
    RESOLVED = "resolved", "resolved"


class DetectionSettings(models.Model):
    """A shop's detector parameters; a shop without a row uses the defaults (the field defaults)."""

    shop = models.OneToOneField(Shop, on_delete=models.CASCADE, related_name="detection_settings")
    # Robust z from which the seasonal detector speaks (docs/anomalies.md: 4 is the evaluated
    # default for hourly and daily series).
    hourly_threshold = models.FloatField(default=4.0)
    daily_threshold = models.FloatField(default=4.0)
    # Earlier same-slot values before a seasonal detector speaks.
    min_history = models.PositiveSmallIntegerField(default=3)
    # In the shop currency; null turns the high-value alert off.
    high_value_order = models.DecimalField(max_digits=14, decimal_places=2, null=True, default=100)
    order_threshold = models.FloatField(default=3.5)
    # ISO dates in the shop's timezone on which nothing is flagged (and that no baseline uses).
    holidays = models.JSONField(default=list, blank=True)
    # Bots are tagged either way; this says whether the shop wants them out of its analytics.
    exclude_bots = models.BooleanField(default=True)
    # Shared networks (many sessions from one anonymised IP) are reported either way; out of
    # the analytics only when the shop says so: an office or a mobile carrier is often people.
    exclude_shared_networks = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"detection settings of shop {self.shop_id}"


class DetectionState(models.Model):
    """How far detection has read, per shop (Zulip FillState style, as `PipelineWatermark`).

    `orders_position`: Order.updated_at in µs since 1970 of the newest order judged;
    `events_position`: Event.id up to which bots were looked for; `rollups_at`: the rollup
    watermark's `updated_at` the series were last judged at (the sweep detects when it moved).
    """

    shop = models.OneToOneField(Shop, on_delete=models.CASCADE, related_name="detection_state")
    orders_position = models.BigIntegerField(default=0)
    events_position = models.BigIntegerField(default=0)
    rollups_at = models.DateTimeField(null=True, blank=True)
    detected_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"detection of shop {self.shop_id} at {self.detected_at}"


class Anomaly(models.Model):
    """One anomalous window of one metric (of one order, person or network: `subject`).

    Deduplicated by (shop, metric, subject, window_start): detection re-judges recent windows on
    every run and updates the row; a resolved row is not reopened by the same window.
    """

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="anomalies")
    kind = models.CharField(max_length=16, choices=AnomalyKind.choices)
    metric = models.CharField(max_length=64)
    subject = models.CharField(max_length=128, blank=True, default="")
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    observed = models.FloatField()
    expected = models.FloatField(null=True, blank=True)
    band_low = models.FloatField(null=True, blank=True)
    band_high = models.FloatField(null=True, blank=True)
    score = models.FloatField(null=True, blank=True)
    direction = models.CharField(max_length=8, blank=True, default="")
    severity = models.CharField(max_length=8, choices=Severity.choices)
    detector = models.CharField(max_length=32)
    explanation = models.TextField()
    status = models.CharField(
        max_length=16, choices=AnomalyStatus.choices, default=AnomalyStatus.OPEN
    )
    opened_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["shop", "metric", "subject", "window_start"], name="uniq_anomaly_window"
            )
        ]
        indexes = [
            models.Index(fields=["shop", "status", "window_start"], name="anomaly_shop_status"),
            models.Index(fields=["shop", "window_start"], name="anomaly_shop_window"),
        ]

    def __str__(self) -> str:
        return f"{self.metric} {self.window_start:%Y-%m-%d %H:%M} ({self.severity}, {self.status})"


class BotTag(models.Model):
    """A person the bot detector tagged, with its reasons and sessions; kept, never deleted
    with the raw log (the events stay in the log, as the issue asks)."""

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="bot_tags")
    person_id = models.BigIntegerField()
    reasons = models.JSONField(default=list)
    session_ids = models.JSONField(default=list)
    event_count = models.PositiveIntegerField(default=0)
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()
    tagged_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["shop", "person_id"], name="uniq_bot_tag_person")
        ]

    def __str__(self) -> str:
        return f"bot person {self.person_id} of shop {self.shop_id}"


class NetworkTag(models.Model):
    """A network (anonymised IP) the bot detector found shared by many sessions, with the
    people and sessions seen on it; kept whatever the shop chose, like `BotTag`."""

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="network_tags")
    network = models.CharField(max_length=64)
    person_ids = models.JSONField(default=list)
    session_ids = models.JSONField(default=list)
    event_count = models.PositiveIntegerField(default=0)
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()
    tagged_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["shop", "network"], name="uniq_network_tag")]

    def __str__(self) -> str:
        return f"shared network {self.network} of shop {self.shop_id}"


class AlertChannel(models.TextChoices):
    EMAIL = "email", "email"
    WEBHOOK = "webhook", "webhook"


class AlertRule(models.Model):
    """Which anomalies go where: kinds (empty: all) and metrics (empty: all) at a minimum
    severity, or a metric crossing `threshold_value`; to email addresses or one webhook."""

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="alert_rules")
    name = models.CharField(max_length=128)
    is_active = models.BooleanField(default=True)
    kinds = models.JSONField(default=list, blank=True)
    metrics = models.JSONField(default=list, blank=True)
    min_severity = models.CharField(
        max_length=8, choices=Severity.choices, default=Severity.WARNING
    )
    # A threshold rule: `threshold_metric` (a series metric) above or below `threshold_value`.
    threshold_metric = models.CharField(max_length=64, blank=True, default="")
    threshold_direction = models.CharField(max_length=8, blank=True, default="")
    threshold_value = models.FloatField(null=True, blank=True)
    channel = models.CharField(max_length=16, choices=AlertChannel.choices)
    emails = models.JSONField(default=list, blank=True)
    webhook_url = models.URLField(max_length=1024, blank=True, default="")
    # The HMAC-SHA256 key of the webhook's signature, generated per rule.
    secret = models.CharField(max_length=64, blank=True, default="")
    cooldown_minutes = models.PositiveIntegerField(default=60)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.channel})"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "pending"
    SENT = "sent", "sent"
    FAILED = "failed", "failed"
    SUPPRESSED = "suppressed", "suppressed by the cooldown"


class AlertDelivery(models.Model):
    """One anomaly sent (or held back by the cooldown) through one rule: the delivery log."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="deliveries")
    anomaly = models.ForeignKey(Anomaly, on_delete=models.CASCADE, related_name="deliveries")
    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="alert_deliveries")
    metric = models.CharField(max_length=64)
    # The anomaly's direction when sent: a window re-judged from a drop to a spike (late events)
    # is told again, since the first alert said the opposite.
    direction = models.CharField(max_length=8, blank=True, default="")
    channel = models.CharField(max_length=16, choices=AlertChannel.choices)
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=1024, blank=True, default="")
    created_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "anomaly", "direction"], name="uniq_alert_delivery"
            )
        ]
        indexes = [
            models.Index(fields=["rule", "metric", "created_at"], name="alert_delivery_cooldown"),
            models.Index(fields=["shop", "created_at"], name="alert_delivery_shop"),
        ]

    def __str__(self) -> str:
        return f"{self.channel} of anomaly {self.anomaly_id}: {self.status}"


class Report(models.Model):
    """A shop's daily or weekly report: its figures (JSON), text and HTML, as generated.

    Weekly reports are ISO weeks (Monday to Sunday); both kinds are shop-local days. One report
    per shop, kind and first day: a regeneration replaces it. `sent_at` is claimed before the
    email goes out, so two workers never send the same report twice.
    """

    class Kind(models.TextChoices):
        DAILY = "daily", "Daily"
        WEEKLY = "weekly", "Weekly"

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="reports")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    first_day = models.DateField()
    last_day = models.DateField()
    data = models.JSONField()
    text = models.TextField()
    html = models.TextField()
    created_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)
    recipient_count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["shop", "kind", "first_day"], name="uniq_report_shop_kind_first"
            )
        ]
        indexes = [models.Index(fields=["shop", "-first_day"], name="report_shop_first")]

    def __str__(self) -> str:
        return f"{self.shop_id} {self.kind} {self.first_day}"


class ReportRecipient(models.Model):
    """An address that receives a shop's reports, daily, weekly or both."""

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="report_recipients")
    email = models.EmailField()
    is_daily = models.BooleanField(default=True)
    is_weekly = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["shop", "email"], name="uniq_report_recipient")
        ]

    def __str__(self) -> str:
        return f"{self.shop_id} {self.email}"
