"""Probe rounds: ask every target its probes, judge the answers, feed the probe detector.

A round happens at one event time ``at`` (the scheduler passes the wall clock, a test or replay
any time it likes); everything downstream (budget day, detector, alert times) uses it. Which
probes a round asks is a pure function of the round's index (a rotation through each set when
``per_round`` is smaller than the set), so two runs over the same answers give the same alerts.

Answers become :class:`~monitor.events.Event` objects tagged ``route="probe"`` with labels
``probe_set``/``probe_id``/``probe_kind`` and judged by a :class:`ProbeJudge`; they go to the probe
detector only, never into the service's queue, so user-traffic detectors never see them. What is
kept of an answer (alert evidence) is redacted and cut to ``answer_chars``. Failures never raise:
each is counted by reason, and a round where every question failed sets ``probe_up`` to 0.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from pydantic import SecretStr

from monitor.signals import Condition
from monitor.events import Event
from monitor.judge.verdict import Verdict
from monitor.privacy.redact import Redactor
from monitor.probe.budget import TokenBudget
from monitor.probe.client import ChatClient, ProbeCallError, Reply, Target
from monitor.probe.detector import ALERT_KINDS, Observation, ProbeDetector
from monitor.probe.metrics import ProbeMetrics
from monitor.probe.probe_sets import Probe, ProbeSet

log = logging.getLogger(__name__)

PROBE_ROUTE = "probe"


class ProbeJudge(Protocol):
    """Judges a round's answers (blocking; the prober calls it off the event loop)."""

    def __call__(self, events: Sequence[Event]) -> list[Verdict]: ...


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """How rounds run; see the ``probe_*`` options of :class:`monitor.config.Settings`."""

    per_round: int = 0  # probes per set per round; 0 = the whole set
    concurrency: int = 4
    timeout_s: float = 30.0
    max_retries: int = 2
    max_tokens: int = 128
    daily_tokens: int = 500_000
    answer_chars: int = 500
    seed: int = 0
    end_user: str = ""  # the ``user`` requests name (monitor.probe.client.probe_end_user); empty: none


@dataclass(slots=True)
class RoundResult:
    at: float
    index: int
    observations: list[Observation] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    conditions: list[Condition] = field(default_factory=list)
    generation: int = 0  # the prober's reset count when ``conditions`` were computed


class Prober:
    uses_verdicts = True  # its references are the judge's verdicts on earlier answers: refitted when the judge changes
    alert_kinds = ALERT_KINDS  # what a refit resolves

    def __init__(
        self,
        targets: Sequence[Target],
        probe_sets: Sequence[ProbeSet],
        judge: ProbeJudge,
        detector: ProbeDetector,
        metrics: ProbeMetrics,
        settings: ProbeSettings = ProbeSettings(),
        api_key: SecretStr | None = None,
        redactor: Redactor = Redactor("on"),
        client_factory: Callable[..., ChatClient] = ChatClient,
    ) -> None:
        names = [t.name for t in targets]
        if len(set(names)) != len(names):
            raise ValueError(f"probe targets must have distinct model names: {names}")
        self.targets = list(targets)
        self.probe_sets = list(probe_sets)
        self.judge = judge
        self.detector = detector
        self.metrics = metrics
        self.settings = settings
        self.redactor = redactor
        self._api_key = api_key
        self._client_factory = client_factory
        self._budgets = {t.name: TokenBudget(settings.daily_tokens) for t in targets}
        self._rounds = 0
        self._resets = 0
        self._reset_in: dict[tuple[str, str, str], int] = {}  # (kind, target, probe set) -> the reset count after its last reset
        self._lock = threading.Lock()  # state_dict (snapshots) may run in another thread than a round
        for t in targets:
            metrics.declare(t.name)

    def pick(self, probe_set: ProbeSet, index: int) -> list[Probe]:
        """The probes of ``probe_set`` asked in round ``index``: all, or the next ``per_round`` in rotation."""
        n, k = len(probe_set.probes), self.settings.per_round
        if k <= 0 or k >= n:
            return list(probe_set.probes)
        start = (index * k) % n
        return [probe_set.probes[(start + i) % n] for i in range(k)]

    async def run_round(self, at: float) -> RoundResult:
        """One round at event time ``at`` over every target; never raises for a target's failures."""
        with self._lock:
            index = self._rounds
            self._rounds += 1
        result = RoundResult(at=at, index=index)
        asked = [(ps, probe) for ps in self.probe_sets for probe in self.pick(ps, index)]
        answered: list[tuple[Target, ProbeSet, Probe, Reply]] = []
        for target in self.targets:
            failures: Counter[str] = Counter()
            replies = await self._ask_all(target, asked, at, failures)
            answered += [(target, ps, probe, reply) for (ps, probe), reply in zip(asked, replies) if reply is not None]
            result.failures.update(failures)
            self.metrics.rounds.labels(target=target.name).inc()
            if len(asked) > failures["budget"]:  # a round the budget skipped whole says nothing about the target
                self.metrics.up.labels(target=target.name).set(1 if any(r is not None for r in replies) else 0)
            self.metrics.budget_remaining.labels(target=target.name).set(self._budgets[target.name].remaining(at))
        if answered:
            result.observations = await self._judge(answered, index, at)
        with self._lock:
            result.conditions = self.detector.observe_round(result.observations, at)
            result.generation = self._resets
            readings = self.detector.readings()
        self.metrics.export_readings(readings)
        for c in result.conditions:
            if not c.active and c.evidence["flipped"]:  # evidence below the alert bar: on record, not paged
                log.info("probe set %s of %s: %d probe(s) flipped (%s), no rate change yet", c.key, c.evidence["target"],
                         c.evidence["flipped_count"], ", ".join(f["probe_id"] for f in c.evidence["flipped"]))
        return result

    async def _ask_all(self, target: Target, asked: list[tuple[ProbeSet, Probe]], at: float, failures: Counter[str]) -> list[Reply | None]:
        limit = asyncio.Semaphore(self.settings.concurrency)
        budget = self._budgets[target.name]
        s = self.settings
        retries = self.metrics.retries

        async def one(client: ChatClient, probe: Probe) -> Reply | None:
            reserve = len(probe.prompt) // 4 + 1 + s.max_tokens
            async with limit:  # reserve when the question is about to go out, not for the whole round at once
                if not budget.reserve(reserve, at):
                    self._count(target, "budget", failures)
                    return None
                try:
                    reply = await client.ask(probe.prompt)
                except ProbeCallError as exc:
                    budget.settle(reserve, 0, at)
                    self._count(target, exc.reason, failures)
                    return None
            budget.settle(reserve, reply.tokens, at)
            self._count(target, "ok", failures)
            self.metrics.tokens.labels(target=target.name).inc(reply.tokens)
            self.metrics.latency.labels(target=target.name).observe(reply.latency_s)
            return reply

        async with self._client_factory(
            target, api_key=self._api_key, timeout_s=s.timeout_s, max_retries=s.max_retries, max_tokens=s.max_tokens, seed=s.seed,
            on_retry=lambda reason: retries.labels(target=target.name, reason=reason).inc(), end_user=s.end_user,
        ) as client:
            replies = await asyncio.gather(*(one(client, probe) for _, probe in asked))
        if failures:
            log.warning("probe target %s: %d of %d questions got no answer (%s)", target.name, sum(failures.values()), len(asked),
                        ", ".join(f"{k} {v}" for k, v in sorted(failures.items())))
        return list(replies)

    def _count(self, target: Target, outcome: str, failures: Counter[str]) -> None:
        self.metrics.requests.labels(target=target.name, outcome=outcome).inc()
        if outcome != "ok":
            failures[outcome] += 1

    async def _judge(self, answered: list[tuple[Target, ProbeSet, Probe, Reply]], index: int, at: float) -> list[Observation]:
        events = [
            Event(
                event_id=f"probe/{t.name}/{ps.label}/{p.id}/{index}",
                timestamp=at,
                prompt=p.prompt,
                response=r.text,
                model=t.model,
                route=PROBE_ROUTE,
                labels={"probe_set": ps.label, "probe_id": p.id, "probe_kind": p.kind},
            )
            for t, ps, p, r in answered
        ]
        started = time.perf_counter()
        verdicts = await asyncio.to_thread(self.judge, events)
        self.metrics.judge_seconds.observe(time.perf_counter() - started)
        observations = []
        harmful: dict[tuple[str, str], list[bool]] = {}
        for (t, ps, p, r), v in zip(answered, verdicts):
            refused = v.refused is not False  # an empty answer (no refusal verdict) did not answer either
            observations.append(Observation(
                target=t.name, probe_set=ps.label, probe_id=p.id, kind=p.kind, prompt=p.prompt,
                answer=self.redactor.cut(r.text, self.settings.answer_chars), refused=refused, harmful=v.response_flagged, at=at,
            ))
            harmful.setdefault((t.name, ps.label), []).append(bool(v.response_flagged))
            self.metrics.answer_chars.labels(target=t.name, probe_set=ps.label).observe(len(r.text))
            if p.kind == "should_answer" and p.answer_matches(r.text) is False:
                self.metrics.expectation_misses.labels(target=t.name, probe_set=ps.label).inc()
        for (target, label), flags in harmful.items():
            self.metrics.harmful.labels(target=target, probe_set=label).set(sum(flags) / len(flags))
        return observations

    def reset(self, kind: str, scope: str, key: str) -> bool:
        """Re-baseline one key of the detector (:meth:`ProbeDetector.reset`). A round still asking folds its answers
        into the new reference; one observed already but not yet applied loses that key's verdict (:meth:`still_current`)."""
        with self._lock:
            self._resets += 1
            self._reset_in[(kind, scope, key)] = self._resets
            return self.detector.reset(kind, scope, key)

    def still_current(self, result: RoundResult) -> list[Condition]:
        """``result``'s conditions less those of keys re-baselined since they were computed.

        Why: a round's conditions reach the alert engine later, in the worker; a reviewer's false alarm
        in between must not be re-opened by a verdict on the reference it just dropped."""
        with self._lock:
            return [c for c in result.conditions if self._reset_in.get((c.kind, c.scope, c.key), 0) <= result.generation]

    def state_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "rounds": self._rounds,
                "detector": self.detector.state_dict(),
                "budgets": {name: b.state_dict() for name, b in self._budgets.items()},
            }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with self._lock:
            self._restore_spending(state)
            self.detector.load_state_dict(state["detector"])

    def refit_from(self, state: dict[str, Any]) -> None:
        """What a restore under another judge keeps: the rounds and the day's spending (else a restart could spend
        a day's tokens twice), not the references, which are that judge's verdicts."""
        with self._lock:
            self._restore_spending(state)

    def _restore_spending(self, state: dict[str, Any]) -> None:
        self._rounds = state["rounds"]
        for name, budget_state in state["budgets"].items():
            if name in self._budgets:
                self._budgets[name].load_state_dict(budget_state)
