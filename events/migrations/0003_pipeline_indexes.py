from django.db import migrations

# The pipeline's batch query and the backlog probe (`events.selectors.shop_backlog`) walk a shop's
# events in id order from its watermark: `shop_id = ? AND id > ? ORDER BY id LIMIT n`. No index
# served that (the unique (shop, event_id) index has event_id in between), so MariaDB read the
# whole backlog through (shop_id, received_at) and sorted it, once per batch. Ids only grow, so
# ingestion appends to the right edge of this narrow index. Raw SQL rather than AddIndex because
# this branch does not touch events/models.py; moving it into Event.Meta as
# `models.Index(fields=["shop", "id"], name="event_shop_id")` later is a state-only change.


def create(apps, schema_editor):
    schema_editor.execute("CREATE INDEX event_shop_id ON events_event (shop_id, id)")


def drop(apps, schema_editor):
    on_table = " ON events_event" if schema_editor.connection.vendor == "mysql" else ""
    schema_editor.execute(f"DROP INDEX event_shop_id{on_table}")


class Migration(migrations.Migration):
    dependencies = [("events", "0002_shopify")]

    operations = [migrations.RunPython(create, drop, atomic=False, elidable=False)]
