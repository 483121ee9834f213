from django.urls import path

from recommendations import api

urlpatterns = [
    path("crowd_favorites/", api.CrowdFavoritesApi.as_view(), name="crowd-favorites"),
    path("featured_collection/", api.FeaturedCollectionApi.as_view(), name="featured-collection"),
    path(
        "pick_up_where_you_left_off/",
        api.PickUpWhereYouLeftOffApi.as_view(),
        name="pick-up-where-you-left-off",
    ),
]
