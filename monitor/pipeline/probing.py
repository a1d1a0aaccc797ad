"""Canary probes wired from settings: the prober for ``monitor probe run`` and the service's schedule.

Why here (the pipeline layer): the prober judges with the service's own embedder and judge, in
the service's worker thread (between batches: one thread runs the model, as for user traffic),
and hands its conditions to the service's alert engine there too. The probe package itself knows
nothing of the service.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence, get_args

from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from monitor.alerts.engine import Status
from monitor.config import Settings
from monitor.events import Event
from monitor.judge.verdict import Verdict
from monitor.pipeline.scoring import Scorer
from monitor.pipeline.service import MonitorService
from monitor.privacy.redact import Redactor
from monitor.probe.client import ChatClient, Target, probe_end_user
from monitor.probe.detector import ALERT_KINDS, ProbeDetector
from monitor.probe.metrics import ProbeMetrics
from monitor.probe.prober import ProbeJudge, Prober, ProbeSettings
from monitor.probe.probe_sets import load_probe_sets
from monitor.probe.scheduler import ProbeScheduler

log = logging.getLogger(__name__)


def probe_api_key(settings: Settings) -> SecretStr | None:
    """``probe_api_key``, else the first line of ``probe_api_key_file``; the error names the setting, never the key."""
    if settings.probe_api_key is not None or settings.probe_api_key_file is None:
        return settings.probe_api_key
    try:
        key = settings.probe_api_key_file.read_text(encoding="utf-8").strip().splitlines()
    except OSError as exc:
        raise ValueError(f"probe_api_key_file: cannot read {settings.probe_api_key_file}: {exc.strerror}") from None
    if not key or not key[0].strip():
        raise ValueError(f"probe_api_key_file: {settings.probe_api_key_file} is empty")
    return SecretStr(key[0].strip())


def scorer_judge(scorer: Scorer) -> ProbeJudge:
    """Embed and judge probe answers with ``scorer``, in the calling thread."""

    def judge(events: Sequence[Event]) -> list[Verdict]:
        scored, _ = scorer.score([(e, 1.0) for e in events])
        return [s.verdict for s in scored]

    return judge


def build_prober(settings: Settings, judge: ProbeJudge, registry: CollectorRegistry, targets: Sequence[Target] | None = None,
                 client_factory: Callable[..., ChatClient] = ChatClient) -> Prober:
    """A prober over ``targets`` (default: ``probe_targets``) and ``probe_sets``, tuned by the ``probe_*`` settings;
    ``client_factory`` replaces the HTTP client (bench/probe_cost.py measures the monitor's side only)."""
    return Prober(
        targets if targets is not None else [Target.parse(spec) for spec in settings.probe_targets],
        load_probe_sets(settings.probe_sets),
        judge,
        ProbeDetector(settings.probe_warmup_rounds, settings.probe_window_rounds, settings.probe_p_value, settings.probe_min_rate_change),
        ProbeMetrics(registry),
        ProbeSettings(
            per_round=settings.probe_per_round,
            concurrency=settings.probe_concurrency,
            timeout_s=settings.probe_timeout_seconds,
            max_retries=settings.probe_max_retries,
            max_tokens=settings.probe_max_tokens,
            daily_tokens=settings.probe_daily_tokens,
            answer_chars=settings.probe_answer_chars,
            seed=settings.seed,
            end_user=probe_end_user(settings.probe_end_user_key.get_secret_value()),
        ),
        api_key=probe_api_key(settings),
        redactor=Redactor(settings.redaction),
        client_factory=client_factory,
    )


@dataclass(frozen=True)
class ProbeRebaseline:
    """The prober as a :class:`~monitor.drift.base.Resettable` for one of its alert kinds: a reviewer who
    resolves a probe alert as a false alarm (an intended model change) re-baselines that probe set."""

    prober: Prober
    alert_kind: str

    def reset(self, scope: str, key: str) -> bool:
        return self.prober.reset(self.alert_kind, scope, key)


def attach_prober(service: MonitorService, settings: Settings) -> ProbeScheduler | None:
    """Probe ``probe_targets`` every ``probe_interval_seconds`` while ``service`` runs; None when none is configured.

    The prober's state (references, windows, budgets) is snapshotted with the service's."""
    if not settings.probe_targets:
        return None

    def judge_in_worker(events: Sequence[Event]) -> list[Verdict]:
        return service.call_in_worker(scorer_judge(service.scorer), events).result()

    prober = build_prober(settings, judge_in_worker, service.metrics.registry)
    service.stateful["probes"] = prober
    service.resettables += [ProbeRebaseline(prober, kind) for kind in ALERT_KINDS]
    service.metrics.declare_alert_kinds(ALERT_KINDS)
    for kind in ALERT_KINDS:
        for status in get_args(Status):
            service.metrics.alert_transitions.labels(kind=kind, status=status)
    scheduler = ProbeScheduler(
        prober,
        settings.probe_interval_seconds,
        # A round that ends while the service stops has no worker to run in: its conditions come again next round.
        on_round=lambda result: service.call_in_worker(service.apply, lambda: prober.still_current(result)).result() if service.running else None,
        on_error=service.metrics.worker_errors.inc,
        ready=lambda: service.running,
    )
    scheduler.start()
    service.stop_listeners.insert(0, scheduler.close)
    log.info("probing %s every %.0f s with %d probe set(s)", ", ".join(t.name for t in prober.targets),
             settings.probe_interval_seconds, len(prober.probe_sets))
    return scheduler
