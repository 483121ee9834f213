from django.db import migrations, models

import events.models


def _give_each_shop_its_own_secret(apps, schema_editor):
    # AddField evaluates a callable default once for every existing row; each shop needs its own.
    Shop = apps.get_model("events", "Shop")
    for shop in Shop.objects.all().only("pk"):
        Shop.objects.filter(pk=shop.pk).update(identity_secret=events.models.new_identity_secret())


class Migration(migrations.Migration):
    dependencies = [("events", "0004_erasure_request")]

    operations = [
        migrations.AddField(
            model_name="shop",
            name="identity_secret",
            field=models.CharField(default="", max_length=64),
            preserve_default=False,
        ),
        migrations.RunPython(_give_each_shop_its_own_secret, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="shop",
            name="identity_secret",
            field=models.CharField(default=events.models.new_identity_secret, max_length=64),
        ),
    ]
