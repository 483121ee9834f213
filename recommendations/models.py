"""Derived recommendation data: item-to-item co-occurrence within sessions."""

from django.db import models

from events.models import Shop


class ProductAffinity(models.Model):
    """How strongly `other_product_id` goes with `product_id` (cosine of session co-occurrence)."""

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="product_affinities")
    product_id = models.CharField(max_length=128)
    other_product_id = models.CharField(max_length=128)
    score = models.FloatField()
    # Sessions in which both products were seen, so a score can be explained.
    session_count = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["shop", "product_id", "other_product_id"], name="uniq_affinity_pair"
            )
        ]
        indexes = [models.Index(fields=["shop", "product_id", "-score"], name="affinity_lookup")]

    def __str__(self) -> str:
        return f"{self.product_id} -> {self.other_product_id} ({self.score:.3f})"
