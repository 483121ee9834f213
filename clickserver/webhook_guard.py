"""Outgoing webhooks may not reach private networks (SSRF): one check at save time, the real
guard at send time.

A shop member chooses the URL our workers POST to (campaign webhooks, alert rules' webhooks).
Without a guard, that URL could be 127.0.0.1, 10.x or 169.254.169.254 (a cloud's metadata
service), and the worker would send there from inside our network.

- `webhook_url_validate` (save time): http or https, a host, no user or password, a port in
  1-65535, and, unless `WEBHOOK_ALLOW_PRIVATE_NETWORKS`, a host that is not `localhost` nor a
  non-public IP literal nor a name that resolves to one. A name that does not resolve now is
  accepted: DNS changes, and the send-time check decides.
- `webhook_post` (send time): resolves the host once, refuses (`WebhookRefused`) when ANY of its
  addresses is not public, and then connects to those checked addresses only, while the URL,
  the Host header, TLS SNI and certificate verification keep the hostname. A DNS answer that
  changes between the check and the connection (DNS rebinding) therefore cannot redirect the
  request. Redirects are never followed; proxies from the environment are not used (a proxy
  would resolve the name itself) and neither is ~/.netrc (REQUESTS_CA_BUNDLE still is).

"Not public" is `ipaddress`'s `is_global` being false (private, loopback, link-local, shared
100.64/10, documentation, benchmarking and other special-purpose ranges), plus multicast,
reserved and unspecified addresses, and the IPv4 address inside an IPv4-mapped (::ffff:a.b.c.d)
or 6to4 (2002::/16) IPv6 address. Nothing here imports an app, so analytics and notifications
both use it (pyproject.toml's import-linter contracts).
"""

import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# getaddrinfo's (family, type, proto, sockaddr): the sockaddr keeps an IPv6 scope id.
Address = tuple[int, int, int, Any]
NOT_A_URL = "an http(s) URL"


class WebhookRefused(ValueError):
    """The URL is not one we send to; the message says why (shown to the shop)."""


@dataclass(frozen=True, slots=True)
class WebhookAnswer:
    status: int
    head: bytes  # the first bytes of the body (at most `read_limit`)
    encoding: str | None


def _parts(url: Any) -> tuple[str, str, int]:
    """(scheme, host, port) of an acceptable URL, or WebhookRefused."""
    if not isinstance(url, str) or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise WebhookRefused(NOT_A_URL)
    try:
        parts = urlsplit(url)
    except ValueError as error:  # an unbalanced IPv6 bracket
        raise WebhookRefused(NOT_A_URL) from error
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused(NOT_A_URL)
    if parts.username is not None or parts.password is not None:
        raise WebhookRefused("no user name or password in the URL (the signature authenticates)")
    try:
        port = parts.port
    except ValueError as error:
        raise WebhookRefused("a port from 1 to 65535") from error
    if port == 0:
        raise WebhookRefused("a port from 1 to 65535")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def address_is_public(address: IPAddress) -> bool:
    """Globally reachable unicast: what a webhook may be sent to."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return address_is_public(embedded)
    return (
        address.is_global
        and not address.is_multicast
        and not address.is_reserved
        and not address.is_unspecified
        and not address.is_loopback
        and not address.is_link_local
        and not address.is_private
    )


def _refusal(host: str, address: IPAddress | None = None) -> WebhookRefused:
    """`address`: what the name `host` resolved to (None: `host` is the address)."""
    named = host if address is None else f"{host} resolves to {address}"
    return WebhookRefused(
        f"{named}, a private, loopback, link-local or otherwise non-public address: "
        "webhooks are sent to public addresses only (WEBHOOK_ALLOW_PRIVATE_NETWORKS)"
    )


def _resolve(host: str, port: int) -> list[Address]:
    """getaddrinfo's TCP answers; socket.gaierror when the name does not resolve."""
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError as error:
        raise WebhookRefused(NOT_A_URL) from error
    return [(family, kind, proto, sockaddr) for family, kind, proto, _, sockaddr in answers]


def _sockaddr_ip(sockaddr: Any) -> IPAddress:
    return ipaddress.ip_address(sockaddr[0].split("%", 1)[0])


def _addresses_check(host: str, addresses: list[Address]) -> None:
    for *_, sockaddr in addresses:
        address = _sockaddr_ip(sockaddr)
        if not address_is_public(address):
            raise _refusal(host, address)


def webhook_url_validate(url: Any) -> None:
    """Save time: raise WebhookRefused (its message for the field's error) unless the URL may be
    stored. Resolves a host name (no connection): one that does not resolve is accepted."""
    _, host, port = _parts(url)
    if settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS:
        return
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        raise WebhookRefused(
            f"{host} is this machine: webhooks are sent to public addresses only "
            "(WEBHOOK_ALLOW_PRIVATE_NETWORKS)"
        )
    literal = _literal(host)
    if literal is not None:
        if not address_is_public(literal):
            raise _refusal(host)
        return
    try:
        addresses = _resolve(host, port)
    except OSError:
        return  # not resolvable now: the send-time check decides
    _addresses_check(host, addresses)


def _pinned_connect(connection: HTTPConnection, pinned: tuple[Address, ...]) -> socket.socket:
    """urllib3's `_new_conn`, but to the addresses checked before the request (in getaddrinfo's
    order, the next after a failure) instead of resolving the host again."""
    last: OSError = OSError("no address to connect to")
    for family, kind, proto, sockaddr in pinned:
        sock = socket.socket(family, kind, proto)
        try:
            for option in connection.socket_options or ():
                sock.setsockopt(*option)
            if isinstance(connection.timeout, int | float):
                sock.settimeout(connection.timeout)
            if connection.source_address:
                sock.bind(connection.source_address)
            sock.connect(sockaddr)
        except TimeoutError as error:
            sock.close()
            raise ConnectTimeoutError(
                connection,
                f"Connection to {sockaddr[0]} timed out. (connect timeout={connection.timeout})",
            ) from error
        except OSError as error:
            sock.close()
            last = error
        else:
            return sock
    raise NewConnectionError(connection, f"Failed to establish a new connection: {last}") from last


class _PinnedHTTPConnection(HTTPConnection):
    """Everything but the socket's address (Host header, SNI, certificate check) still comes
    from the URL's hostname."""

    pinned: tuple[Address, ...] = ()

    def _new_conn(self) -> socket.socket:
        return _pinned_connect(self, self.pinned)


class _PinnedHTTPSConnection(HTTPSConnection):
    pinned: tuple[Address, ...] = ()

    def _new_conn(self) -> socket.socket:
        return _pinned_connect(self, self.pinned)


class _PinnedAdapter(HTTPAdapter):
    """A requests transport whose connections go to `addresses` only (one adapter per send)."""

    def __init__(self, addresses: list[Address]) -> None:
        pinned = {"pinned": tuple(addresses)}
        http = type("PinnedHTTPConnection", (_PinnedHTTPConnection,), pinned)
        https = type("PinnedHTTPSConnection", (_PinnedHTTPSConnection,), pinned)
        self._pools = {
            "http": type("PinnedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("PinnedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
        }
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pools


def webhook_post(
    url: str, *, body: bytes, headers: dict[str, str], timeout: float, read_limit: int = 4096
) -> WebhookAnswer:
    """Send time: POST `body` to `url` if every address of its host is public (or
    WEBHOOK_ALLOW_PRIVATE_NETWORKS), connecting only to those addresses; no redirect followed.

    Raises WebhookRefused (permanent: sending again will not help) or requests' exceptions
    (a name that does not resolve is a requests.ConnectionError, like a refused connection).
    Reads at most `read_limit` bytes of the answer."""
    _, host, port = _parts(url)
    literal = _literal(host)
    allowed = settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS
    # Before resolving: fe80::1%eth0 on a machine without eth0 is refused, not "unresolvable".
    if literal is not None and not allowed and not address_is_public(literal):
        raise _refusal(host)
    try:
        addresses = _resolve(host, port)
    except OSError as error:
        raise requests.ConnectionError(f"cannot resolve {host}: {error}") from error
    if not allowed:
        _addresses_check(host, addresses)
    with requests.Session() as session:
        session.trust_env = False
        # Still the CA bundle the environment names, as requests would (trust_env also means
        # proxies and ~/.netrc, which stay off).
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        session.verify = bundle or True
        adapter = _PinnedAdapter(addresses)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        with session.post(
            url, data=body, headers=headers, timeout=timeout, allow_redirects=False, stream=True
        ) as response:
            head = response.raw.read(read_limit, decode_content=True) or b""
            return WebhookAnswer(status=response.status_code, head=head, encoding=response.encoding)
