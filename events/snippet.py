"""The tracking snippet: the static source with one shop's configuration put in.

Apps above `events` add to the configuration through `settings.SNIPPET_CONFIG_HOOKS`: dotted
paths of functions `(*, shop) -> dict` whose keys are merged into it (the running experiments
come so from notifications, which events must not import). The configuration is part of the
served text, so its ETag changes with it.
"""

import functools
import hashlib
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings
from django.utils.module_loading import import_string

from events.models import ConsentMode, Shop

SOURCE_PATH = Path(__file__).parent / "static" / "events" / "clickserver.js"
# The source ends with `})(window, document, /*CONFIG*/{});`: the placeholder is replaced by
# the shop's configuration, and the file still runs as is (with no configuration) in tests.
CONFIG_PLACEHOLDER = "/*CONFIG*/{}"
# The experiments part (`clickserver.variant`) goes in place of this marker when the
# configuration has experiments; other shops' storefronts do not pay for its SHA-256.
EXPERIMENTS_PATH = SOURCE_PATH.with_name("clickserver-experiments.js")
EXPERIMENTS_PLACEHOLDER = "/*EXPERIMENTS*/"
# Likewise the toast (`notifications`), for shops running an on-site campaign.
NOTIFICATIONS_PATH = SOURCE_PATH.with_name("clickserver-notifications.js")
NOTIFICATIONS_PLACEHOLDER = "/*NOTIFICATIONS*/"
SNIPPET_MAX_AGE_SECONDS = 300


def _compact(source: str) -> str:
    """The source as served: without indentation, blank lines and whole-line `//` comments.

    The comments are for the people who read the file; a storefront downloads the snippet on
    every first visit and it has a size budget (8 KB gzipped with experiments and the toast).
    Only whole lines go, so no string or regular expression holding `//` is touched, and the
    line breaks that JavaScript's semicolon insertion may rely on all stay.
    """
    lines = (line.strip() for line in source.splitlines())
    return "\n".join(line for line in lines if line and not line.startswith("//")) + "\n"


@functools.cache
def snippet_source() -> str:
    source = _compact(SOURCE_PATH.read_text(encoding="utf-8"))
    for placeholder in (CONFIG_PLACEHOLDER, EXPERIMENTS_PLACEHOLDER, NOTIFICATIONS_PLACEHOLDER):
        if source.count(placeholder) != 1:
            raise RuntimeError(f"{SOURCE_PATH} must hold {placeholder} exactly once")
    return source


@functools.cache
def experiments_source() -> str:
    return _compact(EXPERIMENTS_PATH.read_text(encoding="utf-8"))


@functools.cache
def notifications_source() -> str:
    return _compact(NOTIFICATIONS_PATH.read_text(encoding="utf-8"))


def snippet_config(*, shop: Shop, endpoint: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "endpoint": endpoint,
        "writeKey": shop.write_key,
        "consentRequired": shop.consent_mode == ConsentMode.REQUIRED,
    }
    for hook in settings.SNIPPET_CONFIG_HOOKS:
        config |= import_string(hook)(shop=shop)
    return config


def snippet_render(*, shop: Shop, endpoint: str) -> str:
    config = snippet_config(shop=shop, endpoint=endpoint)
    source = snippet_source()
    if config.get("experiments"):
        source = source.replace(EXPERIMENTS_PLACEHOLDER, experiments_source())
    if config.get("notifications"):
        source = source.replace(NOTIFICATIONS_PLACEHOLDER, notifications_source())
    # orjson escapes nothing HTML-special, but this is served as a script, never inlined in HTML.
    return source.replace(CONFIG_PLACEHOLDER, orjson.dumps(config).decode())


def snippet_etag(source: str) -> str:
    return '"' + hashlib.sha256(source.encode()).hexdigest()[:32] + '"'


def snippet_tag(*, shop: Shop, base_url: str) -> str:
    """The <script> tag a shop pastes into its theme; base_url is this server's origin."""
    return f'<script async src="{base_url.rstrip("/")}/snippet/{shop.write_key}.js"></script>'
