from django.contrib import admin

from segments.models import Segment


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    list_display = ("name", "shop", "kind", "key", "member_count", "refreshed_at")
    list_filter = ("kind",)
    search_fields = ("name", "shop__domain")
    readonly_fields = ("member_count", "refreshed_at", "created_at")
