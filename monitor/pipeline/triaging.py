"""Wire triage into a running service: the judge gets the online layer, the worker feeds the recent events."""

from __future__ import annotations

from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from monitor.privacy.redact import Redactor
from monitor.triage.alertmanager import AlertmanagerSilencer
from monitor.triage.console import Triage
from monitor.triage.online import TriageJudge
from monitor.triage.recent import RecentEvents

if TYPE_CHECKING:
    from monitor.pipeline.service import MonitorService

_ATTACHED: WeakKeyDictionary[MonitorService, Triage] = WeakKeyDictionary()


def attach_triage(service: MonitorService) -> Triage:
    """Wrap the service's judge in the online layer, register the recent-events listener, and restore
    what was triaged before (from the state store). Call after the service's snapshot was restored."""
    s = service.settings
    judge = TriageJudge(service.scorer.judge)
    service.scorer.judge = judge
    recent = RecentEvents(seed=s.seed)
    service.batch_listeners.append(recent)
    silencer = AlertmanagerSilencer(s.alertmanager_urls) if s.alertmanager_urls else None
    triage = Triage(service, judge, recent, judge.inner.categories, Redactor(s.redaction), s.store_raw_text, silencer)
    _ATTACHED[service] = triage
    return triage


def triage_of(service: MonitorService) -> Triage | None:
    """The triage attached to ``service`` (None in the scale-out roles, which do not attach it)."""
    return _ATTACHED.get(service)
