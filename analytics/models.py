"""Rollup tables: pre-aggregated counts that dashboard requests read instead of the raw log.

Hourly rows are keyed by the UTC hour, so day/week/month buckets in any shop timezone are sums of
hours (timezones with 30/45-minute offsets put that part-hour into the neighbouring bucket).
Distinct people cannot be summed across hours, hence the separate per-day visitor table.
Every row is derived and rebuilt by `analytics.services`; nothing else writes here.
"""

from django.db import models

from events.models import Session, Shop


class HourlyRollup(models.Model):
    """Session and event counts of one UTC hour, split by the session's source/device/country.

    Sessions count in the hour they started; events in the hour they occurred, attributed to
    their session's dimensions (events without a session have empty dimensions). Each hour also
    has one `is_total` row summing all its dimension rows, so unfiltered reads touch one row per
    hour instead of one per source × device × country.
    """

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="hourly_rollups")
    hour = models.DateTimeField()
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
        constraints = [
            models.UniqueConstraint(
                fields=["shop", "is_total", "hour", "utm_source", "device", "country"],
                name="uniq_hourly_rollup_bucket",
            )
        ]
        indexes = [
            # Covers the per-country and per-source sums (geography, insights) without row reads.
            models.Index(
                fields=[
                    "shop",
                    "is_total",
                    "hour",
                    "country",
                    "utm_source",
                    "session_count",
                    "converted_session_count",
                ],
                name="hourly_rollup_dimensions",
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


class DailyVisitor(models.Model):
    """A person with at least one event on this day (shop-local date): distinct counts over days."""

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="daily_visitors")
    day = models.DateField()
    person_id = models.BigIntegerField()
    # The person was first seen on this day: a new visitor.
    is_new = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["shop", "day", "person_id"], name="uniq_daily_visitor")
        ]
        indexes = [
            # Retention joins each new visitor to their later days.
            models.Index(fields=["shop", "person_id", "day"], name="daily_visitor_person")
        ]

    def __str__(self) -> str:
        return f"{self.shop_id} {self.day} person {self.person_id}"


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
