from django.db import migrations, models

# The pipeline's batch query and the backlog probe (`events.selectors.shop_backlog`) walk a shop's
# events in id order from its watermark: `shop_id = ? AND id > ? ORDER BY id LIMIT n`. Without
# this index MariaDB read the whole backlog through (shop_id, received_at) and sorted it, once per
# batch. Ids only grow, so ingestion appends to the right edge of this narrow index.


class Migration(migrations.Migration):
    dependencies = [("events", "0002_shopify")]

    operations = [
        migrations.AddIndex(
            model_name="event",
            index=models.Index(fields=["shop", "id"], name="event_shop_id"),
        ),
    ]
