"""Send analytics reads to the replica when DATABASE_REPLICA_URL is configured.

Only models listed in ANALYTICS_READ_APPS are routed: their data is derived and a replica lag of a
few seconds is acceptable there. Everything the ingestion and pipeline paths read stays on the
primary, so a write is never followed by a stale read of the same row.
"""

from django.conf import settings

ANALYTICS_READ_APPS = {"analytics"}


class AnalyticsReplicaRouter:
    def db_for_read(self, model, **hints):
        if "replica" in settings.DATABASES and model._meta.app_label in ANALYTICS_READ_APPS:
            return "replica"
        return None

    def db_for_write(self, model, **hints):
        return "default"

    def allow_relation(self, obj1, obj2, **hints):
        return True

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == "default"


def analytics_db() -> str:
    """The connection alias analytics selectors read from."""
    return "replica" if "replica" in settings.DATABASES else "default"
