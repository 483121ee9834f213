"""Reports in the admin: recipients are written through their services; reports are shown
read-only (the sweep builds them; `manage.py report` prints one)."""

from django.contrib import admin

from analytics.models import Report, ReportRecipient
from analytics.services import reports as services
from clickserver.admin import ReadOnlyAdmin


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
