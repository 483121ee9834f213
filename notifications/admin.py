"""The model registry and the live scores in the admin: read-only, since training and scoring
write them; a version is activated through `model_version_activate`. Experiments: through their
services (notifications/experiments/services.py)."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from clickserver.admin import ReadOnlyAdmin
from clickserver.errors import ApplicationError
from events.selectors import shops_for_user
from notifications import services
from notifications.campaigns import results as campaign_results
from notifications.campaigns import services as campaign_services
from notifications.experiments import rules
from notifications.experiments import services as experiment_services
from notifications.experiments.rules import VariantIn
from notifications.models import (
    Campaign,
    CampaignDecision,
    CampaignDelivery,
    ConversionScore,
    EmailUnsubscribe,
    Experiment,
    ExperimentStatus,
    ModelHealth,
    ModelMonitorSettings,
    ModelVersion,
    Variant,
)


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


@admin.register(ModelHealth)
class ModelHealthAdmin(ReadOnlyAdmin):
    list_display = (
        "day", "shop", "model_version", "status", "sample_count", "roc_auc", "ece", "psi",
    )  # fmt: skip
    list_filter = ("status", "shop")
    date_hierarchy = "day"


@admin.register(ModelMonitorSettings)
class ModelMonitorSettingsAdmin(admin.ModelAdmin):
    """The daily model check's thresholds per shop: plain fields whose ranges the model's
    validators hold (the form refuses anything outside them and saves nothing)."""

    list_display = ("shop", "window_days", "auc_floor", "auc_margin", "ece_max", "psi_max")


# --- experiments ---------------------------------------------------------------------------------
# Created, edited, started and stopped through notifications/experiments/services.py, as the API
# does: the form shows the service's errors field by field and nothing is saved until they pass.

# JSON fields a blank admin textarea leaves as None: the service's empty value instead.
JSON_BLANKS = {"targeting": dict, "secondary_metrics": list, "guardrail_metrics": list}


class ExperimentForm(forms.ModelForm):
    class Meta:
        model = Experiment
        fields = ["shop", *experiment_services.DEFINITION_FIELDS]

    def service_data(self) -> dict[str, Any]:
        """What the service is given: every field on add, the changed ones on change."""
        names = [n for n in self.fields if n != "shop"]
        if self.instance.pk:
            names = [n for n in names if n in self.changed_data]
        data = {name: self.cleaned_data.get(name) for name in names}
        for name, empty in JSON_BLANKS.items():
            if name in data and data[name] is None:
                data[name] = empty()
        return data

    def clean(self):
        cleaned = super().clean()
        shop = self.cleaned_data.get("shop") or getattr(self.instance, "shop", None)
        if shop is None or self.errors:
            return cleaned
        try:
            experiment_services.experiment_validate(
                shop=shop,
                data=self.service_data(),
                experiment=self.instance if self.instance.pk else None,
            )
        except ApplicationError as error:
            _errors_add(self, error)
        return cleaned


def _errors_add(form: forms.BaseForm, error: ApplicationError) -> None:
    if not error.fields:
        form.add_error(None, error.detail)
    for field, problems in (error.fields or {}).items():
        form.add_error(field if field in form.fields else None, problems)


def _variants_from(formset: forms.BaseFormSet) -> list[VariantIn]:
    return [
        VariantIn(
            key=form.cleaned_data["key"],
            weight=form.cleaned_data["weight"],
            is_control=form.cleaned_data.get("is_control", False),
            name=form.cleaned_data.get("name", ""),
        )
        for form in formset.forms
        if form.cleaned_data and not form.cleaned_data.get("DELETE")
    ]


def _variants_check(formset: forms.BaseFormSet) -> None:
    """The service's rule for a set of variants, shown above the rows."""
    if any(formset.errors):
        return
    _, errors = rules.variants_validate(_variants_from(formset))
    if errors:
        raise forms.ValidationError(errors["variants"])


class VariantFormSet(forms.BaseInlineFormSet):
    def clean(self):
        super().clean()
        _variants_check(self)


class VariantRowForm(forms.Form):
    key = forms.SlugField(max_length=64)
    name = forms.CharField(max_length=255, required=False)
    weight = forms.FloatField()
    is_control = forms.BooleanField(required=False)


class VariantRowFormSet(forms.BaseFormSet):
    def clean(self):
        _variants_check(self)


VariantRowsFormSet = forms.formset_factory(
    VariantRowForm, formset=VariantRowFormSet, extra=1, can_delete=True
)


class VariantInline(admin.TabularInline):
    """Editable while the experiment is a draft; a running experiment's new variants or weights
    start a new phase, on their own page (`ExperimentAdmin.variants_view`)."""

    model = Variant
    formset = VariantFormSet
    fields = ("key", "name", "weight", "is_control")
    extra = 0

    def get_extra(self, request, obj=None, **kwargs):
        return 2 if obj is None else 0

    def _is_draft(self, obj) -> bool:
        return obj is None or obj.status == ExperimentStatus.DRAFT

    def has_add_permission(self, request, obj=None):
        return self._is_draft(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request, obj=None):
        return self._is_draft(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return self._is_draft(obj) and super().has_delete_permission(request, obj)


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    form = ExperimentForm
    inlines = [VariantInline]
    list_display = ("key", "name", "shop", "status", "phase", "unit", "started_at", "stopped_at")
    list_filter = ("status", "unit", "shop")
    search_fields = ("key", "name", "shop__domain")
    readonly_fields = ("status", "phase", "started_at", "stopped_at", "created_at", "updated_at")
    actions = ["start", "stop"]

    def get_urls(self):
        variants = path(
            "<path:object_id>/variants/",
            self.admin_site.admin_view(self.variants_view),
            name="notifications_experiment_variants",
        )
        return [variants, *super().get_urls()]

    @admin.display(description="Variants")
    def variants_change_link(self, obj: Experiment) -> str:
        url = reverse("admin:notifications_experiment_variants", args=[obj.pk])
        return format_html(
            '<a href="{}">Change the variants (starts phase {})</a>', url, obj.phase + 1
        )

    def variants_view(self, request, object_id):
        """A running experiment's new variants or weights: `experiment_variants_change`, which
        ends the phase and starts the next."""
        experiment = self.get_object(request, object_id)
        if experiment is None:
            raise Http404
        if experiment.status != ExperimentStatus.RUNNING or not self.has_change_permission(
            request, experiment
        ):
            raise PermissionDenied
        formset = VariantRowsFormSet(
            request.POST or None,
            initial=[
                {"key": v.key, "name": v.name, "weight": v.weight, "is_control": v.is_control}
                for v in experiment.variants.all()
            ],
        )
        if request.method == "POST" and formset.is_valid():
            try:
                experiment = experiment_services.experiment_variants_change(
                    experiment=experiment, variants=_variants_from(formset), now=timezone.now()
                )
            except ApplicationError as error:
                self.message_user(request, error.detail, messages.ERROR)
            else:
                self.message_user(request, f"Phase {experiment.phase} started.", messages.SUCCESS)
                return redirect(
                    reverse("admin:notifications_experiment_change", args=[experiment.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": experiment,
            "formset": formset,
            "title": f"New variants for {experiment.key}",
        }
        return TemplateResponse(request, "admin/notifications/experiment/variants.html", context)

    def get_queryset(self, request):
        experiments = super().get_queryset(request).select_related("shop")
        return experiments.filter(shop__in=shops_for_user(user=request.user))

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "shop":
            kwargs["queryset"] = shops_for_user(user=request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return self.readonly_fields
        # An experiment stays in its shop; while it runs its design is fixed (the service's rule).
        fixed: tuple[str, ...] = ("shop",)
        if obj.status != ExperimentStatus.DRAFT:
            fixed += tuple(sorted(experiment_services.DESIGN_FIELDS))
        if obj.status == ExperimentStatus.RUNNING:
            fixed += ("variants_change_link",)
        return (*self.readonly_fields, *fixed)

    def has_change_permission(self, request, obj=None):
        # A stopped experiment is read-only: it cannot be edited, started or stopped again.
        if obj is not None and obj.status == ExperimentStatus.STOPPED:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        # Exposures and results refer to the experiment: a draft is discarded by stopping it.
        return False

    def save_model(self, request, obj, form, change):
        # Created in `save_related`, where its variants are known: the service takes both at once.
        if change:
            experiment_services.experiment_update(
                experiment=obj, data=form.service_data(), now=timezone.now()
            )

    def save_related(self, request, form, formsets, change):
        variants = _variants_from(formsets[0]) if formsets else []
        obj = form.instance
        if not change:
            created = experiment_services.experiment_create(
                shop=form.cleaned_data["shop"], variants=variants, **form.service_data()
            )
            # The admin goes on with the form's instance (its log entry, its redirect).
            obj.pk = created.pk
            obj.refresh_from_db()
            return
        if formsets and formsets[0].has_changed():
            experiment_services.experiment_variants_change(
                experiment=obj, variants=variants, now=timezone.now()
            )

    def construct_change_message(self, request, form, formsets, add=False):
        # The variants are written by the service, not by the formsets' save(): the log entry
        # describes the experiment's fields only.
        return super().construct_change_message(request, form, [], add)

    def _each(self, request, queryset, service, done: str) -> None:
        count = 0
        for experiment in queryset:
            try:
                service(experiment=experiment, now=timezone.now())
            except ApplicationError as error:
                self.message_user(request, f"{experiment.key}: {error.detail}", messages.ERROR)
            else:
                count += 1
        if count:
            self.message_user(request, f"{done} {count} experiment(s).", messages.SUCCESS)

    @admin.action(description="Start the selected drafts", permissions=["change"])
    def start(self, request, queryset):
        self._each(request, queryset, experiment_services.experiment_start, "Started")

    @admin.action(description="Stop the selected experiments", permissions=["change"])
    def stop(self, request, queryset):
        self._each(request, queryset, experiment_services.experiment_stop, "Stopped")


@admin.register(Campaign)
class CampaignAdmin(ReadOnlyAdmin):
    """Campaigns are created and edited through the API (their service validates the whole
    definition and creates the experiment); here they are read and started, paused or stopped."""

    list_display = ("key", "name", "shop", "status", "channel", "holdout_share", "started_at")
    # The webhook secret is the API's to show (to owners); the admin lists everything else.
    exclude = ("webhook_secret",)
    readonly_fields = ("results",)

    @admin.display(description="Results (the experiment's stored result, current phase)")
    def results(self, campaign: Campaign) -> str:
        """Per arm: decisions, toasts, units, conversions and incremental revenue, from the same
        read as the API and the dashboard's Campaigns page (linked)."""
        document = campaign_results.campaign_results(campaign=campaign)
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    row["arm"],
                    row["decisions"],
                    row["shown"],
                    row["clicked"],
                    row["units"] if row["units"] is not None else "–",
                    row["conversions"] if row["conversions"] is not None else "–",
                    _interval(
                        row["incremental_revenue"],
                        row["incremental_revenue_ci_low"],
                        row["incremental_revenue_ci_high"],
                    ),
                )
                for row in campaign_results.results_rows(document)
            ),
        )
        link = (
            reverse("dashboard-campaigns") + f"?shop={campaign.shop.domain}&campaign={campaign.pk}"
        )
        return format_html(
            "<p>{}</p><table><tr><th>Arm</th><th>Decisions</th><th>Shown</th><th>Clicked</th>"
            "<th>Units</th><th>Conversions</th><th>Incremental revenue (95 % interval)</th></tr>"
            '{}</table><p><a href="{}">Open on the dashboard</a></p>',
            document.get("verdict") or "No results computed yet.",
            rows,
            link,
        )

    list_filter = ("status", "channel", "shop")
    search_fields = ("key", "name")
    actions = ["start", "pause", "stop"]

    def _each(self, request, queryset, service, done: str) -> None:
        count = 0
        for campaign in queryset:
            try:
                service(campaign=campaign, now=timezone.now())
            except ApplicationError as error:
                self.message_user(request, f"{campaign.key}: {error.detail}", messages.ERROR)
            else:
                count += 1
        if count:
            self.message_user(request, f"{done} {count} campaign(s).", messages.SUCCESS)

    def has_transition_permission(self, request) -> bool:
        return request.user.has_perm("notifications.change_campaign")

    @admin.action(description="Start (or resume) the selected", permissions=["transition"])
    def start(self, request, queryset):
        self._each(request, queryset, campaign_services.campaign_start, "Started")

    @admin.action(description="Pause the selected", permissions=["transition"])
    def pause(self, request, queryset):
        self._each(request, queryset, campaign_services.campaign_pause, "Paused")

    @admin.action(description="Stop the selected (global stop)", permissions=["transition"])
    def stop(self, request, queryset):
        self._each(request, queryset, campaign_services.campaign_stop, "Stopped")


@admin.register(CampaignDecision)
class CampaignDecisionAdmin(ReadOnlyAdmin):
    list_display = ("campaign", "session", "arm", "is_holdout", "score", "reason", "created_at")
    list_filter = ("is_holdout", "campaign")
    list_select_related = ("campaign",)


@admin.register(CampaignDelivery)
class CampaignDeliveryAdmin(ReadOnlyAdmin):
    """The email and webhook delivery log: written only by the delivery service."""

    list_display = (
        "id",
        "campaign",
        "decision",
        "channel",
        "status",
        "attempts",
        "response_status",
        "last_error",
        "next_attempt_at",
        "sent_at",
        "created_at",
    )
    list_filter = ("status", "channel", "campaign")
    list_select_related = ("campaign",)
    search_fields = ("last_error", "message_id")


@admin.register(EmailUnsubscribe)
class EmailUnsubscribeAdmin(ReadOnlyAdmin):
    list_display = ("shop", "person", "reason", "unsubscribed_at")
    list_filter = ("shop", "reason")


def _interval(estimate: Any, low: Any, high: Any) -> str:
    if estimate is None:
        return "–"
    return f"{estimate:,.2f} ({low:,.2f} to {high:,.2f})"
