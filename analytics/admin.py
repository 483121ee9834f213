"""Reports and detection settings in the admin: recipients and settings are written through
their services; reports are shown read-only (the sweep builds them; `manage.py report` prints
one)."""

from django import forms
from django.contrib import admin

from analytics.models import DetectionSettings, Report, ReportRecipient
from analytics.services import detection_settings as detection
from analytics.services import reports as services
from clickserver.admin import ReadOnlyAdmin
from clickserver.errors import ApplicationError


@admin.register(ReportRecipient)
class ReportRecipientAdmin(admin.ModelAdmin):
    list_display = ("email", "shop", "is_daily", "is_weekly", "created_at")
    list_filter = ("is_daily", "is_weekly")
    search_fields = ("email", "shop__domain")
    fields = ("shop", "email", "is_daily", "is_weekly")

    def get_readonly_fields(self, request, obj=None):
        # An address belongs to one shop: moving it would send one shop's figures to another's.
        return ("shop", "email") if obj is not None else ()

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        recipient = services.report_recipient_save(
            shop=obj.shop if change else data["shop"],
            email=obj.email if change else data["email"],
            is_daily=data["is_daily"],
            is_weekly=data["is_weekly"],
        )
        # The admin goes on with the form's instance (its messages, its log entry, its redirect).
        obj.pk = recipient.pk
        obj.refresh_from_db()

    def delete_model(self, request, obj):
        services.report_recipient_delete(recipient=obj)

    def delete_queryset(self, request, queryset):
        for recipient in queryset:
            services.report_recipient_delete(recipient=recipient)


@admin.register(Report)
class ReportAdmin(ReadOnlyAdmin):
    list_display = (
        "shop",
        "kind",
        "first_day",
        "last_day",
        "created_at",
        "sent_at",
        "recipient_count",
    )
    list_filter = ("kind",)
    search_fields = ("shop__domain",)
    exclude = ("data", "html")
    readonly_fields = (
        "shop",
        "kind",
        "first_day",
        "last_day",
        "text",
        "created_at",
        "sent_at",
        "recipient_count",
    )


class DetectionSettingsForm(forms.ModelForm):
    """The same validation as the API (`detection_settings_clean`): a negative threshold or a
    malformed holiday is a form error, not a saved row."""

    class Meta:
        model = DetectionSettings
        fields = (
            "shop",
            "hourly_threshold",
            "daily_threshold",
            "min_history",
            "order_threshold",
            "high_value_order",
            "holidays",
            "exclude_bots",
            "exclude_shared_networks",
        )

    def clean(self):
        data = super().clean()
        values = {k: v for k, v in data.items() if k in detection.SETTINGS_FIELDS}
        if values.get("high_value_order") is not None:
            values["high_value_order"] = str(values["high_value_order"])
        try:
            detection.detection_settings_clean(values)
        except ApplicationError as error:
            for name, messages in (error.fields or {}).items():
                self.add_error(name if name in self.fields else None, messages)
        return data


@admin.register(DetectionSettings)
class DetectionSettingsAdmin(admin.ModelAdmin):
    form = DetectionSettingsForm
    list_display = (
        "shop",
        "hourly_threshold",
        "daily_threshold",
        "high_value_order",
        "exclude_bots",
        "exclude_shared_networks",
        "updated_at",
    )
    list_filter = ("exclude_bots", "exclude_shared_networks")
    search_fields = ("shop__domain",)

    def get_readonly_fields(self, request, obj=None):
        return ("shop",) if obj is not None else ()

    def save_model(self, request, obj, form, change):
        data = {k: v for k, v in form.cleaned_data.items() if k in detection.SETTINGS_FIELDS}
        if data.get("high_value_order") is not None:
            data["high_value_order"] = str(data["high_value_order"])
        shop = obj.shop if change else form.cleaned_data["shop"]
        row = detection.detection_settings_update(shop=shop, data=data)
        obj.pk = row.pk
        obj.refresh_from_db()
