"""Storefront recommendation endpoints, authenticated with the shop's public write key.

The personal ones answer for the browser's own anonymous id, or for a user id only with the
X-Identity-Token the shop's server issued for it (events/storefront_auth.py): the write key is
public, so a bare user id would hand anyone that customer's browsing history.
"""

from dataclasses import asdict

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from clickserver.cache import cached
from clickserver.errors import ApplicationError
from clickserver.schema import error_responses, integer_schema
from clickserver.throttles import StorefrontThrottle
from events.models import Shop
from events.storefront_auth import shop_authenticate, user_id_verify
from recommendations import selectors

MAX_LIMIT = 50
KEY_PARAMETERS = [
    # Never in the query string (events/storefront_auth.py): URLs end up in access logs.
    OpenApiParameter("X-Write-Key", str, OpenApiParameter.HEADER, description="The write key."),
    OpenApiParameter("shop", str, description="Must be the write key's shop if given."),
    OpenApiParameter("limit", integer_schema(low=1, high=MAX_LIMIT, default=10)),
]
PERSON_PARAMETERS = [
    OpenApiParameter(
        "anonymous_id", str, description="Give this or `user_id` (a blank one counts as not given)."
    ),
    OpenApiParameter(
        "user_id", str, description="Give this or `anonymous_id` (a blank one counts as not given)."
    ),
    OpenApiParameter(
        "X-Identity-Token",
        str,
        OpenApiParameter.HEADER,
        description="The token the shop's server issued for `user_id`; without it a `user_id` "
        "is a 403.",
    ),
]


def storefront_schema(*extra: OpenApiParameter, statuses: tuple[int, ...] = ()):
    return extend_schema(
        parameters=[*KEY_PARAMETERS, *extra],
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description='{"products": [...]}'),
            **error_responses(400, 401, *statuses, 429, 503),
        },
    )


class StorefrontApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [StorefrontThrottle]

    def shop(self, request) -> Shop:
        shop = shop_authenticate(request=request)
        domain = request.query_params.get("shop")
        if domain and domain != shop.domain:
            raise ApplicationError(
                "Unknown or missing write key.", code="not_authenticated", status=401
            )
        return shop

    def limit(self, request) -> int:
        raw = request.query_params.get("limit", "10")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise ApplicationError(f"limit must be 1 to {MAX_LIMIT}.", fields={"limit": ["1-50"]})
        return int(raw)

    def person_id(self, request, shop: Shop) -> int | None:
        anonymous_id = request.query_params.get("anonymous_id", "")
        user_id = request.query_params.get("user_id", "")
        if not anonymous_id and not user_id:
            raise ApplicationError(
                "Give anonymous_id or user_id.", fields={"anonymous_id": ["required"]}
            )
        user_id_verify(request=request, shop=shop, user_id=user_id)
        return selectors.person_resolve(shop=shop, anonymous_id=anonymous_id, user_id=user_id)

    def answer(self, products: list[selectors.Recommendation]) -> Response:
        return Response({"products": [asdict(p) for p in products]})


class CrowdFavoritesApi(StorefrontApi):
    @storefront_schema()
    def get(self, request):
        shop, limit = self.shop(request), self.limit(request)
        compute = lambda: selectors.crowd_favorites_get(shop=shop, now=timezone.now(), limit=limit)  # noqa: E731
        key = f"recs:crowd:{shop.pk}:{limit}"
        return self.answer(cached(key, compute, timeout=selectors.CACHE_SECONDS))


class FeaturedCollectionApi(StorefrontApi):
    @storefront_schema(*PERSON_PARAMETERS, statuses=(403,))
    def get(self, request):
        shop, limit = self.shop(request), self.limit(request)
        person_id = self.person_id(request, shop)
        compute = lambda: selectors.featured_collection_get(  # noqa: E731
            shop=shop, person_id=person_id, now=timezone.now(), limit=limit
        )
        key = f"recs:featured:{shop.pk}:{person_id}:{limit}"
        return self.answer(cached(key, compute, timeout=selectors.CACHE_SECONDS))


class PickUpWhereYouLeftOffApi(StorefrontApi):
    @storefront_schema(*PERSON_PARAMETERS, statuses=(403,))
    def get(self, request):
        shop, limit = self.shop(request), self.limit(request)
        person_id = self.person_id(request, shop)
        compute = lambda: selectors.pick_up_get(  # noqa: E731
            shop=shop, person_id=person_id, now=timezone.now(), limit=limit
        )
        key = f"recs:pickup:{shop.pk}:{person_id}:{limit}"
        return self.answer(cached(key, compute, timeout=selectors.CACHE_SECONDS))
