"""Silences pushed to Alertmanager when a reviewer silences an alert in the console.

Why: the monitor pushes its alerts to Alertmanager (:mod:`monitor.alerts.targets`), which is what
pages people; a silence recorded only in the monitor would not stop the page. The silence matches
the labels the monitor pushes for that alert (``source``, ``kind``, ``scope`` and ``key``), so it
mutes exactly that alert, for the chosen duration of wall time (Alertmanager's clock).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol, Sequence

import httpx

from monitor.alerts.engine import Alert
from monitor.alerts.notice import SOURCE, iso_utc
from monitor.alerts.targets import check_url


@dataclass(frozen=True, slots=True)
class SilenceResult:
    """One Alertmanager's answer: its host (never the full URL: it may carry credentials) and the silence id or error."""

    host: str
    silence_id: str | None
    error: str | None


class Silencer(Protocol):
    def silence(self, alert: Alert, seconds: float, who: str, reason: str) -> list[SilenceResult]: ...


def silence_body(alert: Alert, seconds: float, who: str, reason: str, now: float) -> dict:
    matchers = {"source": SOURCE, "kind": alert.kind, "scope": alert.scope}
    if alert.key:
        matchers["key"] = alert.key
    return {
        "matchers": [{"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in matchers.items()],
        "startsAt": iso_utc(now),
        "endsAt": iso_utc(now + seconds),
        "createdBy": who,
        "comment": reason or f"silenced from the triage console ({alert.id})",
    }


class AlertmanagerSilencer:
    """Posts the silence to every configured Alertmanager (``POST /api/v2/silences``); failures are
    reported per instance, never raised: the monitor's own record of the silence stands either way."""

    def __init__(self, urls: Sequence[str], timeout_s: float = 5.0) -> None:
        self.urls = [check_url("alertmanager_urls", u).rstrip("/") for u in urls]
        self.timeout_s = timeout_s

    def silence(self, alert: Alert, seconds: float, who: str, reason: str) -> list[SilenceResult]:
        body = silence_body(alert, seconds, who, reason, time.time())
        out = []
        for url in self.urls:
            host = httpx.URL(url).host
            try:
                response = httpx.post(f"{url}/api/v2/silences", json=body, timeout=self.timeout_s)
            except httpx.TransportError as exc:
                out.append(SilenceResult(host, None, type(exc).__name__))
                continue
            if response.status_code != 200:
                out.append(SilenceResult(host, None, f"HTTP {response.status_code}: {response.text[:200]}"))
            else:
                out.append(SilenceResult(host, str(response.json().get("silenceID")), None))
        return out
