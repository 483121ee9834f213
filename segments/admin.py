"""Segments in the admin: rule segments are created and edited through the same services as the
API (`segment_create`, `segment_update`), so their rules are validated by the same code; built-in
segments are computed by `segments_refresh` and shown read-only."""

from django import forms
from django.contrib import admin
from django.utils import timezone

from clickserver.errors import ApplicationError
from segments.models import Segment
from segments.services import segments as services


class SegmentForm(forms.ModelForm):
    class Meta:
        model = Segment
        fields = ["shop", "name", "rules"]

    def clean(self):
        cleaned = super().clean()
        shop = cleaned.get("shop") or getattr(self.instance, "shop", None)
        if shop is None or "name" not in cleaned or "rules" not in cleaned:
            return cleaned
        try:
            services.segment_validate(
                shop=shop,
                name=cleaned["name"],
                rules=cleaned["rules"],
                segment=self.instance if self.instance.pk else None,
            )
        except ApplicationError as error:
            for field, messages in (error.fields or {None: [error.detail]}).items():
                self.add_error(field if field in self.fields else None, messages)
        return cleaned


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    form = SegmentForm
    list_display = ("name", "shop", "kind", "key", "member_count", "refreshed_at")
    list_filter = ("kind",)
    search_fields = ("name", "shop__domain")
    readonly_fields = ("kind", "key", "member_count", "refreshed_at", "created_at")

    def get_readonly_fields(self, request, obj=None):
        # A segment stays in its shop: its name is unique there and its members are its persons.
        return (*self.readonly_fields, "shop") if obj is not None else self.readonly_fields

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.kind != Segment.Kind.RULE:
            return False
        return super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        data, now = form.cleaned_data, timezone.now()
        if change:
            services.segment_update(segment=obj, name=data["name"], rules=data["rules"], now=now)
            return
        segment = services.segment_create(
            shop=data["shop"], name=data["name"], rules=data["rules"], now=now
        )
        # The admin goes on with the form's instance (its messages, its log entry, its redirect).
        obj.pk = segment.pk
        obj.refresh_from_db()
