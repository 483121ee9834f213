"""What an alert says and how a webhook is signed (pure: no database, no network).

Webhook bodies are Slack-compatible (`text` plus `blocks`, which a Slack incoming webhook shows
as they are) with the anomaly's figures under `clickserver` for machines. Each request carries
`X-Clickserver-Timestamp` and `X-Clickserver-Signature: v1=<hex>`, the HMAC-SHA256 of
`"<timestamp>.<body>"` under the rule's secret: the receiver recomputes it and refuses a
timestamp older than a few minutes, so a captured request cannot be replayed later.
"""

import hashlib
import hmac
from dataclasses import dataclass
from html import escape
from typing import Any

SIGNATURE_HEADER = "X-Clickserver-Signature"
TIMESTAMP_HEADER = "X-Clickserver-Timestamp"
SIGNATURE_VERSION = "v1"
# A receiver should refuse signatures older than this (seconds).
SIGNATURE_TOLERANCE = 300


@dataclass(frozen=True, slots=True)
class AlertContent:
    """One anomaly as an alert: what the shop, rule and anomaly rows say, flattened."""

    shop_name: str
    shop_domain: str
    rule_name: str
    anomaly_id: int
    kind: str
    metric: str
    severity: str
    direction: str  # spike / drop ('' where it does not apply)
    window_start: str  # ISO 8601
    window_end: str
    observed: float
    expected: float | None
    band_low: float | None
    band_high: float | None
    explanation: str
    url: str  # the dashboard's Alerts page


def signature_compute(*, secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def signature_verify(
    *, secret: str, timestamp: str, signature: str, body: bytes, now: float
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent) > SIGNATURE_TOLERANCE:
        return False
    expected = signature_compute(secret=secret, timestamp=sent, body=body)
    return hmac.compare_digest(expected, signature)


def alert_subject(content: AlertContent) -> str:
    return f"[{content.severity}] {content.shop_name}: {content.metric.replace('_', ' ')}"


def webhook_payload(content: AlertContent) -> dict[str, Any]:
    """Slack's incoming-webhook shape (`text`, `blocks`) plus the figures for other receivers."""
    title = alert_subject(content)
    return {
        "text": f"{title}\n{content.explanation}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
            {"type": "section", "text": {"type": "plain_text", "text": content.explanation}},
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"Rule: {content.rule_name} · <{content.url}|Open the Alerts page>",
                    }
                ],
            },
        ],
        "clickserver": {
            "anomaly_id": content.anomaly_id,
            "shop": content.shop_domain,
            "kind": content.kind,
            "metric": content.metric,
            "severity": content.severity,
            "direction": content.direction,
            "window_start": content.window_start,
            "window_end": content.window_end,
            "observed": content.observed,
            "expected": content.expected,
            "band": [content.band_low, content.band_high],
        },
    }


def _figure(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if abs(value - round(value)) < 1e-9 else f"{value:,.2f}"


def email_bodies(content: AlertContent) -> tuple[str, str]:
    """(plain text, HTML): the same facts; the HTML escapes every value (shop and shopper text)."""
    band = (
        f"{_figure(content.band_low)} – {_figure(content.band_high)}"
        if content.band_low is not None or content.band_high is not None
        # Orders, bots and health checks are judged without a series band.
        else "–"
    )
    lines = [
        content.explanation,
        "",
        f"Shop: {content.shop_name} ({content.shop_domain})",
        f"Metric: {content.metric}   Severity: {content.severity}",
        f"Window: {content.window_start} – {content.window_end}",
        f"Observed: {_figure(content.observed)}   Expected: {_figure(content.expected)}   "
        f"Normal band: {band}",
        f"Rule: {content.rule_name}",
        "",
        f"Acknowledge or resolve it on the Alerts page: {content.url}",
    ]
    rows = [
        ("Metric", content.metric),
        ("Severity", content.severity),
        ("Window", f"{content.window_start} – {content.window_end}"),
        ("Observed", _figure(content.observed)),
        ("Expected", _figure(content.expected)),
        ("Normal band", band),
        ("Rule", content.rule_name),
    ]
    table = "".join(
        f"<tr><th align='left'>{escape(name)}</th><td>{escape(value)}</td></tr>"
        for name, value in rows
    )
    html = (
        f"<html><body><h2>{escape(alert_subject(content))}</h2>"
        f"<p>{escape(content.explanation)}</p><table>{table}</table>"
        f"<p><a href='{escape(content.url)}'>Open the Alerts page</a></p></body></html>"
    )
    return "\n".join(lines) + "\n", html
