"""Request limits outside ingestion: the read APIs, CSV exports, API tokens, storefront
endpoints and the login forms, counted on the shared limiter of `clickserver/ratelimit.py`.

Every refusal is a 429 with Retry-After. DRF throttles answer it through the envelope
(`clickserver.api.exception_handler`); the login forms are HTML, so their 429 is plain text.
Failure limits (bad tokens, wrong passwords) are checked before the credentials are: once a client
is over, even a correct guess is refused until the window ends.
"""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from rest_framework import authentication, exceptions
from rest_framework.throttling import BaseThrottle

from clickserver.ratelimit import rate_limit_peek, rate_limit_reset, rate_limit_retry_after
from clickserver.write_key import write_key_from_request

# Keys and usernames in a limiter key are clipped: a client must not grow our Redis keys.
MAX_KEY_PART = 150


def client_ip(request: HttpRequest) -> str:
    """The address our own proxy saw: the last X-Forwarded-For hop, which nginx appends
    (deploy/nginx.conf). The first hop is whatever the client claims, useless for a limit."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    return hops[-1] if hops else request.META.get("REMOTE_ADDR", "") or "unknown"


class _Throttle(BaseThrottle):
    """One fixed-window limit per key; `None` from `key()` leaves the request alone."""

    limit_setting: str
    window_setting: str

    def key(self, request: Any, view: Any) -> str | None:
        raise NotImplementedError

    def allow_request(self, request: Any, view: Any) -> bool:
        key = self.key(request, view)
        if key is None:
            return True
        self.retry_after = rate_limit_retry_after(
            key=key,
            limit=getattr(settings, self.limit_setting),
            window_seconds=getattr(settings, self.window_setting),
        )
        return self.retry_after is None

    def wait(self) -> float | None:
        return self.retry_after


class ReadThrottle(_Throttle):
    """Every authenticated API request, per user (a token counts as its user)."""

    limit_setting = "API_RATE_LIMIT_REQUESTS"
    window_setting = "API_RATE_LIMIT_WINDOW_SECONDS"

    def key(self, request: Any, view: Any) -> str | None:
        return f"api:user:{request.user.pk}" if request.user.is_authenticated else None


class ExportThrottle(_Throttle):
    """CSV answers (whole tables, up to 100,000 rows) on top of the read limit, per user."""

    limit_setting = "API_EXPORT_RATE_LIMIT_REQUESTS"
    window_setting = "API_RATE_LIMIT_WINDOW_SECONDS"

    def key(self, request: Any, view: Any) -> str | None:
        renderer = getattr(request, "accepted_renderer", None)
        if not request.user.is_authenticated or getattr(renderer, "format", "") != "csv":
            return None
        return f"api-export:user:{request.user.pk}"


class StorefrontThrottle(_Throttle):
    """Public storefront endpoints, per write key and client address (the key is public).

    The key is read as the shop check reads it (header or Basic auth), never from the query
    string; a request without one still counts, under an empty key, for its address."""

    limit_setting = "STOREFRONT_RATE_LIMIT_REQUESTS"
    window_setting = "STOREFRONT_RATE_LIMIT_WINDOW_SECONDS"

    def key(self, request: Any, view: Any) -> str | None:
        write_key = write_key_from_request(request=request)
        return f"storefront:{write_key[:MAX_KEY_PART]}:{client_ip(request)}"


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token check, refused for a client address over API_TOKEN_FAILURE_LIMIT bad tokens."""

    def authenticate(self, request: Any) -> Any:
        parts = authentication.get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None
        key = f"token-failures:{client_ip(request)}"
        window = settings.API_RATE_LIMIT_WINDOW_SECONDS
        wait = rate_limit_peek(
            key=key, limit=settings.API_TOKEN_FAILURE_LIMIT, window_seconds=window
        )
        if wait is not None:
            raise exceptions.Throttled(wait=wait, detail="Too many bad tokens from this address.")
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            rate_limit_retry_after(
                key=key, limit=settings.API_TOKEN_FAILURE_LIMIT, window_seconds=window
            )
            raise


def _login_keys(request: HttpRequest) -> list[tuple[str, int]]:
    """(limiter key, limit): this address with this username, and this address overall."""
    ip = client_ip(request)
    username = request.POST.get("username", "").strip().lower()[:MAX_KEY_PART]
    return [
        (f"login-failures:{ip}:{username}", settings.LOGIN_FAILURE_LIMIT),
        (f"login-failures:{ip}", settings.LOGIN_FAILURE_IP_LIMIT),
    ]


def login_rate_limited(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Throttle failed logins of a Django login view (the dashboard's and the admin's).

    A failure is a POST that renders the form again (200); success (a redirect) clears the
    username's count but not the address's, so one good account cannot launder guesses at others.
    """

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method != "POST":
            return view(request, *args, **kwargs)
        window = settings.LOGIN_FAILURE_WINDOW_SECONDS
        keys = _login_keys(request)
        for key, limit in keys:
            wait = rate_limit_peek(key=key, limit=limit, window_seconds=window)
            if wait is not None:
                return HttpResponse(
                    f"Too many failed logins; try again in {wait} seconds.\n",
                    status=429,
                    headers={"Retry-After": str(wait)},
                    content_type="text/plain; charset=utf-8",
                )
        response = view(request, *args, **kwargs)
        if response.status_code == 200:
            for key, limit in keys:
                rate_limit_retry_after(key=key, limit=limit, window_seconds=window)
        elif response.status_code == 302:
            rate_limit_reset(key=keys[0][0], window_seconds=window)
        return response

    return wrapped
