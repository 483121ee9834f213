"""Campaign endpoints: the storefront's pending notification (write key) and the shop members'
CRUD with start / pause / stop and the discount code pool (token).

`GET /notifications/pending/` authenticates like `GET /experiments/decide/`
(events/storefront_auth.py) and answers only for the anonymous id the browser gives: its own.
"""

from collections.abc import Callable

from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from clickserver.api import Pagination
from clickserver.errors import ApplicationError
from clickserver.renderers import CsvRenderer
from clickserver.schema import (
    FORMAT,
    MEMBER_ERRORS,
    PAGE,
    PAGE_SIZE,
    SHOP,
    error_responses,
    paginated,
)
from clickserver.throttles import StorefrontThrottle
from events.selectors import shop_get_for_owner, shop_get_for_user, shops_owned_by
from events.storefront_auth import shop_authenticate
from notifications.campaigns import deliveries, results, selectors, services
from notifications.campaigns.rules import ContentIn
from notifications.experiments.results import experiment_result_ensure
from notifications.models import (
    Campaign,
    CampaignChannel,
    CampaignDelivery,
    DeliveryStatus,
    ExperimentStatus,
)

ANONYMOUS_ID_MAX = 255
# Creating, editing, starting, pausing and stopping campaigns and uploading codes reach shoppers:
# the shop's owners only (an analyst gets 403, like in the admin).
OWNER_ACTION = "change campaigns"
OWNER_ERRORS = (*MEMBER_ERRORS, 403)


def _shop_for_owner(request):
    return shop_get_for_owner(
        user=request.user, domain=request.query_params.get("shop"), action=OWNER_ACTION
    )


class NotificationPendingApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [StorefrontThrottle]

    @extend_schema(
        parameters=[
            OpenApiParameter("X-Write-Key", str, OpenApiParameter.HEADER, description="Write key."),
            OpenApiParameter("anonymous_id", str, required=True, description="The browser's id."),
            OpenApiParameter(
                "consent", str, description="1 when the shopper gave marketing consent."
            ),
        ],
        responses={200: OpenApiTypes.OBJECT, **error_responses(400, 401, 429, 503)},
        description="The notification to show now (plain text, the CTA URL with the discount "
        "code applied) or null, and the experiment exposure to record (the holdout's too).",
    )
    def get(self, request):
        shop = shop_authenticate(request=request)
        anonymous_id = request.query_params.get("anonymous_id", "")
        if not 0 < len(anonymous_id) <= ANONYMOUS_ID_MAX:
            raise ApplicationError(
                "Give the browser's anonymous_id.", fields={"anonymous_id": ["required"]}
            )
        answer = selectors.notification_pending(
            shop=shop,
            anonymous_id=anonymous_id,
            has_consent=request.query_params.get("consent") == "1",
            now=timezone.now(),
        )
        return Response(answer)


class ContentSerializer(serializers.Serializer):
    key = serializers.CharField(max_length=64)
    title = serializers.CharField(max_length=255, allow_blank=True)
    body = serializers.CharField(max_length=2000, allow_blank=True)
    cta_url = serializers.CharField(max_length=2048)
    cta_text = serializers.CharField(max_length=255, required=False, default="", allow_blank=True)


class CampaignInSerializer(serializers.Serializer):
    """Shapes only: every rule (band, segments, placeholders, caps) is the service's."""

    key = serializers.CharField(max_length=64)
    name = serializers.CharField(max_length=255, allow_blank=True)
    trigger = serializers.JSONField(
        help_text='{"kind": "score_band", "low", "high"} (bounds default to the shop\'s '
        '50th-90th score percentile), {"kind": "cart_abandoned", "minutes"}, '
        '{"kind": "checkout_started"}, {"kind": "product_viewed", "count"}, '
        '{"kind": "segment_entered", "segment"}, {"kind": "first_visit"}.'
    )
    targeting = serializers.JSONField(required=False)
    variants = ContentSerializer(many=True, required=False)
    channel = serializers.CharField(required=False)
    webhook_url = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="Channel webhook only (required there): the receiver's http(s) URL, at a "
        "public address (not localhost, a private, loopback or link-local address, nor a name "
        "resolving to one, unless WEBHOOK_ALLOW_PRIVATE_NETWORKS; docs/campaigns.md).",
    )
    holdout_share = serializers.JSONField(required=False)
    max_per_person_day = serializers.JSONField(required=False)
    max_per_person_week = serializers.JSONField(required=False)
    quiet_start_hour = serializers.JSONField(required=False)
    quiet_end_hour = serializers.JSONField(required=False)
    is_consent_required = serializers.JSONField(required=False)


class CampaignOutSerializer(serializers.ModelSerializer):
    experiment = serializers.SerializerMethodField()
    discount_codes = serializers.SerializerMethodField()
    webhook_secret = serializers.SerializerMethodField(
        help_text="The HMAC-SHA256 key of the webhook's signature; shown to the shop's owners "
        "only (null to others and for other channels)."
    )

    class Meta:
        model = Campaign
        fields = [
            "id",
            "key",
            "name",
            "status",
            "trigger",
            "targeting",
            "variants",
            "channel",
            "webhook_url",
            "webhook_secret",
            "holdout_share",
            "max_per_person_day",
            "max_per_person_week",
            "quiet_start_hour",
            "quiet_end_hour",
            "is_consent_required",
            "experiment",
            "discount_codes",
            "started_at",
            "stopped_at",
            "created_at",
        ]

    def get_experiment(self, campaign: Campaign) -> dict:
        experiment = campaign.experiment
        return {"id": experiment.pk, "key": experiment.key, "status": experiment.status}

    def get_webhook_secret(self, campaign: Campaign) -> str | None:
        if not campaign.webhook_secret or not self.context.get("is_owner"):
            return None
        return campaign.webhook_secret

    def get_discount_codes(self, campaign: Campaign) -> dict:
        # Annotated by the list selector; a campaign fresh from a service is counted here.
        if not hasattr(campaign, "codes_total"):
            codes = campaign.codes.all()
            return {
                "total": codes.count(),
                "free": codes.filter(claimed_unit_id__isnull=True).count(),
            }
        return {"total": campaign.codes_total, "free": campaign.codes_free}


def _out(campaign: Campaign, *, request, shop) -> dict:
    is_owner = shops_owned_by(user=request.user).filter(pk=shop.pk).exists()
    return CampaignOutSerializer(campaign, context={"is_owner": is_owner}).data


def _validated(request, *, partial: bool = False) -> dict:
    data = CampaignInSerializer(data=request.data, partial=partial)
    data.is_valid(raise_exception=True)
    values = dict(data.validated_data)
    if "variants" in values:
        values["variants"] = [ContentIn(**v) for v in values["variants"]]
    return values


# The rules that bind the body's fields together, checked by the service (a 400 naming each field,
# nothing saved); docs/campaigns.md has them in full.
RULES = (
    "A score band within [0, 1] with low < high; known segments and placeholders; caps >= 1; "
    "holdout_share in (0, 1); quiet hours 0-23 given together; at least one content variant."
)


class CampaignListApi(APIView):
    @extend_schema(
        parameters=[SHOP],
        responses={200: CampaignOutSerializer(many=True), **error_responses(*MEMBER_ERRORS)},
    )
    def get(self, request):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        campaigns = selectors.campaigns_list(shop=shop)
        return Response(CampaignOutSerializer(campaigns, many=True).data)

    @extend_schema(
        parameters=[SHOP],
        request=CampaignInSerializer,
        responses={201: CampaignOutSerializer, **error_responses(*OWNER_ERRORS)},
        description=RULES,
    )
    def post(self, request):
        shop = _shop_for_owner(request)
        values = _validated(request)
        values.setdefault("variants", [])
        campaign = services.campaign_create(shop=shop, now=timezone.now(), **values)
        return Response(_out(campaign, request=request, shop=shop), status=201)


class CampaignDetailApi(APIView):
    @extend_schema(
        parameters=[SHOP],
        responses={200: CampaignOutSerializer, **error_responses(*MEMBER_ERRORS)},
    )
    def get(self, request, campaign_id: int):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        campaign = selectors.campaign_get(shop=shop, campaign_id=campaign_id)
        return Response(_out(campaign, request=request, shop=shop))

    @extend_schema(
        parameters=[SHOP],
        request=CampaignInSerializer(partial=True),
        responses={200: CampaignOutSerializer, **error_responses(*OWNER_ERRORS)},
        description="Edit the name, trigger, targeting, channel, caps or consent flag; the key, "
        "the content variants and the holdout are the experiment's design and fixed. " + RULES,
    )
    def patch(self, request, campaign_id: int):
        shop = _shop_for_owner(request)
        campaign = selectors.campaign_get(shop=shop, campaign_id=campaign_id)
        data = _validated(request, partial=True)
        campaign = services.campaign_update(campaign=campaign, data=data, now=timezone.now())
        return Response(_out(campaign, request=request, shop=shop))


class CampaignTransitionApi(APIView):
    """POST moves the campaign through `transition` (a service); the subclasses name which."""

    transition: Callable[..., Campaign]

    @extend_schema(
        parameters=[SHOP],
        request=None,
        responses={200: CampaignOutSerializer, **error_responses(*OWNER_ERRORS)},
    )
    def post(self, request, campaign_id: int):
        shop = _shop_for_owner(request)
        campaign = selectors.campaign_get(shop=shop, campaign_id=campaign_id)
        campaign = type(self).transition(campaign=campaign, now=timezone.now())
        return Response(_out(campaign, request=request, shop=shop))


class CampaignStartApi(CampaignTransitionApi):
    transition = staticmethod(services.campaign_start)


class CampaignPauseApi(CampaignTransitionApi):
    transition = staticmethod(services.campaign_pause)


class CampaignStopApi(CampaignTransitionApi):
    transition = staticmethod(services.campaign_stop)


class CampaignPauseAllApi(APIView):
    @extend_schema(
        parameters=[SHOP],
        request=None,
        responses={200: CampaignOutSerializer(many=True), **error_responses(*OWNER_ERRORS)},
        description="The shop's emergency brake: pause every running campaign at once (nothing "
        "decided or served after it; each is started again on its own). Answers the campaigns "
        "it paused, none when nothing was running.",
    )
    def post(self, request):
        shop = _shop_for_owner(request)
        paused = services.campaigns_pause_all(shop=shop, now=timezone.now())
        return Response(CampaignOutSerializer(paused, many=True, context={"is_owner": True}).data)


class DiscountCodesUploadApi(APIView):
    class InputSerializer(serializers.Serializer):
        codes = serializers.ListField(child=serializers.CharField(max_length=255), max_length=10000)

    @extend_schema(
        parameters=[SHOP],
        request=InputSerializer,
        responses={200: OpenApiTypes.OBJECT, **error_responses(*OWNER_ERRORS)},
        description="Add codes to the pool; each person who gets the notification claims one.",
    )
    def post(self, request, campaign_id: int):
        shop = _shop_for_owner(request)
        campaign = selectors.campaign_get(shop=shop, campaign_id=campaign_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        added = services.discount_codes_upload(
            campaign=campaign, codes=data.validated_data["codes"]
        )
        return Response({"added": added})


class DeliveryOutSerializer(serializers.ModelSerializer):
    person = serializers.IntegerField(source="decision.person_id")
    session = serializers.IntegerField(source="decision.session_id")
    arm = serializers.CharField(source="decision.arm")
    is_holdout = serializers.BooleanField(source="decision.is_holdout")

    class Meta:
        model = CampaignDelivery
        fields = [
            "id",
            "decision",
            "person",
            "session",
            "arm",
            "is_holdout",
            "channel",
            "status",
            "attempts",
            "next_attempt_at",
            "last_error",
            "response_status",
            "response_body",
            "message_id",
            "created_at",
            "sent_at",
        ]


class DeliveryFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=DeliveryStatus.choices, required=False)
    channel = serializers.ChoiceField(
        choices=[CampaignChannel.EMAIL, CampaignChannel.WEBHOOK], required=False
    )


class CampaignDeliveryListApi(APIView):
    @extend_schema(
        parameters=[
            SHOP,
            OpenApiParameter("status", str, enum=DeliveryStatus.values),
            OpenApiParameter("channel", str, enum=[CampaignChannel.EMAIL, CampaignChannel.WEBHOOK]),
            PAGE,
            PAGE_SIZE,
        ],
        responses={
            200: paginated("CampaignDeliveryPage", DeliveryOutSerializer(many=True)),
            **error_responses(*MEMBER_ERRORS),
        },
        description="The campaign's email and webhook deliveries, newest first: each attempt's "
        "outcome, the receiver's answer, the holdout's skipped rows.",
    )
    def get(self, request, campaign_id: int):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        campaign = selectors.campaign_get(shop=shop, campaign_id=campaign_id)
        filters = DeliveryFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        rows = selectors.deliveries_list(campaign=campaign, **filters.validated_data)
        paginator = Pagination()
        page = paginator.paginate_queryset(rows, request, view=self)
        return paginator.get_paginated_response(DeliveryOutSerializer(page, many=True).data)


@csrf_exempt  # the link of an email, and mail clients' one-click POST (RFC 8058): no session
@require_http_methods(["GET", "POST"])
def email_unsubscribe_view(request, token: str):
    """No login: the signed token names the shop and the person. Shows a plain page."""
    try:
        unsubscribe = deliveries.email_unsubscribe(token=token, now=timezone.now())
    except ApplicationError:
        return render(request, "notifications/unsubscribed.html", {"ok": False}, status=400)
    shop = unsubscribe.shop
    return render(
        request,
        "notifications/unsubscribed.html",
        {"ok": True, "shop_name": shop.name or shop.domain},
    )


class CampaignResultsApi(APIView):
    renderer_classes = [JSONRenderer, CsvRenderer]
    csv_name = "campaign_results"

    @extend_schema(
        parameters=[SHOP, FORMAT],
        responses={200: OpenApiTypes.OBJECT, **error_responses(*MEMBER_ERRORS)},
        description="Decisions per arm and trigger kind, deliveries per channel, the toast's "
        "shown / clicked / dismissed per arm, and conversions, net revenue and uplift per arm "
        "from the campaign's experiment (its stored results, computed now if there are none), "
        "with the incremental revenue and its interval. `?format=csv` gives the arms table.",
    )
    def get(self, request, campaign_id: int):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        campaign = selectors.campaign_get(shop=shop, campaign_id=campaign_id)
        stored = None
        if campaign.experiment.status != ExperimentStatus.DRAFT:
            stored = experiment_result_ensure(experiment=campaign.experiment, now=timezone.now())
        answer = results.campaign_results(campaign=campaign, result=stored)
        if request.accepted_renderer.format == "csv":
            return Response(results.results_rows(answer))
        return Response(answer)
