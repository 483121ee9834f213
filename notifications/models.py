"""The conversion model registry and live conversion scores."""

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
