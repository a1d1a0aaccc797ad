"""Alert delivery: alert status changes out to Alertmanager and webhooks, never blocking the pipeline.

The worker thread hands each batch of :class:`~monitor.alerts.engine.Transition` to
:meth:`AlertDelivery.on_transitions`, which only snapshots them and appends to each target's
bounded outbox (the oldest notice is dropped, and counted, when one is full). Every target has a
thread of its own, so a dead webhook never delays Alertmanager: it sends what is queued as one
request, retrying with exponential backoff (tenacity) on connection errors, timeouts, 429 and 5xx.
A batch that still fails is counted and dropped; Alertmanager needs no replay, because firing
alerts are re-sent every ``resend_interval_s`` anyway and a lost resolve expires on its own
(``endsAt`` runs ``expiry`` ahead). Outcomes go to ``llmsafety_alert_deliveries_total{target,outcome}``.

Scheduling here (resend interval, backoff) is wall-clock by nature: it is about talking to other
processes. What is sent, and every time in it, comes from the alert's event times.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from monitor.alerts.engine import Alert, Transition
from monitor.alerts.notice import Notice
from monitor.alerts.silences import SilenceHold
from monitor.alerts.targets import (
    AlertmanagerTarget,
    RejectedDeliveryError,
    RetryableDeliveryError,
    Target,
    WebhookTarget,
)
from monitor.config import Settings
from monitor.export.metrics import MonitorMetrics
from monitor.redact_urls import redact_urls

log = logging.getLogger(__name__)

OUTCOMES = ("sent", "failed", "rejected", "dropped", "silenced")
DELIVERED_STATUSES = frozenset({"firing", "resolved"})  # pending alerts were never announced


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How hard and how often to try. ``max_batch`` bounds one request's size."""

    resend_interval_s: float = 60.0
    timeout_s: float = 5.0
    max_attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    outbox_size: int = 1000
    max_batch: int = 100

    def __post_init__(self) -> None:
        for name in ("resend_interval_s", "timeout_s", "backoff_s", "max_backoff_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        for name in ("max_attempts", "outbox_size", "max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")


class _Channel:
    """One target's outbox, firing set (for re-sends) and sending thread."""

    def __init__(self, target: Target, policy: DeliveryPolicy, metrics: MonitorMetrics, closing: threading.Event) -> None:
        self.target = target
        self.policy = policy
        self.metrics = metrics
        self.closing = closing
        self.outbox: deque[Notice] = deque()
        self.firing: OrderedDict[str, Notice] = OrderedDict()  # fingerprint -> latest firing notice
        self.busy = False
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, name=f"alert-delivery-{target.label}", daemon=True)
        self._next_resend = 0.0

    def offer(self, notices: Sequence[Notice]) -> None:
        dropped = 0
        with self.cond:
            for notice in notices:
                if len(self.outbox) >= self.policy.outbox_size:
                    self.outbox.popleft()
                    dropped += 1
                self.outbox.append(notice)
                if self.target.resends:
                    self._track_firing(notice)
            self.cond.notify_all()
        if dropped:
            self.metrics.alert_deliveries.labels(self.target.label, "dropped").inc(dropped)

    def _track_firing(self, notice: Notice) -> None:
        self.firing.pop(notice.fingerprint, None)
        if notice.status == "firing":
            self.firing[notice.fingerprint] = notice
            if len(self.firing) > self.policy.outbox_size:
                self.firing.popitem(last=False)
                self.metrics.alert_deliveries.labels(self.target.label, "dropped").inc()

    def _run(self) -> None:
        with httpx.Client(timeout=self.policy.timeout_s) as client:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                if batch:
                    self._deliver(client, batch)
                with self.cond:
                    self.busy = False
                    self.cond.notify_all()

    def _next_batch(self) -> list[Notice] | None:
        """Queued notices, plus every firing alert when a re-send is due; ``None`` once closed and empty."""
        with self.cond:
            while not self.outbox and not self.closing.is_set():
                wait = self._next_resend - time.monotonic() if self.target.resends and self.firing else None
                if wait is not None and wait <= 0:
                    break
                self.cond.wait(wait)
            if self.closing.is_set() and not self.outbox:
                return None
            batch = [self.outbox.popleft() for _ in range(min(len(self.outbox), self.policy.max_batch))]
            if self.target.resends and time.monotonic() >= self._next_resend:
                queued = {n.fingerprint for n in batch}
                batch += [n for fp, n in self.firing.items() if fp not in queued]
                self._next_resend = time.monotonic() + self.policy.resend_interval_s
            self.busy = bool(batch)
            return batch

    def _deliver(self, client: httpx.Client, batch: list[Notice]) -> None:
        label, p = self.target.label, self.policy
        retrying = Retrying(
            stop=stop_after_attempt(p.max_attempts) | (lambda state: self.closing.is_set()),
            wait=wait_exponential(multiplier=p.backoff_s, max=p.max_backoff_s),
            retry=retry_if_exception_type(RetryableDeliveryError),
            sleep=self.closing.wait,  # a backoff ends early when delivery closes
            before_sleep=lambda state: self._retried(state),
            reraise=True,
        )
        try:
            retrying(lambda: self.target.send(client, batch, time.time()))
            outcome = "sent"
        except RetryableDeliveryError as exc:
            outcome = "failed"
            log.warning("alert delivery to %s failed after retries: %s (%d notices dropped)", label, redact_urls(str(exc)), len(batch))
        except RejectedDeliveryError as exc:
            outcome = "rejected"
            log.error("alert delivery to %s rejected: %s (%d notices dropped)", label, redact_urls(str(exc)), len(batch))
        except Exception as exc:  # a bug in a target must not kill its thread
            outcome = "failed"  # webhook URLs are secrets (Slack): the traceback is logged with them cut to scheme://host
            log.error("alert delivery to %s raised:\n%s", label, redact_urls("".join(traceback.format_exception(exc))))
        self.metrics.alert_deliveries.labels(label, outcome).inc(len(batch))

    def _retried(self, state: RetryCallState) -> None:
        self.metrics.alert_delivery_retries.labels(self.target.label).inc()

    def idle(self) -> bool:
        return not self.outbox and not self.busy


class AlertDelivery:
    """Fans alert status changes out to targets; see the module docstring for the guarantees.

    Use: ``delivery.start(firing_alerts)``, register :meth:`on_transitions` as a transition
    listener, and :meth:`close` on shutdown (it sends what is queued, within its timeout).

    :meth:`mute_with` makes webhooks and Slack, which have no silences of their own, honour the
    silences a person sets (see :mod:`monitor.alerts.silences`); a held notice whose silence has ended
    goes out with the next transitions or within ``resend_interval_s``, whichever is first.
    Alertmanager still gets every notice: the silence pushed to it mutes the page there, and its view
    of what fires stays whole.
    """

    def __init__(self, targets: Sequence[Target], metrics: MonitorMetrics, policy: DeliveryPolicy = DeliveryPolicy()) -> None:
        if not targets:
            raise ValueError("targets: at least one delivery target is needed")
        self.policy = policy
        self.metrics = metrics
        self._hold: SilenceHold | None = None
        self._order = threading.Lock()  # the worker and a reviewer's action (service.apply) both enqueue: one order for all targets
        self._closing = threading.Event()
        self._channels = [_Channel(t, policy, metrics, self._closing) for t in targets]
        self._unwatch: list[Callable[[], None]] = []
        for label in {t.label for t in targets}:
            metrics.alert_delivery_retries.labels(label)
            for outcome in OUTCOMES:
                metrics.alert_deliveries.labels(label, outcome)
            mine = [c for c in self._channels if c.target.label == label]
            self._unwatch.append(metrics.watch_outbox(label, lambda mine=mine: sum(len(c.outbox) for c in mine)))

    def mute_with(self, hold: SilenceHold) -> None:
        """Hold back from webhooks and Slack the notices a person's silence covers; those never sent are
        counted as ``outcome="silenced"``. Call before :meth:`start`."""
        self._hold = hold

    def start(self, firing: Iterable[Alert] = ()) -> None:
        """Start the threads; ``firing`` (alerts restored from saved state) are re-stated to resending targets,
        and held notices of alerts not among them are given up."""
        restated = [Notice.from_alert(a) for a in firing if a.status == "firing"]
        if self._hold is not None:
            gone = self._hold.retain({n.fingerprint for n in restated})
            for channel in self._channels:
                self._count(channel, "silenced", 0 if channel.target.resends else gone)
        self._enqueue(restated, restated=True)
        for channel in self._channels:
            channel.thread.start()
        if self._hold is not None:
            threading.Thread(target=self._release_ended_silences, name="monitor-silence-release", daemon=True).start()

    def _release_ended_silences(self) -> None:
        """Without traffic no transitions come; a page due when a silence ends must not wait for them."""
        while not self._closing.wait(self.policy.resend_interval_s):
            self._enqueue([])

    def on_transitions(self, transitions: list[Transition]) -> None:
        """Transition listener (worker thread): snapshot and enqueue, nothing slower.

        A transition whose status did not change (an alert restored on restart or on a detector
        handover) is a re-statement: only targets that re-send (Alertmanager, where an alert not
        re-sent expires) get it; webhooks and Slack heard about it when it started firing.
        """
        delivered = [t for t in transitions if t.alert.status in DELIVERED_STATUSES]
        self._enqueue([Notice.from_alert(t.alert) for t in delivered if t.previous != t.alert.status])
        self._enqueue([Notice.from_alert(t.alert) for t in delivered if t.previous == t.alert.status], restated=True)

    def _enqueue(self, notices: list[Notice], restated: bool = False) -> None:
        releasing = not restated and self._hold is not None and self._hold.holding  # a silence may have ended
        if not notices and not releasing:
            return
        with self._order:
            if self._closing.is_set():  # an action after the stop: the channels' threads are gone
                for channel in self._channels:
                    self._count(channel, "dropped", len(notices) if channel.target.resends or not restated else 0)
                return
            unsilenced, obsolete = (notices, 0) if restated or self._hold is None else self._hold.admit(notices)
            for channel in self._channels:
                if channel.target.resends:
                    channel.offer(notices)
                elif not restated:
                    channel.offer(unsilenced)
                    self._count(channel, "silenced", obsolete)

    def _count(self, channel: _Channel, outcome: str, n: int) -> None:
        if n:
            self.metrics.alert_deliveries.labels(channel.target.label, outcome).inc(n)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every outbox is empty and nothing is in flight; False on timeout."""
        deadline = time.monotonic() + timeout
        for channel in self._channels:
            with channel.cond:
                if not channel.cond.wait_for(channel.idle, max(0.0, deadline - time.monotonic())):
                    return False
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (one attempt each, no backoff), then stop the threads. Held notices stay in
        the hold, which the service snapshotted (with Redis) before this runs: sending one now would send it
        again after a restart."""
        with self._order:
            self._closing.set()
        deadline = time.monotonic() + timeout
        for channel in self._channels:
            with channel.cond:
                channel.cond.notify_all()
            if channel.thread.is_alive():
                channel.thread.join(max(0.0, deadline - time.monotonic()))
        for forget in self._unwatch:
            forget()


def targets_from_settings(settings: Settings) -> list[Target]:
    base, expiry = settings.alert_link_base_url, 4 * settings.alert_resend_interval_s
    targets: list[Target] = [AlertmanagerTarget(url, base, expiry) for url in settings.alertmanager_urls]
    targets += [WebhookTarget(url, "json", base) for url in settings.alert_webhook_urls]
    targets += [WebhookTarget(url, "slack", base) for url in settings.alert_slack_webhook_urls]
    return targets


def policy_from_settings(settings: Settings) -> DeliveryPolicy:
    return DeliveryPolicy(
        resend_interval_s=settings.alert_resend_interval_s,
        timeout_s=settings.alert_delivery_timeout_s,
        max_attempts=settings.alert_delivery_max_attempts,
        backoff_s=settings.alert_delivery_backoff_s,
        max_backoff_s=settings.alert_delivery_max_backoff_s,
        outbox_size=settings.alert_outbox_size,
    )
