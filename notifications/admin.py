from django.contrib import admin, messages

from notifications import services
from notifications.models import ConversionScore, ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("name", "version", "shop", "is_active", "trained_at", "roc_auc", "path")
    list_filter = ("name", "is_active", "shop")
    readonly_fields = ("name", "version", "shop", "path", "metrics", "trained_at", "is_active")
    actions = ["activate"]

    @admin.display(description="Test ROC-AUC")
    def roc_auc(self, obj: ModelVersion) -> float | None:
        return (obj.metrics.get("metrics") or {}).get("roc_auc")

    @admin.action(description="Activate the selected version")
    def activate(self, request, queryset):
        for model_version in queryset:
            services.model_version_activate(model_version=model_version)
        self.message_user(request, f"Activated {queryset.count()} version(s).", messages.SUCCESS)


@admin.register(ConversionScore)
class ConversionScoreAdmin(admin.ModelAdmin):
    list_display = ("session", "shop", "person", "score", "model_version", "scored_at")
    list_filter = ("shop",)
    raw_id_fields = ("session", "person", "model_version")
    date_hierarchy = "scored_at"
