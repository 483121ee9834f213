"""What every app's admin shares. The admin is an interface like the API: what a service owns is
written through that service, or shown read-only."""

from django.contrib import admin


class ReadOnlyAdmin(admin.ModelAdmin):
    """Raw and derived data is written by the pipeline and the services only.

    Deleting is writing too: a deleted row would leave what was computed from it counting it.
    Actions that call a service declare their own permission (`allowed_permissions`).
    """

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
