from django.urls import path

from notifications.api import ConversionScoreListApi, ConversionScoreLiveApi
from notifications.experiments.api import (
    ExperimentDecideApi,
    ExperimentDetailApi,
    ExperimentListApi,
    ExperimentResultsApi,
    ExperimentStartApi,
    ExperimentStopApi,
)
from notifications.experiments.dashboard import experiments_dashboard

urlpatterns = [
    path("notifications/scores/", ConversionScoreListApi.as_view(), name="conversion-scores"),
    path(
        "notifications/scores/live/",
        ConversionScoreLiveApi.as_view(),
        name="conversion-scores-live",
    ),
    path("experiments/", ExperimentListApi.as_view(), name="experiments"),
    # The dashboard page (HTML), outside the JSON API's /experiments/ prefix (clickserver/api.py).
    path("experiments-dashboard/", experiments_dashboard, name="dashboard-experiments"),
    path("experiments/decide/", ExperimentDecideApi.as_view(), name="experiments-decide"),
    path("experiments/<int:experiment_id>/", ExperimentDetailApi.as_view(), name="experiment"),
    path(
        "experiments/<int:experiment_id>/start/",
        ExperimentStartApi.as_view(),
        name="experiment-start",
    ),
    path(
        "experiments/<int:experiment_id>/results/",
        ExperimentResultsApi.as_view(),
        name="experiment-results",
    ),
    path(
        "experiments/<int:experiment_id>/stop/", ExperimentStopApi.as_view(), name="experiment-stop"
    ),
]
