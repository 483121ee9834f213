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
