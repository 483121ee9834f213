"""The events app in the admin: shops through their services; the log and derived data read-only."""

from contextvars import ContextVar

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from clickserver.admin import ReadOnlyAdmin
from events import selectors
from events.models import (
    Checkout,
    ErasureRequest,
    Event,
    Order,
    OrderLine,
    Person,
    PersonIdentifier,
    PipelineJob,
    PipelineWatermark,
    PrivacyRequest,
    Product,
    RejectedEvent,
    Session,
    Shop,
    ShopMembership,
    WebhookDelivery,
)
from events.services import erasure
from events.services.ingest import rejected_event_replay
from events.services.shops import (
    shop_create,
    shop_rotate_identity_secret,
    shop_rotate_write_key,
    shop_timezone_validate,
    shop_update,
)
from events.snippet import snippet_tag

_admin_request: ContextVar[HttpRequest | None] = ContextVar("admin_request", default=None)


def _is_owner(request: HttpRequest, shop: Shop | None) -> bool:
    """Owners (and superusers) manage a shop: its settings, members, keys and secrets."""
    if request.user.is_superuser:
        return True
    if shop is None:
        return selectors.shops_owned_by(user=request.user).exists()
    return selectors.shops_owned_by(user=request.user).filter(pk=shop.pk).exists()


class ShopMembershipInline(admin.TabularInline):
    model = ShopMembership
    extra = 1
    autocomplete_fields = ["user"]

    # Members and their roles are the shop's settings too: only its owners change them.
    def has_add_permission(self, request, obj=None):
        return super().has_add_permission(request, obj) and _is_owner(request, obj)

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and _is_owner(request, obj)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and _is_owner(request, obj)


class ShopAdminForm(forms.ModelForm):
    class Meta:
        model = Shop
        fields = "__all__"  # noqa: DJ007 (ShopAdmin narrows them: exclude, readonly, add_fields)

    def clean(self):
        cleaned = super().clean()
        if "timezone" in cleaned:  # the rule `shop_create` and `shop_update` apply
            shop_timezone_validate(cleaned["timezone"])
        return cleaned


@admin.register(Shop)
class ShopAdmin(admin.ModelAdmin):
    """Adding a shop is `shop_create` (owner, API token); changing one is `shop_update`."""

    form = ShopAdminForm
    # What `shop_create` takes; the rest is set by changing the created shop.
    add_fields = ["domain", "name", "timezone", "currency"]
    list_display = ["domain", "name", "timezone", "currency", "is_active", "created_at"]
    search_fields = ["domain", "name"]
    readonly_fields = ["write_key", "snippet_tag", "created_at"]
    inlines = [ShopMembershipInline]
    actions = ["rotate_write_key", "rotate_identity_secret"]
    SECRETS = ["webhook_secret", "identity_secret"]

    # A staff user sees the shops they belong to; analysts read them, owners change them.
    def get_queryset(self, request):
        shops = super().get_queryset(request)
        return shops.filter(pk__in=selectors.shops_for_user(user=request.user).values("pk"))

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and _is_owner(request, obj)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and _is_owner(request, obj)

    def get_fields(self, request, obj=None):
        if obj is None:
            return self.add_fields
        return super().get_fields(request, obj)

    def get_inlines(self, request, obj):
        # The creator becomes the new shop's owner (`shop_create`); members come after.
        return [] if obj is None else super().get_inlines(request, obj)

    def save_model(self, request, obj, form, change):
        if change:
            shop_update(
                shop=obj, data={name: form.cleaned_data[name] for name in form.changed_data}
            )
            return
        created = shop_create(
            domain=obj.domain,
            owner_username=request.user.get_username(),
            name=obj.name,
            timezone=obj.timezone,
            currency=obj.currency,
        )
        # The admin goes on with the form's instance (change log, redirect): make it the shop.
        obj.pk = created.shop.pk
        obj.refresh_from_db()
        obj._state.adding = False

    def get_exclude(self, request, obj=None):
        # Secrets only for owners; the identity secret is generated, never typed in.
        if obj is not None and _is_owner(request, obj):
            return ["identity_secret"]
        return self.SECRETS

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None and _is_owner(request, obj):
            fields.append("identity_secret")
        return fields

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # snippet_tag needs the request's origin; a ContextVar keeps that per request and thread.
        token = _admin_request.set(request)
        try:
            response = super().changeform_view(request, object_id, form_url, extra_context)
            # A TemplateResponse renders lazily; render it while the request is still set.
            if hasattr(response, "render"):
                response.render()
            return response
        finally:
            _admin_request.reset(token)

    @admin.display(description="Tracking snippet")
    def snippet_tag(self, shop: Shop) -> str:
        if not shop.pk:
            return "Save the shop first."
        request = _admin_request.get()
        base_url = request.build_absolute_uri("/") if request else "/"
        return format_html("<code>{}</code>", snippet_tag(shop=shop, base_url=base_url))

    def _owned(self, request: HttpRequest, queryset):
        owned = [shop for shop in queryset if _is_owner(request, shop)]
        if len(owned) != len(queryset):
            raise PermissionDenied("Only the shop's owners can rotate its keys.")
        return owned

    @admin.action(description="Rotate the write key (the old key stops working)")
    def rotate_write_key(self, request, queryset):
        for shop in self._owned(request, queryset):
            shop_rotate_write_key(shop=shop)
        self.message_user(request, f"Rotated {queryset.count()} write key(s).", messages.SUCCESS)

    @admin.action(
        description="Rotate the identity secret (identity tokens signed before stop working)"
    )
    def rotate_identity_secret(self, request, queryset):
        for shop in self._owned(request, queryset):
            shop_rotate_identity_secret(shop=shop)
        self.message_user(
            request, f"Rotated {queryset.count()} identity secret(s).", messages.SUCCESS
        )


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["occurred_at", "shop", "type", "anonymous_id", "user_id", "url", "session"]
    list_filter = ["shop", "type", ("occurred_at", admin.DateFieldListFilter)]
    search_fields = ["event_id", "anonymous_id", "user_id", "order_id", "product_id"]
    raw_id_fields = ["session", "person"]
    show_full_result_count = False  # COUNT(*) over the raw log is too slow to run on every page
    date_hierarchy = "occurred_at"


@admin.register(RejectedEvent)
class RejectedEventAdmin(admin.ModelAdmin):
    """View-only: a rejected payload is evidence; the replay action re-ingests it as it is."""

    list_display = ["received_at", "shop", "code", "detail", "format", "replayed_at"]
    list_filter = ["shop", "code", "format"]
    actions = ["replay"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.action(description="Replay through ingestion")
    def replay(self, request, queryset):
        now = timezone.now()
        accepted = rejected = 0
        for row in queryset.filter(replayed_at__isnull=True):
            result = rejected_event_replay(rejected=row, now=now)
            accepted += result.accepted + result.duplicates
            rejected += len(result.rejected)
        self.message_user(
            request, f"Replayed: {accepted} stored, {rejected} rejected again.", messages.INFO
        )


class PersonIdentifierInline(admin.TabularInline):
    model = PersonIdentifier
    extra = 0
    fields = ["kind", "value", "created_at"]
    readonly_fields = ["kind", "value", "created_at"]
    can_delete = False


@admin.register(Person)
class PersonAdmin(ReadOnlyAdmin):
    list_display = ["id", "shop", "user_id", "first_seen_at", "last_seen_at"]
    list_filter = ["shop"]
    search_fields = ["user_id", "=identifiers__value"]
    readonly_fields = [
        "shop",
        "user_id",
        "first_seen_at",
        "last_seen_at",
        "traits",
        "created_at",
        "sessions_link",
        "events_link",
    ]
    inlines = [PersonIdentifierInline]

    def has_delete_permission(self, request, obj=None):
        return request.user.has_perm("events.delete_person")

    # Delete means erase: the events, orders and derived rows go too, and the days they touched
    # are recomputed (events/services/erasure.py); a plain row delete would leave them behind.
    def delete_model(self, request, obj: Person) -> None:
        erasure.person_erase(person=obj, now=timezone.now())

    def get_deleted_objects(self, objs, request):
        deleted, model_count, _, protected = super().get_deleted_objects(objs, request)
        # The erasure removes the sessions and identifiers itself, which their own admins do
        # not allow; deleting people is the permission that counts.
        return deleted, model_count, set(), protected

    def delete_queryset(self, request, queryset) -> None:
        for person in queryset:
            erasure.person_erase(person=person, now=timezone.now())

    # Links, not inlines: a bot can own thousands of sessions and the raw log millions of rows.
    @admin.display(description="Sessions")
    def sessions_link(self, person: Person) -> str:
        url = reverse("admin:events_session_changelist") + f"?person__id__exact={person.pk}"
        return format_html('<a href="{}">sessions of this person</a>', url)

    @admin.display(description="Events")
    def events_link(self, person: Person) -> str:
        url = reverse("admin:events_event_changelist") + f"?person__id__exact={person.pk}"
        return format_html('<a href="{}">events of this person</a>', url)


@admin.register(PersonIdentifier)
class PersonIdentifierAdmin(ReadOnlyAdmin):
    list_display = ["shop", "kind", "value", "person", "created_at"]
    list_filter = ["shop", "kind"]
    # Exact match: the unique (shop, kind, value) index answers it, a LIKE scan would not.
    search_fields = ["=value", "=person__user_id"]
    raw_id_fields = ["person"]
    list_select_related = ["person"]


@admin.register(Session)
class SessionAdmin(ReadOnlyAdmin):
    list_display = [
        "started_at",
        "shop",
        "person",
        "event_count",
        "entry_url",
        "utm_source",
        "device",
        "is_converted",
        "revenue",
    ]
    list_filter = ["shop", "is_converted", "is_bounce", "device"]
    raw_id_fields = ["person"]
    date_hierarchy = "started_at"


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 0


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = ["order_id", "shop", "placed_at", "total", "refunded_amount", "is_cancelled"]
    list_filter = ["shop", "source", "is_cancelled"]
    search_fields = ["order_id", "user_id"]
    raw_id_fields = ["person"]
    inlines = [OrderLineInline]


@admin.register(Product)
class ProductAdmin(ReadOnlyAdmin):
    list_display = ["product_id", "shop", "title", "category", "price", "is_available"]
    list_filter = ["shop", "is_available"]
    search_fields = ["product_id", "title"]


@admin.register(Checkout)
class CheckoutAdmin(ReadOnlyAdmin):
    list_display = ["token", "shop", "kind", "total", "created_at", "completed_at"]
    list_filter = ["shop", "kind"]
    raw_id_fields = ["person"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "shop", "topic", "webhook_id", "processed_at", "error"]
    list_filter = ["shop", "topic"]
    search_fields = ["webhook_id", "customer_id"]


@admin.register(PipelineWatermark)
class PipelineWatermarkAdmin(ReadOnlyAdmin):
    list_display = ["job", "shop", "position", "updated_at", "pending_events", "lag"]
    list_filter = ["job"]
    list_select_related = ["shop"]

    def _backlog(self, watermark: PipelineWatermark) -> selectors.ShopBacklog | None:
        if watermark.job != PipelineJob.EVENTS:
            return None
        return selectors.shop_backlog(shop_id=watermark.shop_id, position=watermark.position)

    @admin.display(description="Pending events")
    def pending_events(self, watermark: PipelineWatermark) -> str:
        backlog = self._backlog(watermark)
        if backlog is None:
            return "–"
        return f"≥ {backlog.events}" if backlog.is_capped else str(backlog.events)

    @admin.display(description="Lag (oldest pending)")
    def lag(self, watermark: PipelineWatermark) -> str:
        backlog = self._backlog(watermark)
        if backlog is None or backlog.oldest_unprocessed_at is None:
            return "–"
        return f"{(timezone.now() - backlog.oldest_unprocessed_at).total_seconds():.0f} s"


@admin.register(ErasureRequest)
class ErasureRequestAdmin(ReadOnlyAdmin):
    list_display = ["requested_at", "shop", "kind", "completed_at"]
    list_filter = ["shop", "kind"]
    readonly_fields = ["shop", "kind", "requested_at", "completed_at", "counts", "days"]


@admin.register(PrivacyRequest)
class PrivacyRequestAdmin(ReadOnlyAdmin):
    list_display = ["requested_at", "shop", "kind", "shopify_customer_id", "completed_at"]
    list_filter = ["shop", "kind"]
