from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.views import APIView

from clickserver.api import Pagination
from clickserver.schema import MEMBER_ERRORS, PAGE, PAGE_SIZE, SHOP, error_responses, paginated
from events.selectors import shop_get_for_user
from notifications import selectors


class ConversionScoreOutputSerializer(serializers.Serializer):
    session = serializers.IntegerField(source="session_id")
    person = serializers.IntegerField(source="person_id", allow_null=True)
    score = serializers.FloatField()
    model_version = serializers.IntegerField(source="model_version.version", allow_null=True)
    scored_at = serializers.DateTimeField()


class ConversionScoreFilterSerializer(serializers.Serializer):
    session = serializers.IntegerField(required=False, min_value=1)


SCORE_PAGE = paginated("ConversionScorePage", ConversionScoreOutputSerializer(many=True))


class ConversionScoreListApi(APIView):
    @extend_schema(
        parameters=[
            SHOP,
            OpenApiParameter(
                "session",
                {"type": "integer", "minimum": 1},
                description="Only this session's scores.",
            ),
            PAGE,
            PAGE_SIZE,
        ],
        responses={200: SCORE_PAGE, **error_responses(*MEMBER_ERRORS)},
    )
    def get(self, request):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        filters = ConversionScoreFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        scores = selectors.conversion_scores_list(
            shop=shop, session_id=filters.validated_data.get("session")
        )
        paginator = Pagination()
        page = paginator.paginate_queryset(scores, request, view=self)
        return paginator.get_paginated_response(
            ConversionScoreOutputSerializer(page, many=True).data
        )


class ConversionScoreLiveApi(APIView):
    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "LiveSession"  # the schema's component name: every API has an "Output"

        session = serializers.IntegerField(source="id")
        person = serializers.IntegerField(source="person_id", allow_null=True)
        status = serializers.CharField(source="live_status")
        score = serializers.FloatField(source="live_score", allow_null=True)
        model_version = serializers.IntegerField(
            source="conversion_score.model_version.version", allow_null=True, default=None
        )
        scored_at = serializers.DateTimeField(
            source="conversion_score.scored_at", allow_null=True, default=None
        )

    @extend_schema(
        parameters=[SHOP, PAGE, PAGE_SIZE],
        responses={
            200: paginated("LiveSessionPage", OutputSerializer(many=True)),
            **error_responses(*MEMBER_ERRORS),
        },
    )
    def get(self, request):
        shop = shop_get_for_user(user=request.user, domain=request.query_params.get("shop"))
        sessions = selectors.conversion_scores_live(shop=shop, now=timezone.now())
        paginator = Pagination()
        page = paginator.paginate_queryset(sessions, request, view=self)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)
