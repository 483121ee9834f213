"""Segments of a shop's persons and their materialised membership."""

from django.db import models

from events.models import Person, Shop


class Segment(models.Model):
    class Kind(models.TextChoices):
        RULE = "rule", "Rule-based"
        BUILTIN = "builtin", "Built-in"

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="segments")
    name = models.CharField(max_length=255)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.RULE)
    # Built-in segments are found by key (e.g. "intent_high"); rule segments leave it blank.
    key = models.CharField(max_length=64, blank=True, default="")
    rules = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    refreshed_at = models.DateTimeField(null=True, blank=True)
    member_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["kind", "name"]
        constraints = [
            models.UniqueConstraint(fields=["shop", "name"], name="uniq_segment_shop_name"),
        ]
        indexes = [models.Index(fields=["shop", "key"], name="segment_shop_key")]

    def __str__(self) -> str:
        return self.name


class SegmentMembership(models.Model):
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="memberships")
    person = models.ForeignKey(Person, on_delete=models.CASCADE, related_name="memberships")
    # When the person entered the segment; kept across refreshes while they stay in it.
    since = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["segment", "person"], name="uniq_membership_segment_person"
            )
        ]

    def __str__(self) -> str:
        return f"{self.person_id} in {self.segment_id}"


class ChurnBand(models.TextChoices):
    """Churn risk bands on `churn_risk` (docs/customers.md, segments/customers.py)."""

    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"


class CustomerModel(models.Model):
    """The shop's last customer-model fit: which model, its parameters, or why there is none."""

    class Kind(models.TextChoices):
        BGNBD_GG = "bgnbd_gg", "BG/NBD + Gamma-Gamma"
        # Chosen per shop when it beats BG/NBD + Gamma-Gamma in the shop's own backtest; it
        # then gives the 90-day figures and the purchase probability (docs/customers.md).
        RFM_GBM = "rfm_gbm", "Gradient-boosted RFM model"
        NONE = "none", "Not enough history"

    shop = models.OneToOneField(Shop, on_delete=models.CASCADE, related_name="customer_model")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # Why the kind is NONE (which minimum is not met, or why the fit failed); blank otherwise.
    reason = models.CharField(max_length=512, blank=True, default="")
    # {"bgnbd": {r, alpha, a, b}, "gamma_gamma": {p, q, v}, "net_share": …}; alpha in days.
    parameters = models.JSONField(default=dict, blank=True)
    customer_count = models.PositiveIntegerField(default=0)
    repeat_customer_count = models.PositiveIntegerField(default=0)
    history_days = models.PositiveIntegerField(default=0)
    fitted_at = models.DateTimeField()
    seconds = models.FloatField(default=0)
    # The per-shop backtest that chose the kind: cut-off, holdout, each model's figures, the
    # rule's wins and the winner, or why it was not run (predictions.customers_backtest).
    backtest = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"{self.shop} {self.kind} at {self.fitted_at:%Y-%m-%d}"


class CustomerPrediction(models.Model):
    """One customer (a person with an order) as of the last nightly refresh.

    Historic figures are net of refunds, cancelled orders excluded; time is counted in the
    shop's local days (frequency = purchase days after the first, recency and tenure in days).
    Predictions are null when the shop's model is `CustomerModel.Kind.NONE`. The person's
    cascade removes the row when the person is erased.
    """

    person = models.OneToOneField(
        Person, on_delete=models.CASCADE, primary_key=True, related_name="customer_prediction"
    )
    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="customer_predictions")
    order_count = models.PositiveIntegerField()
    revenue = models.DecimalField(max_digits=14, decimal_places=2)
    first_order_at = models.DateTimeField()
    last_order_at = models.DateTimeField()
    frequency = models.PositiveIntegerField()
    recency_days = models.FloatField()
    tenure_days = models.FloatField()
    alive_probability = models.FloatField(null=True)
    expected_orders_90 = models.FloatField(null=True)
    expected_orders_365 = models.FloatField(null=True)
    expected_revenue_90 = models.DecimalField(max_digits=14, decimal_places=2, null=True)
    expected_revenue_365 = models.DecimalField(max_digits=14, decimal_places=2, null=True)
    predicted_clv = models.DecimalField(max_digits=14, decimal_places=2, null=True)
    purchase_probability_30 = models.FloatField(null=True)
    next_order_at = models.DateTimeField(null=True)
    churn_risk = models.FloatField(null=True)
    churn_band = models.CharField(max_length=8, choices=ChurnBand.choices, blank=True, default="")
    model = models.CharField(max_length=16, choices=CustomerModel.Kind.choices)
    fitted_at = models.DateTimeField()
    # "18-25" … "66+" from the person's `age` or `birth_date` / `birthday` trait as of the
    # refresh (events.traits.age_band); blank when none was sent or it is out of range.
    age_band = models.CharField(max_length=8, blank=True, default="")

    class Meta:
        # The list's sort orders, each read backwards from its index for a page (person id, the
        # primary key, is in every InnoDB secondary index and breaks ties).
        indexes = [
            models.Index(fields=["shop", "revenue"], name="customer_shop_revenue"),
            models.Index(fields=["shop", "order_count"], name="customer_shop_orders"),
            models.Index(fields=["shop", "predicted_clv"], name="customer_shop_clv"),
            models.Index(fields=["shop", "churn_risk"], name="customer_shop_churn"),
            models.Index(fields=["shop", "fitted_at"], name="customer_shop_fitted"),
            models.Index(fields=["shop", "age_band", "revenue"], name="customer_shop_age_revenue"),
        ]

    def __str__(self) -> str:
        return f"customer {self.person_id}"
