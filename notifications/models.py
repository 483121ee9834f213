"""The conversion model registry and live conversion scores."""

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from events.models import Person, Session, Shop


class ModelVersion(models.Model):
    """One trained model in the TF Serving layout `MODEL_DIR/<name>/<version>/`.

    Versions are numbered per name (TF Serving's directory layout is global); each is trained on
    one shop's data and at most one version per (shop, name) is active.
    """

    shop = models.ForeignKey(
        Shop, on_delete=models.CASCADE, null=True, blank=True, related_name="model_versions"
    )
    name = models.CharField(max_length=64, default="conversion")
    version = models.PositiveIntegerField()
    path = models.CharField(max_length=1024)
    metrics = models.JSONField(default=dict, blank=True)
    trained_at = models.DateTimeField()
    is_active = models.BooleanField(default=False)

    class Meta:
        ordering = ["name", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="uniq_model_name_version")
        ]
        indexes = [models.Index(fields=["shop", "name", "is_active"], name="model_shop_active")]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}{' (active)' if self.is_active else ''}"


class ConversionScore(models.Model):
    """The latest probability that a session ends in a purchase (one row per session)."""

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="conversion_scores")
    session = models.OneToOneField(
        Session, on_delete=models.CASCADE, related_name="conversion_score"
    )
    person = models.ForeignKey(
        Person, on_delete=models.CASCADE, null=True, blank=True, related_name="conversion_scores"
    )
    score = models.FloatField()
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="scores"
    )
    scored_at = models.DateTimeField()
    # The session's event count when it was scored: a live session is scored again only when it
    # has new events or the active model changed (notifications.services.scores_refresh).
    event_count = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["shop", "scored_at"], name="score_shop_scored")]

    def __str__(self) -> str:
        return f"session {self.session_id}: {self.score:.3f}"


class ScoreSample(models.Model):
    """A live score as it was given: the session's score after its first `event_count` events.

    `ConversionScore` keeps only a session's latest score; these rows keep each distinct prefix's
    first score, so the live calibration report can compare what was predicted while the session
    was going with how it ended. Sessions are not scored after their purchase, so every sample is
    a prediction made before the outcome was known.
    """

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="score_samples")
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="score_samples")
    event_count = models.PositiveIntegerField()
    score = models.FloatField()
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="samples"
    )
    scored_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["session", "event_count"], name="uniq_sample_session_count"
            )
        ]
        indexes = [models.Index(fields=["shop", "scored_at"], name="sample_shop_scored")]

    def __str__(self) -> str:
        return f"session {self.session_id} after {self.event_count} events: {self.score:.3f}"


class ModelHealthStatus(models.TextChoices):
    HEALTHY = "healthy", "Healthy"
    DEGRADED = "degraded", "Degraded"
    INSUFFICIENT = "insufficient", "Too few finished sessions to judge"


class ModelMonitorSettings(models.Model):
    """A shop's thresholds for the daily model check (docs/conversion-model.md, *Monitoring in
    production*); a shop without a row uses the field defaults."""

    shop = models.OneToOneField(Shop, on_delete=models.CASCADE, related_name="model_monitor")
    # The live scores judged each day: those given in the last `window_days` days.
    window_days = models.PositiveSmallIntegerField(
        default=7, validators=[MinValueValidator(1), MaxValueValidator(90)]
    )
    # Judged only with at least this many samples and this many of each outcome.
    min_samples = models.PositiveIntegerField(
        default=200, validators=[MinValueValidator(1), MaxValueValidator(1_000_000)]
    )
    min_per_class = models.PositiveIntegerField(
        default=10, validators=[MinValueValidator(1), MaxValueValidator(100_000)]
    )
    # The AUC is low below `auc_floor`, or below the card's test AUC on prefixes minus the margin.
    auc_floor = models.FloatField(
        default=0.6, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)]
    )
    auc_margin = models.FloatField(
        default=0.05, validators=[MinValueValidator(0.0), MaxValueValidator(0.5)]
    )
    ece_max = models.FloatField(
        default=0.05, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)]
    )
    psi_max = models.FloatField(
        default=0.25, validators=[MinValueValidator(0.0), MaxValueValidator(10.0)]
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"model monitoring of shop {self.shop_id}"


class ModelHealth(models.Model):
    """One day's check of one model version of one shop: its live scores (`ScoreSample` rows of
    sessions that have ended) against how those sessions ended. Rewritten when the day is
    checked again."""

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="model_health")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="health")
    day = models.DateField()  # UTC date of the check's end
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    sample_count = models.PositiveIntegerField()
    session_count = models.PositiveIntegerField()
    positive_count = models.PositiveIntegerField()
    mean_score = models.FloatField(null=True, blank=True)
    positive_rate = models.FloatField(null=True, blank=True)
    roc_auc = models.FloatField(null=True, blank=True)
    reference_auc = models.FloatField(null=True, blank=True)
    brier = models.FloatField(null=True, blank=True)
    ece = models.FloatField(null=True, blank=True)
    psi = models.FloatField(null=True, blank=True)
    # Reliability bins ([{low, high, count, mean_predicted, observed_rate}]) and the drift bins
    # ({"edges", "reference", "live", "source"}).
    bins = models.JSONField(default=list, blank=True)
    drift = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=ModelHealthStatus.choices)
    # [{"metric", "observed", "threshold", "detail"}] of every failed check.
    problems = models.JSONField(default=list, blank=True)
    thresholds = models.JSONField(default=dict, blank=True)
    checked_at = models.DateTimeField()

    class Meta:
        ordering = ["shop", "-day", "-model_version_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["shop", "model_version", "day"], name="uniq_model_health_day"
            )
        ]
        indexes = [models.Index(fields=["shop", "day"], name="model_health_shop_day")]

    def __str__(self) -> str:
        return f"model {self.model_version_id} on {self.day}: {self.status}"


class ExperimentUnit(models.TextChoices):
    PERSON = "person", "Person (after identity stitching)"
    SESSION = "session", "Session"


class ExperimentStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    RUNNING = "running", "Running"
    STOPPED = "stopped", "Stopped"


class Experiment(models.Model):
    """An A/B/n test of one shop (docs/experiments.md); written only by notifications/experiments.

    `targeting` and the metrics are JSON validated by `notifications.experiments.rules`. `phase` is
    0 until the first start; each start and each change of the running variants opens a new
    `ExperimentPhase`, and the phase number is part of every assignment hash.
    """

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="experiments")
    key = models.SlugField(max_length=64)
    # `key` while draft or running, NULL once stopped: the unique (shop, live_key) keeps one live
    # experiment per key (MariaDB has no partial unique indexes; NULLs never collide).
    live_key = models.CharField(max_length=64, null=True, blank=True, editable=False)  # noqa: DJ001
    name = models.CharField(max_length=255)
    hypothesis = models.TextField(blank=True, default="")
    unit = models.CharField(max_length=8, choices=ExperimentUnit.choices)
    holdout_share = models.FloatField(default=0.0)
    targeting = models.JSONField(default=dict, blank=True)
    primary_metric = models.JSONField()
    secondary_metrics = models.JSONField(default=list, blank=True)
    guardrail_metrics = models.JSONField(default=list, blank=True)
    winsor_percentile = models.FloatField(default=99.9)
    is_sequential = models.BooleanField(default=True)
    # Relative minimum detectable effect on the primary metric (0.05 = +5 %), for the power check.
    planned_mde = models.FloatField(null=True, blank=True)
    status = models.CharField(
        max_length=8, choices=ExperimentStatus.choices, default=ExperimentStatus.DRAFT
    )
    phase = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["shop", "live_key"], name="uniq_experiment_live_key"),
            models.CheckConstraint(
                condition=models.Q(holdout_share__gte=0, holdout_share__lt=1),
                name="experiment_holdout_share_range",
            ),
        ]
        indexes = [models.Index(fields=["shop", "status"], name="experiment_shop_status")]

    def __str__(self) -> str:
        return f"{self.key} ({self.status})"

    @property
    def metrics(self) -> list[dict]:
        """Every metric the analysis computes: the primary, then the secondary and guardrails."""
        return [self.primary_metric, *self.secondary_metrics, *self.guardrail_metrics]


class Variant(models.Model):
    """One arm; `weight` is its normalised share of the non-held-out units (weights sum to 1)."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="variants")
    key = models.SlugField(max_length=64)
    name = models.CharField(max_length=255, blank=True, default="")
    weight = models.FloatField()
    is_control = models.BooleanField(default=False)
    # The order in which cumulative weights are laid out on [0, 1): part of the assignment.
    position = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["experiment", "position"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "key"], name="uniq_variant_key"),
            models.UniqueConstraint(
                fields=["experiment", "position"], name="uniq_variant_position"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.weight:.3f}{', control' if self.is_control else ''})"


class ExperimentPhase(models.Model):
    """A stretch of a running experiment with fixed variants and weights, analysed on its own.

    `variants` snapshots [{"key", "weight", "is_control"}] in position order, and `holdout_share`
    the holdout, as they were for the whole phase.
    """

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="phases")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    variants = models.JSONField()
    holdout_share = models.FloatField()

    class Meta:
        ordering = ["experiment", "number"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "number"], name="uniq_experiment_phase")
        ]

    def __str__(self) -> str:
        return f"{self.experiment_id} phase {self.number}"


class ExperimentExposure(models.Model):
    """One unit's exposures to one phase of an experiment, from its `experiment_exposure` events.

    Filled by `notifications.experiments.exposures` from a watermark over the event log. `unit_id`
    is the assignment's (`user:…`, `anon:…`, `session:<Session.id>`); `variant` is the variant of
    the unit's earliest exposure. `person` and `session` are the stitched person and the session
    of that first exposure: a merge deletes the losing person (SET_NULL here) and the next run
    re-reads them from `first_event_id`; a row whose event is gone (an erasure) is deleted.
    """

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="exposures")
    phase = models.PositiveIntegerField()
    unit_id = models.CharField(max_length=300)
    person = models.ForeignKey(
        Person, on_delete=models.SET_NULL, null=True, blank=True, related_name="exposures"
    )
    session = models.ForeignKey(
        Session, on_delete=models.SET_NULL, null=True, blank=True, related_name="exposures"
    )
    variant = models.CharField(max_length=64)
    first_exposed_at = models.DateTimeField()
    first_event_id = models.BigIntegerField()
    exposure_count = models.PositiveIntegerField(default=0)
    # Exposed in more than one variant of this phase: counted, reported, left out of the analysis.
    is_seen_in_other_variant = models.BooleanField(default=False)
    # An exposure the targeting (or the holdout) would not have admitted: likewise left out.
    is_outside_targeting = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "phase", "unit_id"], name="uniq_exposure_unit"
            )
        ]

    def __str__(self) -> str:
        return f"{self.unit_id} in {self.variant} (experiment {self.experiment_id})"


class ExperimentResult(models.Model):
    """The latest analysis of one phase of an experiment (`notifications.experiments.results`)."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="results")
    phase = models.PositiveIntegerField()
    data = models.JSONField()
    computed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["experiment", "phase"], name="uniq_result_phase")
        ]

    def __str__(self) -> str:
        return f"results of {self.experiment_id} phase {self.phase} at {self.computed_at:%Y-%m-%d}"


class CampaignStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    # The global stop: no decision is made and nothing pending is served again.
    STOPPED = "stopped", "Stopped"


class CampaignChannel(models.TextChoices):
    ON_SITE = "on_site", "On-site toast"
    # Delivered by notifications/campaigns/deliveries.py (docs/campaigns.md, "Email and webhook").
    EMAIL = "email", "Email"
    WEBHOOK = "webhook", "Webhook"


class Campaign(models.Model):
    """A sale notification of one shop (docs/campaigns.md); written only by
    notifications/campaigns/services.py.

    `trigger`, `targeting`, `variants` (the content, one experiment arm each) and the caps are
    validated by `notifications.campaigns.rules`. The `experiment` measures it: a control arm
    "holdout" that is decided like the others but shown nothing, and one arm per content variant.
    """

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="campaigns")
    key = models.SlugField(max_length=48)
    name = models.CharField(max_length=255)
    status = models.CharField(
        max_length=8, choices=CampaignStatus.choices, default=CampaignStatus.DRAFT
    )
    trigger = models.JSONField()
    targeting = models.JSONField(default=dict, blank=True)
    # [{"key", "title", "body", "cta_url", "cta_text"}]: each an arm of the experiment.
    variants = models.JSONField()
    channel = models.CharField(
        max_length=8, choices=CampaignChannel.choices, default=CampaignChannel.ON_SITE
    )
    holdout_share = models.FloatField(default=0.1)
    max_per_person_day = models.PositiveIntegerField(default=1)
    max_per_person_week = models.PositiveIntegerField(default=3)
    # Local hours [start, end) of the shop's timezone without decisions; both null: none.
    quiet_start_hour = models.PositiveSmallIntegerField(null=True, blank=True)
    quiet_end_hour = models.PositiveSmallIntegerField(null=True, blank=True)
    # Served only to a browser holding the shopper's consent; always so when the shop's consent
    # mode requires consent, whatever this flag says.
    is_consent_required = models.BooleanField(default=False)
    # The webhook channel's receiver and the HMAC-SHA256 secret its requests are signed with
    # (generated by the service when the channel becomes webhook; "" for other channels).
    webhook_url = models.CharField(max_length=1024, blank=True, default="")
    webhook_secret = models.CharField(max_length=64, blank=True, default="")
    experiment = models.OneToOneField(
        Experiment, on_delete=models.CASCADE, related_name="campaign", editable=False
    )
    started_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["shop", "key"], name="uniq_campaign_shop_key"),
        ]
        indexes = [models.Index(fields=["shop", "status"], name="campaign_shop_status")]

    def __str__(self) -> str:
        return f"{self.key} ({self.status})"


class DiscountCode(models.Model):
    """One code of a campaign's pool; claimed once, by one experiment unit (a person)."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="codes")
    code = models.CharField(max_length=64)
    claimed_unit_id = models.CharField(max_length=300, null=True, blank=True)  # noqa: DJ001
    claimed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "code"], name="uniq_code_campaign_code"),
            # NULLs never collide: any number of free codes, one claimed code per unit.
            models.UniqueConstraint(
                fields=["campaign", "claimed_unit_id"], name="uniq_code_campaign_unit"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.code} ({'claimed' if self.claimed_unit_id else 'free'})"


class CampaignDecision(models.Model):
    """That a campaign acted on a live session: who, which arm, why, at what score.

    One row per (campaign, session), so re-evaluating a session is a no-op. A holdout decision is
    stored like the others (the experiment's control) but nothing is shown. The rendered text is
    kept as it was decided: the storefront shows exactly what was stored.
    """

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="decisions")
    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="campaign_decisions")
    # Null only when a late event or a merge joined this visit into one that already had a
    # decision of the campaign (notifications.services.sessions_replaced): kept for the results,
    # the caps and the delivery log.
    session = models.ForeignKey(
        Session,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="campaign_decisions",
    )
    person = models.ForeignKey(Person, on_delete=models.CASCADE, related_name="campaign_decisions")
    # The browser the notification is for: pending is asked by anonymous id.
    anonymous_id = models.CharField(max_length=255, blank=True, default="")
    unit_id = models.CharField(max_length=300)
    phase = models.PositiveIntegerField()
    arm = models.CharField(max_length=64)
    is_holdout = models.BooleanField(default=False)
    reason = models.CharField(max_length=255)
    score = models.FloatField(null=True, blank=True)
    title = models.CharField(max_length=255, blank=True, default="")
    body = models.TextField(blank=True, default="")
    cta_url = models.CharField(max_length=2048, blank=True, default="")
    cta_text = models.CharField(max_length=64, blank=True, default="")
    discount_code = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "session"], name="uniq_decision_campaign_session"
            )
        ]
        indexes = [
            models.Index(fields=["shop", "anonymous_id", "created_at"], name="decision_shop_anon"),
            models.Index(fields=["campaign", "person", "created_at"], name="decision_person"),
        ]

    def __str__(self) -> str:
        return f"{self.campaign_id} → session {self.session_id}: {self.arm}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    # Claimed by a worker (committed) before anything is sent: never claimed twice.
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    # Nothing to send: the holdout arm, an unsubscribed person, an address no longer stored.
    SKIPPED = "skipped", "Skipped"
    # A worker claimed it and never recorded the outcome (killed mid-send): it may or may not
    # have gone out, and it is not sent again (at most once).
    UNCERTAIN = "uncertain", "Uncertain (worker lost mid-send)"


class CampaignDelivery(models.Model):
    """One email or webhook of a decision: the delivery log; written only by
    notifications/campaigns/deliveries.py.

    One row per decision (the idempotency key), created with it; the holdout's row is `skipped`
    so that both arms have one. `attempts` counts the sends tried; a transient failure sets
    `next_attempt_at` (exponential backoff) until the last attempt, then `failed`.
    """

    decision = models.OneToOneField(
        CampaignDecision, on_delete=models.CASCADE, related_name="delivery"
    )
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="deliveries")
    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="campaign_deliveries")
    channel = models.CharField(max_length=8, choices=CampaignChannel.choices)
    status = models.CharField(
        max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=1024, blank=True, default="")
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.CharField(max_length=1024, blank=True, default="")
    # The email's Message-ID, derived from the decision: the same decision is one message.
    message_id = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["campaign", "status", "created_at"], name="delivery_campaign"),
            models.Index(fields=["status", "next_attempt_at"], name="delivery_due"),
        ]
        verbose_name_plural = "campaign deliveries"

    def __str__(self) -> str:
        return f"{self.channel} of decision {self.decision_id}: {self.status}"


class SuppressionReason(models.TextChoices):
    UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
    # The receiving server refused the address permanently (a 5xx at RCPT: no such user).
    BOUNCED = "bounced", "Hard bounce"


class EmailUnsubscribe(models.Model):
    """An address of a shop that campaign email no longer goes to: the person asked (the signed
    link in each email), or the receiving server refused the address for good (a hard bounce).

    Kept by the address's SHA-256 as well as the person, so an identity merge (which deletes the
    losing person) or a new person with the same address is still not emailed. An unsubscribe
    also stops the person at any later address; a bounce stops only the address (the person may
    give the shop a working one).
    """

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="email_unsubscribes")
    person = models.ForeignKey(
        Person, on_delete=models.SET_NULL, null=True, blank=True, related_name="unsubscribes"
    )
    email_hash = models.CharField(max_length=64)
    reason = models.CharField(
        max_length=16, choices=SuppressionReason.choices, default=SuppressionReason.UNSUBSCRIBED
    )
    unsubscribed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["shop", "email_hash"], name="uniq_unsubscribe_email")
        ]

    def __str__(self) -> str:
        return f"{self.shop_id}: person {self.person_id} {self.reason}"
