"""Watermarks keyed by (job, shop) columns instead of a "job:shop_id" name parsed back apart.

Existing rows keep their positions and failure state; rows of shops that no longer exist go.
"""

import django.db.models.deletion
from django.db import migrations, models


def names_to_columns(apps, schema_editor):
    Watermark = apps.get_model("events", "PipelineWatermark")
    Shop = apps.get_model("events", "Shop")
    shop_ids = set(Shop.objects.values_list("id", flat=True))
    for watermark in Watermark.objects.all():
        job, _, shop_id = watermark.name.rpartition(":")
        if not shop_id.isdigit() or int(shop_id) not in shop_ids:
            watermark.delete()
            continue
        watermark.job, watermark.shop_id = job, int(shop_id)
        watermark.save(update_fields=["job", "shop"])


def columns_to_names(apps, schema_editor):
    Watermark = apps.get_model("events", "PipelineWatermark")
    for watermark in Watermark.objects.all():
        watermark.name = f"{watermark.job}:{watermark.shop_id}"
        watermark.save(update_fields=["name"])


class Migration(migrations.Migration):
    dependencies = [("events", "0007_straggler_index")]

    operations = [
        migrations.AddField(
            model_name="pipelinewatermark",
            name="job",
            field=models.CharField(
                choices=[
                    ("events", "sessions and identity (Event.id)"),
                    ("analytics", "rollups from events (Event.id)"),
                    ("analytics-orders", "rollups from orders (updated_at, µs since 1970)"),
                    ("analytics-refunds", "rollups from refunds (Refund.id)"),
                ],
                default="",
                max_length=32,
            ),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="pipelinewatermark",
            name="shop",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="watermarks",
                to="events.shop",
            ),
        ),
        migrations.AlterField(
            model_name="pipelinewatermark",
            name="name",
            field=models.CharField(max_length=64, default=""),
        ),
        migrations.RunPython(names_to_columns, columns_to_names),
        migrations.RemoveField(model_name="pipelinewatermark", name="name"),
        migrations.AlterField(
            model_name="pipelinewatermark",
            name="shop",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="watermarks",
                to="events.shop",
            ),
        ),
        migrations.AddConstraint(
            model_name="pipelinewatermark",
            constraint=models.UniqueConstraint(
                fields=("job", "shop"), name="uniq_watermark_job_shop"
            ),
        ),
    ]
