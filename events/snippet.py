"""The tracking snippet: the static source with one shop's configuration put in."""

import functools
import hashlib
from pathlib import Path

import orjson

from events.models import ConsentMode, Shop

SOURCE_PATH = Path(__file__).parent / "static" / "events" / "clickserver.js"
# The source ends with `})(window, document, /*CONFIG*/{});`: the placeholder is replaced by
# the shop's configuration, and the file still runs as is (with no configuration) in tests.
CONFIG_PLACEHOLDER = "/*CONFIG*/{}"
SNIPPET_MAX_AGE_SECONDS = 300


@functools.cache
def snippet_source() -> str:
    source = SOURCE_PATH.read_text(encoding="utf-8")
    if source.count(CONFIG_PLACEHOLDER) != 1:
        raise RuntimeError(f"{SOURCE_PATH} must hold {CONFIG_PLACEHOLDER} exactly once")
    return source


def snippet_render(*, shop: Shop, endpoint: str) -> str:
    config = {
        "endpoint": endpoint,
        "writeKey": shop.write_key,
        "consentRequired": shop.consent_mode == ConsentMode.REQUIRED,
    }
    # orjson escapes nothing HTML-special, but this is served as a script, never inlined in HTML.
    return snippet_source().replace(CONFIG_PLACEHOLDER, orjson.dumps(config).decode())


def snippet_etag(source: str) -> str:
    return '"' + hashlib.sha256(source.encode()).hexdigest()[:32] + '"'


def snippet_tag(*, shop: Shop, base_url: str) -> str:
    """The <script> tag a shop pastes into its theme; base_url is this server's origin."""
    return f'<script async src="{base_url.rstrip("/")}/snippet/{shop.write_key}.js"></script>'
