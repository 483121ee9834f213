"""What a valid campaign is, whom it fires for, and how its text is rendered: pure, no Django.

The validators return the cleaned value and a dict of field errors (empty when valid), so the
service gathers every error of a request into one 400 envelope. `session_evaluate` is the whole
decision rule for one live session, given the facts the service read (`SessionFacts`).
"""

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeGuard
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from notifications.experiments import rules as experiment_rules
from notifications.experiments.rules import UnitTraits

Errors = dict[str, list[str]]

SCORE_BAND = "score_band"
CART_ABANDONED = "cart_abandoned"
CHECKOUT_STARTED = "checkout_started"
PRODUCT_VIEWED = "product_viewed"
SEGMENT_ENTERED = "segment_entered"
FIRST_VISIT = "first_visit"
TRIGGER_KINDS = frozenset(
    {SCORE_BAND, CART_ABANDONED, CHECKOUT_STARTED, PRODUCT_VIEWED, SEGMENT_ENTERED, FIRST_VISIT}
)
# The keys each trigger kind takes besides "kind" (all required once the service filled defaults).
TRIGGER_KEYS = {
    SCORE_BAND: frozenset({"low", "high"}),
    CART_ABANDONED: frozenset({"minutes"}),
    CHECKOUT_STARTED: frozenset(),
    PRODUCT_VIEWED: frozenset({"count"}),
    SEGMENT_ENTERED: frozenset({"segment"}),
    FIRST_VISIT: frozenset(),
}
MAX_MINUTES = 24 * 60
MAX_VIEWS = 100

# The experiments' targeting (segment, device, source, visitor; score bounds too) plus these.
EXTRA_TARGETING_KEYS = frozenset({"country", "cart_value_min", "cart_value_max", "url_contains"})
COUNTRY = re.compile(r"^[A-Z]{2}$")
URL_FRAGMENT_MAX = 255

PLACEHOLDERS = frozenset({"first_name", "product", "cart_value"})
# `{name}`: any word in braces is a placeholder, so a typo is refused rather than shown raw.
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
TITLE_MAX = 120
BODY_MAX = 500
CTA_TEXT_MAX = 64
URL_MAX = 2048
HOLDOUT_ARM = "holdout"
MAX_CONTENT_VARIANTS = 10
DISCOUNT_PARAM = "discount"


@dataclass(frozen=True, slots=True)
class ContentIn:
    key: str
    title: str
    body: str
    cta_url: str
    cta_text: str = ""


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """What the service read of one live session for the decision."""

    traits: UnitTraits
    country: str
    is_converted: bool
    cart_value: Decimal
    # Instants of the session's last add_to_cart / checkout_started; None when there is none.
    last_cart_at: datetime | None
    last_checkout_at: datetime | None
    max_product_views: int
    urls: tuple[str, ...]
    is_first_visit: bool


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: Any, *, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= high


def trigger_validate(value: Any) -> tuple[dict[str, Any], Errors]:
    """One trigger: {"kind": ..., its keys}. A score band's missing bounds are the service's
    defaults (it fills them before calling this), so here both are required."""
    if not isinstance(value, Mapping) or value.get("kind") not in TRIGGER_KINDS:
        return {}, {"trigger": [f"an object with kind one of {sorted(TRIGGER_KINDS)}"]}
    kind = value["kind"]
    errors: Errors = {}
    unknown = set(value) - {"kind"} - TRIGGER_KEYS[kind]
    if unknown:
        errors["trigger"] = [f"unknown keys {sorted(unknown)} for {kind}"]
    cleaned: dict[str, Any] = {"kind": kind}
    if kind == SCORE_BAND:
        for bound in ("low", "high"):
            score = value.get(bound)
            if _is_number(score) and 0 <= score <= 1:
                cleaned[bound] = float(score)
            else:
                errors[f"trigger.{bound}"] = ["a score from 0 to 1"]
        if "low" in cleaned and "high" in cleaned and cleaned["low"] >= cleaned["high"]:
            errors["trigger.high"] = ["the band is empty: high must be above low"]
    elif kind == CART_ABANDONED:
        if _is_count(value.get("minutes"), high=MAX_MINUTES):
            cleaned["minutes"] = value["minutes"]
        else:
            errors["trigger.minutes"] = [f"a whole number of minutes from 1 to {MAX_MINUTES}"]
    elif kind == PRODUCT_VIEWED:
        if _is_count(value.get("count"), high=MAX_VIEWS):
            cleaned["count"] = value["count"]
        else:
            errors["trigger.count"] = [f"a whole number of views from 1 to {MAX_VIEWS}"]
    elif kind == SEGMENT_ENTERED:
        segment = value.get("segment")
        if _is_count(segment, high=2**63 - 1):
            cleaned["segment"] = segment
        else:
            errors["trigger.segment"] = ["a segment id"]
    return cleaned, errors


def targeting_validate(value: Any) -> tuple[dict[str, Any], Errors]:
    """The experiments' targeting rules plus country, cart value and page; the segment's
    existence in the shop is the service's check."""
    if not isinstance(value, Mapping):
        return {}, {"targeting": ["an object"]}
    base = {k: v for k, v in value.items() if k not in EXTRA_TARGETING_KEYS}
    cleaned, errors = experiment_rules.targeting_validate(base)
    if "targeting" in errors:
        allowed = sorted(experiment_rules.TARGETING_KEYS | EXTRA_TARGETING_KEYS)
        errors["targeting"] = [f"unknown keys; allowed {allowed}"]
    countries = value.get("country")
    if countries is not None:
        if (
            isinstance(countries, list)
            and countries
            and all(isinstance(c, str) and COUNTRY.match(c.upper()) for c in countries)
        ):
            cleaned["country"] = sorted({c.upper() for c in countries})
        else:
            errors["targeting.country"] = ["a non-empty list of ISO 3166 alpha-2 codes"]
    for bound in ("cart_value_min", "cart_value_max"):
        amount = value.get(bound)
        if amount is not None:
            if _is_number(amount) and amount >= 0:
                cleaned[bound] = float(amount)
            else:
                errors[f"targeting.{bound}"] = ["an amount of 0 or more, in the shop currency"]
    if cleaned.get("cart_value_min", 0.0) > cleaned.get("cart_value_max", math.inf):
        errors["targeting.cart_value_max"] = ["must not be below cart_value_min"]
    fragment = value.get("url_contains")
    if fragment is not None:
        if isinstance(fragment, str) and 0 < len(fragment.strip()) <= URL_FRAGMENT_MAX:
            cleaned["url_contains"] = fragment.strip()
        else:
            errors["targeting.url_contains"] = [f"text of 1-{URL_FRAGMENT_MAX} characters"]
    return cleaned, errors


def placeholders_check(text: str) -> list[str]:
    """The placeholders of `text` that do not exist."""
    return sorted({name for name in PLACEHOLDER.findall(text) if name not in PLACEHOLDERS})


def _url_is_valid(url: Any) -> bool:
    if not isinstance(url, str) or not 0 < len(url) <= URL_MAX or any(c.isspace() for c in url):
        return False
    if url.startswith("/") and not url.startswith("//"):
        return True
    parts = urlsplit(url)
    # Only web links: a javascript: or data: URL in a toast would run in the shop's page.
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def variants_validate(value: Any) -> tuple[list[ContentIn], Errors]:
    """1-10 content variants with distinct slug keys (not "holdout"), known placeholders only,
    and a web (http, https or same-site path) call-to-action URL."""
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or not 1 <= len(value) <= MAX_CONTENT_VARIANTS
    ):
        return [], {"variants": [f"a list of 1-{MAX_CONTENT_VARIANTS} content variants"]}
    errors: Errors = {}
    cleaned: list[ContentIn] = []
    for index, item in enumerate(value):
        at = f"variants[{index}]"
        if not isinstance(item, ContentIn):
            errors[at] = ["a content variant"]
            continue
        if not experiment_rules.SLUG.match(item.key) or item.key == HOLDOUT_ARM:
            errors[f"{at}.key"] = ["a slug of 1-64 letters, digits, '-' or '_', not 'holdout'"]
        for name, text, high in (
            ("title", item.title, TITLE_MAX),
            ("body", item.body, BODY_MAX),
            ("cta_text", item.cta_text, CTA_TEXT_MAX),
        ):
            if len(text) > high or (name != "cta_text" and not text.strip()):
                errors[f"{at}.{name}"] = [f"text of {0 if name == 'cta_text' else 1}-{high}"]
            unknown = placeholders_check(text)
            if unknown:
                errors.setdefault(f"{at}.{name}", []).append(
                    f"unknown placeholders {unknown}; allowed {sorted(PLACEHOLDERS)}"
                )
        if not _url_is_valid(item.cta_url):
            errors[f"{at}.cta_url"] = ["an http(s) URL or a path starting with '/'"]
        cleaned.append(item)
    keys = [item.key for item in cleaned]
    if len(set(keys)) != len(keys):
        errors["variants"] = ["variant keys must be distinct"]
    return cleaned, errors


def caps_validate(values: Mapping[str, Any]) -> tuple[dict[str, Any], Errors]:
    """Per-person caps are whole numbers ≥ 1; quiet hours both given (0-23, distinct) or none."""
    errors: Errors = {}
    cleaned: dict[str, Any] = {}
    for name in ("max_per_person_day", "max_per_person_week"):
        if name in values:
            if _is_count(values[name], high=1000):
                cleaned[name] = values[name]
            else:
                errors[name] = ["a whole number from 1 to 1000"]
    if "holdout_share" in values:
        share = values["holdout_share"]
        if _is_number(share) and 0 < share < 1:
            cleaned["holdout_share"] = float(share)
        else:
            errors["holdout_share"] = ["a share above 0 and below 1 (the holdout is required)"]
    quiet = [values.get("quiet_start_hour"), values.get("quiet_end_hour")]
    if all(hour is None for hour in quiet):
        if "quiet_start_hour" in values or "quiet_end_hour" in values:
            cleaned["quiet_start_hour"] = cleaned["quiet_end_hour"] = None
    else:
        if all(isinstance(h, int) and not isinstance(h, bool) and 0 <= h <= 23 for h in quiet) and (
            quiet[0] != quiet[1]
        ):
            cleaned["quiet_start_hour"], cleaned["quiet_end_hour"] = quiet
        else:
            errors["quiet_start_hour"] = ["both quiet hours, distinct whole hours from 0 to 23"]
    return cleaned, errors


def is_quiet(*, local_hour: int, start: int | None, end: int | None) -> bool:
    """Whether `local_hour` is in [start, end), a range that may wrap midnight (22 → 7)."""
    if start is None or end is None:
        return False
    if start < end:
        return start <= local_hour < end
    return local_hour >= start or local_hour < end


def score_band_span(triggers: Sequence[Mapping[str, Any]]) -> tuple[float, float] | None:
    """The smallest score range that holds every trigger's band, when every trigger is a score
    band (None otherwise, or with no trigger): a session scored outside it fires none of them,
    so the decision run need not read it."""
    bands = [(t["low"], t["high"]) for t in triggers if t.get("kind") == SCORE_BAND]
    if not bands or len(bands) != len(triggers):
        return None
    return min(low for low, _ in bands), max(high for _, high in bands)


def trigger_fires(trigger: Mapping[str, Any], facts: SessionFacts, *, now: datetime) -> str | None:
    """Why the trigger fires for this session (the decision's reason), or None."""
    kind = trigger["kind"]
    score = facts.traits.score
    if kind == SCORE_BAND:
        if score is not None and trigger["low"] <= score <= trigger["high"]:
            return f"score {score:.3f} in [{trigger['low']:.3f}, {trigger['high']:.3f}]"
        return None
    if kind == CART_ABANDONED:
        last = facts.last_cart_at
        waited = timedelta(minutes=trigger["minutes"])
        after_checkout = facts.last_checkout_at is not None and (
            last is None or facts.last_checkout_at >= last
        )
        if last is not None and not after_checkout and now - last >= waited:
            return f"cart idle for {trigger['minutes']} minutes"
        return None
    if kind == CHECKOUT_STARTED:
        return "checkout started, not completed" if facts.last_checkout_at is not None else None
    if kind == PRODUCT_VIEWED:
        if facts.max_product_views >= trigger["count"]:
            return f"a product viewed {facts.max_product_views} times"
        return None
    if kind == SEGMENT_ENTERED:
        segments = facts.traits.segment_ids or frozenset()
        return f"in segment {trigger['segment']}" if trigger["segment"] in segments else None
    if kind == FIRST_VISIT:
        return "first visit" if facts.is_first_visit else None
    raise ValueError(f"unknown trigger kind {kind!r}")


# The start of each reason `trigger_fires` writes, by trigger kind: the results count decisions
# per kind from the stored reason (a PATCH may change a campaign's trigger while it runs).
REASON_PREFIXES = (
    ("score ", SCORE_BAND),
    ("cart idle for ", CART_ABANDONED),
    ("checkout started", CHECKOUT_STARTED),
    ("a product viewed ", PRODUCT_VIEWED),
    ("in segment ", SEGMENT_ENTERED),
    ("first visit", FIRST_VISIT),
)


def trigger_summary(trigger: Mapping[str, Any]) -> str:
    """The trigger in a few words, for lists: "score in [0.20, 0.60]"."""
    kind = trigger.get("kind")
    if kind == SCORE_BAND:
        return f"score in [{trigger['low']:.2f}, {trigger['high']:.2f}]"
    if kind == CART_ABANDONED:
        return f"cart idle for {trigger['minutes']} minutes"
    if kind == CHECKOUT_STARTED:
        return "checkout started, not completed"
    if kind == PRODUCT_VIEWED:
        return f"a product viewed {trigger['count']} times"
    if kind == SEGMENT_ENTERED:
        return f"in segment {trigger['segment']}"
    if kind == FIRST_VISIT:
        return "first visit"
    return str(kind)


def targeting_admits(targeting: Mapping[str, Any], facts: SessionFacts) -> bool:
    """The experiments' rule for their keys, then country, cart value and page."""
    base = {k: v for k, v in targeting.items() if k not in EXTRA_TARGETING_KEYS}
    if not experiment_rules.targeting_admits(base, facts.traits):
        return False
    if "country" in targeting and facts.country.upper() not in targeting["country"]:
        return False
    cart = float(facts.cart_value)
    if (
        not targeting.get("cart_value_min", 0.0)
        <= cart
        <= targeting.get("cart_value_max", math.inf)
    ):
        return False
    fragment = targeting.get("url_contains")
    return fragment is None or any(fragment in url for url in facts.urls)


def text_render(template: str, values: Mapping[str, str]) -> str:
    """The template with its placeholders filled, as plain text (the snippet sets textContent).

    Only the known names are replaced and a value is never re-scanned, so a product called
    "{first_name}" stays that text. A missing value renders as nothing; doubled spaces collapse.
    """
    rendered = PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)
    return re.sub(r" {2,}", " ", rendered).strip()


def cart_value_format(amount: Decimal, currency: str) -> str:
    return f"{amount:.2f} {currency}".strip()


def cta_url_with_code(url: str, code: str) -> str:
    """The CTA URL with `discount=<code>` added to its query (codes are applied by the shop)."""
    if not code:
        return url
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), (DISCOUNT_PARAM, code)]
    return urlunsplit(parts._replace(query=urlencode(query)))
