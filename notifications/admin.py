"""The model registry and the live scores in the admin: read-only, since training and scoring
write them; a version is activated through `model_version_activate`."""

from django.contrib import admin, messages

from clickserver.admin import ReadOnlyAdmin
from notifications import services
from notifications.models import ConversionScore, ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ("name", "version", "shop", "is_active", "trained_at", "roc_auc", "path")
    list_filter = ("name", "is_active", "shop")
    actions = ["activate"]

    @admin.display(description="Test ROC-AUC")
    def roc_auc(self, obj: ModelVersion) -> float | None:
        return (obj.metrics.get("metrics") or {}).get("roc_auc")

    def has_activate_permission(self, request) -> bool:
        # Activating changes which version scores a shop: it takes the change permission that
        # the read-only form itself does not grant.
        return request.user.has_perm("notifications.change_modelversion")

    @admin.action(description="Activate the selected version", permissions=["activate"])
    def activate(self, request, queryset):
        for model_version in queryset:
            services.model_version_activate(model_version=model_version)
        self.message_user(request, f"Activated {queryset.count()} version(s).", messages.SUCCESS)


@admin.register(ConversionScore)
class ConversionScoreAdmin(ReadOnlyAdmin):
    list_display = ("session", "shop", "person", "score", "model_version", "scored_at")
    list_filter = ("shop",)
    raw_id_fields = ("session", "person", "model_version")
    date_hierarchy = "scored_at"
