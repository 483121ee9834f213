from django.urls import path

from notifications.api import ConversionScoreListApi, ConversionScoreLiveApi

urlpatterns = [
    path("notifications/scores/", ConversionScoreListApi.as_view(), name="conversion-scores"),
    path(
        "notifications/scores/live/",
        ConversionScoreLiveApi.as_view(),
        name="conversion-scores-live",
    ),
]
