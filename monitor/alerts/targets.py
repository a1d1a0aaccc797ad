"""Where alerts go and in what shape: Alertmanager's v2 API and plain HTTP webhooks.

A target turns a batch of :class:`Notice` into one HTTP request. It raises
:class:`RetryableDeliveryError` for what may pass on a retry (connection errors, timeouts, 429,
5xx) and :class:`RejectedDeliveryError` when the receiver refuses the payload (other 4xx):
retrying that cannot help. Retries, the outbox and threads live in :mod:`monitor.alerts.delivery`.

Alertmanager contract (the one Prometheus follows): firing alerts are re-sent on an interval with
``endsAt`` a few intervals ahead, so an alert whose sender died expires on its own; a resolve is
sent once with ``endsAt`` at the resolution. ``startsAt``/``endsAt`` are the alert's event times,
clamped to the delivery moment, because Alertmanager compares them with its own clock.

>>> n = Notice("a1", "category_share/global/self_harm", "category_share", "global", "self_harm",
...            "self_harm", "critical", "firing", 1767225600.0, None, "self_harm share up", {"alert": "/v1/alerts/a1"})
>>> body = alertmanager_alert(n, now=1767225700.0, base_url="http://monitor:8000", expiry_s=240.0)
>>> body["labels"]
{'alertname': 'LLMSafetyCategoryShare', 'kind': 'category_share', 'scope': 'global', 'severity': 'critical', 'source': 'llmsafety-monitor', 'key': 'self_harm', 'category': 'self_harm'}
>>> body["startsAt"], body["endsAt"], body["generatorURL"]
('2026-01-01T00:00:00Z', '2026-01-01T00:05:40Z', 'http://monitor:8000/v1/alerts/a1')
>>> slack_text([n], "http://monitor:8000")
'[FIRING] critical LLMSafetyCategoryShare global/self_harm: self_harm share up <http://monitor:8000/v1/alerts/a1|evidence>'
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, Sequence

import httpx

from monitor.alerts.notice import SOURCE, Notice, iso_utc
from monitor.redact_urls import url_fault

WebhookFormat = Literal["json", "slack"]


class RetryableDeliveryError(Exception):
    """The receiver was unreachable or temporarily failing; the same request may succeed later."""


class RejectedDeliveryError(Exception):
    """The receiver refused the payload (4xx other than 429): retrying would not help."""


class Target(Protocol):
    label: str  # metric label value: bounded, never the URL (webhook URLs often embed secrets)
    resends: bool  # re-send firing alerts on the resend interval (Alertmanager's contract)

    def send(self, client: httpx.Client, notices: Sequence[Notice], now: float) -> None: ...


def check_url(field: str, url: str) -> str:
    """A clear error naming the setting when a URL is not absolute http(s); never the URL itself, whose
    path or user info may be the secret (a Slack webhook's path is its key)."""
    fault = url_fault(url, ("http", "https"))
    if fault is not None:
        raise ValueError(f"{field}: {fault}")
    return url


def post_json(client: httpx.Client, url: str, body: Any) -> None:
    try:
        response = client.post(url, json=body)
    except httpx.TransportError as exc:  # connect, read, write, timeouts
        raise RetryableDeliveryError(f"{httpx.URL(url).host}: {type(exc).__name__}") from exc
    if response.status_code == 429 or response.status_code >= 500:
        raise RetryableDeliveryError(f"{httpx.URL(url).host}: HTTP {response.status_code}")
    if response.status_code >= 400:
        raise RejectedDeliveryError(f"{httpx.URL(url).host}: HTTP {response.status_code}: {response.text[:200]}")


def alertmanager_alert(notice: Notice, now: float, base_url: str, expiry_s: float) -> dict[str, Any]:
    """One element of Alertmanager's ``POST /api/v2/alerts`` body (labels identify the alert)."""
    labels = {
        "alertname": notice.alertname,
        "kind": notice.kind,
        "scope": notice.scope,
        "severity": notice.severity,
        "source": SOURCE,
    }
    if notice.key:
        labels["key"] = notice.key
    if notice.category:
        labels["category"] = notice.category
    links = notice.links(base_url)
    annotations = {"summary": notice.summary or notice.description, "description": notice.description}
    annotations.update({f"{name}_url": url for name, url in links.items()})
    starts = min(notice.started_at, now)
    if notice.status == "resolved":
        ends = max(starts, min(notice.resolved_at if notice.resolved_at is not None else now, now))
    else:
        ends = now + expiry_s
    return {
        "labels": labels,
        "annotations": annotations,
        "startsAt": iso_utc(starts),
        "endsAt": iso_utc(ends),
        "generatorURL": links["alert"] if base_url else "",
    }


class AlertmanagerTarget:
    """Pushes to one Alertmanager (``url`` is its base, e.g. ``http://alertmanager:9093``).

    For an HA pair, configure every member: each gets every alert, as with Prometheus.
    """

    label = "alertmanager"
    resends = True

    def __init__(self, url: str, base_url: str = "", expiry_s: float = 240.0) -> None:
        self.endpoint = check_url("alertmanager_urls", url).rstrip("/") + "/api/v2/alerts"
        self.base_url = base_url
        self.expiry_s = expiry_s

    def send(self, client: httpx.Client, notices: Sequence[Notice], now: float) -> None:
        body = [alertmanager_alert(n, now, self.base_url, self.expiry_s) for n in notices]
        post_json(client, self.endpoint, body)


def webhook_body(notices: Sequence[Notice], base_url: str) -> dict[str, Any]:
    """The generic JSON payload: one object per alert status change, with evidence links."""
    return {
        "version": "1",
        "source": SOURCE,
        "alerts": [
            {
                "id": n.id,
                "fingerprint": n.fingerprint,
                "status": n.status,
                "alertname": n.alertname,
                "kind": n.kind,
                "scope": n.scope,
                "key": n.key,
                "category": n.category,
                "severity": n.severity,
                "summary": n.summary,
                "description": n.description,
                "started_at": iso_utc(n.started_at),
                "resolved_at": iso_utc(n.resolved_at) if n.resolved_at is not None else None,
                "links": n.links(base_url),
            }
            for n in notices
        ],
    }


def slack_text(notices: Sequence[Notice], base_url: str) -> str:
    """One line per alert in Slack's mrkdwn (``<url|text>`` links); Mattermost reads it too."""
    lines = []
    for n in notices:
        where = f"{n.scope}/{n.key}" if n.key else n.scope
        links = " ".join(f"<{url}|{'evidence' if name == 'alert' else name}>" for name, url in n.links(base_url).items())
        lines.append(f"[{n.status.upper()}] {n.severity} {n.alertname} {where}: {n.summary or n.description} {links}")
    return "\n".join(lines)


class WebhookTarget:
    """POSTs each batch to a URL: ``json`` (:func:`webhook_body`) or ``slack`` (``{"text": ...}``)."""

    resends = False

    def __init__(self, url: str, format: WebhookFormat = "json", base_url: str = "") -> None:
        if format not in ("json", "slack"):
            raise ValueError(f"alert webhook format: {format!r} is not 'json' or 'slack'")
        self.url = check_url("alert_slack_webhook_urls" if format == "slack" else "alert_webhook_urls", url)
        self.format = format
        self.label = "slack" if format == "slack" else "webhook"
        self.base_url = base_url

    def send(self, client: httpx.Client, notices: Sequence[Notice], now: float) -> None:
        if self.format == "slack":
            body: Any = {"text": slack_text(notices, self.base_url)}
        else:
            body = webhook_body(notices, self.base_url)
        post_json(client, self.url, body)
