from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from clickserver.schema import MEMBER_ERRORS, SHOP, error_responses, integer_schema
from events.selectors import shop_get_for_user
from notifications.monitor import selectors


class CardSerializer(serializers.Serializer):
    test_roc_auc = serializers.FloatField(allow_null=True)
    test_pr_auc = serializers.FloatField(allow_null=True)
    test_roc_auc_at = serializers.DictField(child=serializers.FloatField(allow_null=True))
    test_prefix_roc_auc = serializers.FloatField(allow_null=True)
    test_brier = serializers.FloatField(allow_null=True)
    test_ece = serializers.FloatField(allow_null=True)
    target_ece = serializers.FloatField(allow_null=True)
    sizes = serializers.DictField(child=serializers.IntegerField())
    class_balance = serializers.DictField(child=serializers.FloatField())
    data_window = serializers.DictField(child=serializers.CharField())
    promotion = serializers.DictField(allow_null=True)


class ModelVersionSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    is_active = serializers.BooleanField()
    trained_at = serializers.DateTimeField()
    card = CardSerializer()


class ThresholdsSerializer(serializers.Serializer):
    window_days = serializers.IntegerField()
    min_samples = serializers.IntegerField()
    min_per_class = serializers.IntegerField()
    auc_floor = serializers.FloatField()
    auc_margin = serializers.FloatField()
    ece_max = serializers.FloatField()
    psi_max = serializers.FloatField()


class HealthRowSerializer(serializers.Serializer):
    day = serializers.DateField()
    model_version = serializers.IntegerField()
    is_active_version = serializers.BooleanField()
    status = serializers.ChoiceField(choices=["healthy", "degraded", "insufficient"])
    window_start = serializers.DateTimeField()
    window_end = serializers.DateTimeField()
    sample_count = serializers.IntegerField()
    session_count = serializers.IntegerField()
    positive_count = serializers.IntegerField()
    positive_rate = serializers.FloatField(allow_null=True)
    mean_score = serializers.FloatField(allow_null=True)
    roc_auc = serializers.FloatField(allow_null=True)
    reference_auc = serializers.FloatField(allow_null=True)
    brier = serializers.FloatField(allow_null=True)
    ece = serializers.FloatField(allow_null=True)
    psi = serializers.FloatField(allow_null=True)
    bins = serializers.ListField(child=serializers.DictField())
    drift = serializers.DictField()
    problems = serializers.ListField(child=serializers.DictField())
    checked_at = serializers.DateTimeField()


class ModelHealthApi(APIView):
    class FilterSerializer(serializers.Serializer):
        days = serializers.IntegerField(
            required=False, default=30, min_value=1, max_value=selectors.HISTORY_DAYS_MAX
        )

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ModelHealth"

        active_model = ModelVersionSerializer(allow_null=True)
        versions = ModelVersionSerializer(many=True)
        thresholds = ThresholdsSerializer()
        history = HealthRowSerializer(many=True)

    @extend_schema(
        parameters=[
            SHOP,
            OpenApiParameter(
                "days",
                integer_schema(low=1, high=selectors.HISTORY_DAYS_MAX, default=30),
                description="Days of daily checks to return (the newest last).",
            ),
        ],
        responses={200: OutputSerializer, **error_responses(*MEMBER_ERRORS)},
    )
    def get(self, request):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        page = selectors.model_health_page_get(
            shop=shop, now=timezone.now(), days=filters.validated_data["days"]
        )
        return Response(self.OutputSerializer(page).data)
