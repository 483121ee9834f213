from django.urls import path

from notifications.api import ConversionScoreListApi, ConversionScoreLiveApi
from notifications.campaigns.api import (
    CampaignDeliveryListApi,
    CampaignDetailApi,
    CampaignListApi,
    CampaignPauseAllApi,
    CampaignPauseApi,
    CampaignResultsApi,
    CampaignStartApi,
    CampaignStopApi,
    DiscountCodesUploadApi,
    NotificationPendingApi,
    email_unsubscribe_view,
)
from notifications.campaigns.dashboard import campaigns_dashboard
from notifications.experiments.api import (
    ExperimentDecideApi,
    ExperimentDetailApi,
    ExperimentListApi,
    ExperimentResultsApi,
    ExperimentStartApi,
    ExperimentStopApi,
)
from notifications.experiments.dashboard import experiments_dashboard
from notifications.monitor.api import ModelHealthApi
from notifications.monitor.dashboard import model_dashboard

urlpatterns = [
    path("notifications/scores/", ConversionScoreListApi.as_view(), name="conversion-scores"),
    path(
        "notifications/scores/live/",
        ConversionScoreLiveApi.as_view(),
        name="conversion-scores-live",
    ),
    path("notifications/model/health/", ModelHealthApi.as_view(), name="model-health"),
    # The dashboard page (HTML), outside the JSON API's /notifications/ prefix.
    path("model/", model_dashboard, name="dashboard-model"),
    path("notifications/pending/", NotificationPendingApi.as_view(), name="notifications-pending"),
    path("notifications/campaigns/", CampaignListApi.as_view(), name="campaigns"),
    path(
        "notifications/campaigns/pause-all/",
        CampaignPauseAllApi.as_view(),
        name="campaigns-pause-all",
    ),
    # The dashboard page (HTML), outside the JSON API's prefixes, as the Experiments page.
    path("campaigns-dashboard/", campaigns_dashboard, name="dashboard-campaigns"),
    path(
        "notifications/campaigns/<int:campaign_id>/",
        CampaignDetailApi.as_view(),
        name="campaign",
    ),
    path(
        "notifications/campaigns/<int:campaign_id>/start/",
        CampaignStartApi.as_view(),
        name="campaign-start",
    ),
    path(
        "notifications/campaigns/<int:campaign_id>/pause/",
        CampaignPauseApi.as_view(),
        name="campaign-pause",
    ),
    path(
        "notifications/campaigns/<int:campaign_id>/stop/",
        CampaignStopApi.as_view(),
        name="campaign-stop",
    ),
    path(
        "notifications/campaigns/<int:campaign_id>/results/",
        CampaignResultsApi.as_view(),
        name="campaign-results",
    ),
    path(
        "notifications/campaigns/<int:campaign_id>/codes/",
        DiscountCodesUploadApi.as_view(),
        name="campaign-codes",
    ),
    path(
        "notifications/campaigns/<int:campaign_id>/deliveries/",
        CampaignDeliveryListApi.as_view(),
        name="campaign-deliveries",
    ),
    path(
        "notifications/unsubscribe/<str:token>/",
        email_unsubscribe_view,
        name="campaign-email-unsubscribe",
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
