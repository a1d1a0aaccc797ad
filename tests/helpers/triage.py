"""A monitor on synthetic judged traffic for triage tests: real service, detectors, alert engine and
triage, with the stream's own verdicts as the shipped judge (no embedding model)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from monitor.config import Settings
from monitor.drift.category_share import CategoryShareDetector
from monitor.drift.suite import DetectorSuite
from monitor.events import ScoredEvent
from monitor.judge.verdict import JudgeInput, Verdict
from monitor.pipeline.scoring import Scorer
from monitor.pipeline.service import MonitorService
from monitor.scopes import ScopeResolver
from monitor.state.memory import MemoryStateStore
from monitor.state.store import StateStore
from monitor.pipeline.triaging import attach_triage
from tests.helpers.scored import verdict
from tests.test_drift_emerging import KNOWN, World, detector, stream

CHANGE_AT = 6000


class TableJudge:
    """Says what the synthetic world's judge said about each embedding (it never learned the new category)."""

    version = "table-1"
    categories = KNOWN

    def __init__(self) -> None:
        self.table: dict[bytes, Verdict] = {}

    def learn(self, events: Sequence[ScoredEvent]) -> None:
        self.table.update((np.asarray(e.prompt_embedding, np.float32).tobytes(), e.verdict) for e in events)

    def judge(self, batch: Sequence[JudgeInput]) -> list[Verdict]:
        return [self.table.get(np.asarray(b.prompt_embedding, np.float32).tobytes(), verdict()) for b in batch]


def synthetic_service(store: StateStore | None = None, restore: dict | None = None, **settings: object) -> MonitorService:
    """``restore``: a detector snapshot (``state_dict``) loaded before triage attaches, as the service starts."""
    settings.setdefault("sampling", "off")
    service = MonitorService(Settings(**settings), Scorer(None, TableJudge(), ScopeResolver([], [])),
                             DetectorSuite([CategoryShareDetector(KNOWN, warmup_events=2000), detector()]),
                             store=store or MemoryStateStore())
    if restore is not None:
        service.load_state_dict(restore)
    attach_triage(service)
    return service


def feed(service: MonitorService, events: Sequence[ScoredEvent], batch: int = 64) -> None:
    """Judge each batch with the service's judge (the online layer included) and run the detectors on it."""
    inner = service.scorer.judge.inner  # type: ignore[attr-defined]
    inner.learn(events)
    for start in range(0, len(events), batch):
        chunk = list(events[start : start + batch])
        verdicts = service.scorer.judge.judge([JudgeInput(e.event.prompt, e.prompt_embedding) for e in chunk])
        for e, v in zip(chunk, verdicts):
            e.verdict = v
        service.process_scored(chunk)


def drifting(n: int = 9000, seed: int = 1, world: World | None = None) -> list[ScoredEvent]:
    """Benign and known traffic with a new category from ``CHANGE_AT`` on (2%, all from model=a)."""
    return stream(n, seed=seed, change_at=CHANGE_AT, world=world or World.make())


def emerging_alert(service: MonitorService, scope: str = "global"):
    return next(a for a in service.alerts("firing") if a.kind == "emerging_category" and a.scope == scope)
