from django.urls import path

from segments import api

urlpatterns = [
    path("", api.SegmentListApi.as_view(), name="segments"),
    path("<int:segment_id>/members/", api.SegmentMembersApi.as_view(), name="segment-members"),
    path(
        "identified-users-list", api.IdentifiedUserListApi.as_view(), name="identified-users-list"
    ),
    path(
        "identified-users-sessions",
        api.IdentifiedUserSessionsApi.as_view(),
        name="identified-users-sessions",
    ),
    path("customers/", api.CustomerListApi.as_view(), name="customers"),
    path("customers/model/", api.CustomerModelApi.as_view(), name="customer-model"),
    path("customers/age-bands/", api.CustomerAgeBandsApi.as_view(), name="customer-age-bands"),
    path("customers/<int:person_id>/", api.CustomerDetailApi.as_view(), name="customer"),
    path(
        "customers/<int:person_id>/sessions/<int:session_id>/events/",
        api.CustomerSessionEventsApi.as_view(),
        name="customer-session-events",
    ),
    path("forecast/", api.RevenueForecastApi.as_view(), name="revenue-forecast"),
]
