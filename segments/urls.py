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
]
