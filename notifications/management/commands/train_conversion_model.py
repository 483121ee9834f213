import json

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from events.models import Shop
from notifications import services
from notifications.model import TrainingConfig


class Command(BaseCommand):
    help = "Train the conversion LSTM for a shop, export it for TF Serving, register and activate."

    def add_arguments(self, parser):
        parser.add_argument("--shop", required=True, help="shop domain")
        parser.add_argument("--csv", help="train on a Taobao UserBehavior CSV instead of the log")
        parser.add_argument("--epochs", type=int, default=TrainingConfig().epochs)

    def handle(self, *args, **options):
        shop = Shop.objects.filter(domain=options["shop"]).first()
        if shop is None:
            raise CommandError(f"no shop {options['shop']}")
        try:
            model_version = services.conversion_model_train(
                shop=shop,
                now=timezone.now(),
                csv_path=options["csv"],
                config=TrainingConfig(epochs=options["epochs"]),
                progress=lambda message: self.stderr.write(message),
            )
        except ValueError as error:
            raise CommandError(str(error)) from error
        card = model_version.metrics
        summary = {
            "version": model_version.version,
            "path": model_version.path,
            "sizes": card["sizes"],
            "metrics": card["metrics"],
            # Test-split prefixes, as live scoring sees sessions; the card has the reliability bins.
            "calibration": {k: card["calibration"]["test"][k] for k in ("ece", "brier")},
            "baselines": {name: m["roc_auc"] for name, m in card["baselines"].items()},
            # Activated only if not worse than the version that was active (docs: Training).
            "is_active": model_version.is_active,
            "promotion": card["promotion"],
        }
        self.stdout.write(json.dumps(summary))
