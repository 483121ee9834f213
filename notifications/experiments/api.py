"""Experiment endpoints: the storefront's decide (write key) and the shop members' CRUD (token).

`GET /experiments/decide/` authenticates like the recommendation endpoints
(events/storefront_auth.py: the write key from the X-Write-Key header or Basic auth, never the
query string) and, like them, takes a `user_id` only with the X-Identity-Token the shop's server
issued for it: segment and score targeting would otherwise tell anyone whether a customer is in a
segment.
"""

from collections.abc import Callable

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from clickserver.errors import ApplicationError
from clickserver.renderers import CsvRenderer
from clickserver.schema import FORMAT, MEMBER_ERRORS, SHOP, choice_schema, error_responses
from clickserver.throttles import StorefrontThrottle
from events.models import Shop
from events.selectors import shop_get_for_user
from events.storefront_auth import shop_authenticate, user_id_verify
from notifications.experiments import results, selectors, services
from notifications.experiments.analysis import arms_rows
from notifications.experiments.rules import DEVICES, VISITORS, UnitTraits, VariantIn
from notifications.models import Experiment

DECIDE_PARAMETERS = [
    OpenApiParameter("X-Write-Key", str, OpenApiParameter.HEADER, description="The write key."),
    OpenApiParameter(
        "anonymous_id",
        str,
        description="The browser's anonymous id. Give this, `user_id` or `session_id`.",
    ),
    OpenApiParameter(
        "user_id", str, description="The logged-in customer's id (needs X-Identity-Token)."
    ),
    OpenApiParameter(
        "X-Identity-Token",
        str,
        OpenApiParameter.HEADER,
        description="The token the shop's server issued for `user_id`; without it a `user_id` "
        "is a 403.",
    ),
    OpenApiParameter(
        "session_id", str, description="The storefront's session key (session tests)."
    ),
    OpenApiParameter("device", choice_schema(*sorted(DEVICES)), description="Device targeting."),
    OpenApiParameter("source", str, description="The visit's utm_source, for source targeting."),
    OpenApiParameter("visitor", choice_schema(*sorted(VISITORS)), description="New or returning."),
]


class ExperimentDecideApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [StorefrontThrottle]

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ExperimentDecision"

        experiments = serializers.DictField(
            child=serializers.CharField(allow_null=True),
            help_text="Each running experiment's variant key; null when held out or not targeted.",
        )

    @extend_schema(
        parameters=DECIDE_PARAMETERS,
        responses={200: OutputSerializer, **error_responses(400, 401, 403, 429, 503)},
    )
    def get(self, request):
        shop = shop_authenticate(request=request)
        params = request.query_params
        traits = UnitTraits(
            device=_choice(params, "device", DEVICES),
            source=params.get("source") or None,
            visitor=_choice(params, "visitor", VISITORS),
        )
        ids = unit_ids_parse(request, shop=shop)
        return Response(
            {"experiments": selectors.experiments_decide(shop=shop, ids=ids, traits=traits)}
        )


def _choice(params, name: str, allowed: frozenset[str]) -> str | None:
    """An optional trait, refused (400) when it is none of the values targeting knows."""
    value = params.get(name) or None
    if value is not None and value not in allowed:
        raise ApplicationError(
            f"{name} must be one of {', '.join(sorted(allowed))}.",
            fields={name: [f"one of {sorted(allowed)}"]},
        )
    return value


def unit_ids_parse(request, *, shop: Shop) -> selectors.UnitIds:
    """The ids the request speaks for: at least one, and a user id only with its token."""
    params = request.query_params
    ids = selectors.UnitIds(
        anonymous_id=params.get("anonymous_id", ""),
        user_id=params.get("user_id", ""),
        session_id=params.get("session_id", ""),
    )
    if not (ids.anonymous_id or ids.user_id or ids.session_id):
        raise ApplicationError(
            "Give anonymous_id, user_id or session_id.", fields={"anonymous_id": ["required"]}
        )
    user_id_verify(request=request, shop=shop, user_id=ids.user_id)
    return ids


class VariantSerializer(serializers.Serializer):
    key = serializers.CharField(max_length=64)
    name = serializers.CharField(max_length=255, required=False, default="", allow_blank=True)
    weight = serializers.FloatField()
    is_control = serializers.BooleanField(default=False)


class ExperimentInSerializer(serializers.Serializer):
    key = serializers.CharField(
        max_length=64,
        help_text="A slug (letters, digits, '-', '_'); no other draft or running experiment of "
        "the shop may use it. It is part of the assignment hash.",
    )
    name = serializers.CharField(max_length=255)
    hypothesis = serializers.CharField(required=False, allow_blank=True)
    unit = serializers.CharField(max_length=8, help_text="person or session.")
    holdout_share = serializers.FloatField(
        required=False, help_text="From 0 up to (not including) 1; default 0."
    )
    targeting = serializers.JSONField(
        required=False,
        help_text='{"segment": id, "score_min": 0-1, "score_max": 0-1, "device": [desktop|mobile|'
        'tablet], "source": [utm_source], "visitor": "new"|"returning"}, each optional.',
    )
    primary_metric = serializers.JSONField(
        help_text='{"kind": conversion|revenue_per_unit|aov|add_to_cart_rate|bounce} or '
        '{"kind": "custom_event_count", "event": name}.'
    )
    secondary_metrics = serializers.JSONField(required=False, help_text="A list of metrics.")
    guardrail_metrics = serializers.JSONField(required=False, help_text="A list of metrics.")
    winsor_percentile = serializers.FloatField(
        required=False, help_text="Revenue cap percentile, 50 to 100; default 99.9."
    )
    is_sequential = serializers.BooleanField(required=False)
    planned_mde = serializers.FloatField(
        required=False, allow_null=True, help_text="Relative, > 0 (0.05 = +5 %)."
    )
    variants = VariantSerializer(
        many=True,
        help_text="2 to 20, distinct slug keys, exactly one is_control; positive weights, "
        "normalised to sum to 1. On a running experiment new variants start a new phase.",
    )


class ExperimentOutSerializer(serializers.ModelSerializer):
    variants = serializers.SerializerMethodField()

    class Meta:
        model = Experiment
        fields = [
            "id",
            *services.DEFINITION_FIELDS,
            "status",
            "phase",
            "started_at",
            "stopped_at",
            "created_at",
            "variants",
        ]

    def get_variants(self, experiment: Experiment) -> list[dict]:
        return [
            {"key": v.key, "name": v.name, "weight": v.weight, "is_control": v.is_control}
            for v in experiment.variants.all()
        ]


def _validated(serializer_class, request, *, partial: bool = False) -> dict:
    """The input with `variants` as VariantIn, as the services take them."""
    data = serializer_class(data=request.data, partial=partial)
    data.is_valid(raise_exception=True)
    values = dict(data.validated_data)
    if "variants" in values:
        values["variants"] = [VariantIn(**v) for v in values["variants"]]
    return values


class ExperimentListApi(APIView):
    @extend_schema(
        parameters=[SHOP],
        responses={200: ExperimentOutSerializer(many=True), **error_responses(*MEMBER_ERRORS)},
    )
    def get(self, request):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        experiments = selectors.experiments_list(shop=shop)
        return Response(ExperimentOutSerializer(experiments, many=True).data)

    @extend_schema(
        parameters=[SHOP],
        request=ExperimentInSerializer,
        responses={201: ExperimentOutSerializer, **error_responses(*MEMBER_ERRORS)},
    )
    def post(self, request):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        experiment = services.experiment_create(
            shop=shop, **_validated(ExperimentInSerializer, request)
        )
        return Response(ExperimentOutSerializer(experiment).data, status=201)


class ExperimentDetailApi(APIView):
    @extend_schema(
        parameters=[SHOP],
        responses={200: ExperimentOutSerializer, **error_responses(*MEMBER_ERRORS)},
    )
    def get(self, request, experiment_id: int):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        experiment = selectors.experiment_get(shop=shop, experiment_id=experiment_id)
        return Response(ExperimentOutSerializer(experiment).data)

    @extend_schema(
        parameters=[SHOP],
        request=ExperimentInSerializer(partial=True),
        responses={200: ExperimentOutSerializer, **error_responses(*MEMBER_ERRORS)},
        description="Edit a draft; while running only the analysis settings, and new `variants` "
        "start a new phase. A stopped experiment is read-only.",
    )
    def patch(self, request, experiment_id: int):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        experiment = selectors.experiment_get(shop=shop, experiment_id=experiment_id)
        data = _validated(ExperimentInSerializer, request, partial=True)
        experiment = services.experiment_update(
            experiment=experiment, data=data, now=timezone.now()
        )
        return Response(ExperimentOutSerializer(experiment).data)


class ExperimentTransitionApi(APIView):
    """POST moves the experiment through `transition` (a service); the subclasses name which."""

    transition: Callable[..., Experiment]

    @extend_schema(
        parameters=[SHOP],
        request=None,
        responses={200: ExperimentOutSerializer, **error_responses(*MEMBER_ERRORS)},
    )
    def post(self, request, experiment_id: int):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        experiment = selectors.experiment_get(shop=shop, experiment_id=experiment_id)
        experiment = type(self).transition(experiment=experiment, now=timezone.now())
        return Response(ExperimentOutSerializer(experiment).data)


class ExperimentStartApi(ExperimentTransitionApi):
    transition = staticmethod(services.experiment_start)


class ExperimentStopApi(ExperimentTransitionApi):
    transition = staticmethod(services.experiment_stop)


class ExperimentResultsApi(APIView):
    renderer_classes = [JSONRenderer, CsvRenderer]
    csv_name = "experiment_results"

    @extend_schema(
        parameters=[
            SHOP,
            FORMAT,
            OpenApiParameter("phase", int, description="A phase number; default the current."),
        ],
        responses={200: OpenApiTypes.OBJECT, **error_responses(*MEMBER_ERRORS)},
        description="The stored results of a phase (computed now if there are none yet): arms, "
        "metrics, uplift with intervals, SRM, warnings, guardrails, timeline and a verdict. "
        "`?format=csv` (or Accept: text/csv) gives the arms table.",
    )
    def get(self, request, experiment_id: int):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        experiment = selectors.experiment_get(shop=shop, experiment_id=experiment_id)
        result = results.experiment_result_ensure(
            experiment=experiment, now=timezone.now(), phase=_phase_parse(request)
        )
        if request.accepted_renderer.format == "csv":
            return Response(arms_rows(result.data))
        return Response({"computed_at": result.computed_at, **result.data})


def _phase_parse(request) -> int | None:
    phase = request.query_params.get("phase")
    if phase is None:
        return None
    if not phase.isdigit():
        raise ApplicationError("phase must be a phase number.", fields={"phase": ["a number"]})
    return int(phase)
