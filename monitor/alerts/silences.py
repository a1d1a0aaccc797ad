"""Webhook and Slack notices held back while a person's silence covers their alert.

Why: Alertmanager applies the silence the triage console pushes to it, and when the silence ends it
pages for an alert that still fires. The monitor's own webhooks and Slack have no silences of their
own, so alert delivery asks ``silenced(notice)`` before it sends to them, and this holds back what a
silence covers, the way Alertmanager would:

* a firing notice a silence covers waits; once the silence has ended it goes out (alert delivery
  asks with every batch's transitions and at its resend interval) if its alert still fires by then;
* a resolve goes out, silenced or not, when the receiver heard its alert firing (a person reading
  the channel should see it end); a resolve of an alert whose firing notice is still held never
  goes out, and neither does that firing notice: the silence made both obsolete, and they are counted;
  so is a held notice whose alert is no longer firing when the service restarts (:meth:`retain`).

The held notices are part of the service's snapshot (:meth:`state_dict`): a restart neither loses a
page that is due when the silence ends nor sends a resolve of an alert the receiver never heard firing.

>>> from monitor.alerts.notice import Notice
>>> def notice(key, status): return Notice(key, f"category_share/global/{key}", "category_share", "global", key,
...                                        key, "warning", status, 0.0, None, "", {})
>>> silenced = {"weapons", "fraud"}
>>> hold = SilenceHold(capacity=100, silenced=lambda n: n.key in silenced)
>>> send, obsolete = hold.admit([notice("weapons", "firing"), notice("fraud", "firing"), notice("hate", "firing")])
>>> [n.key for n in send], obsolete
(['hate'], 0)
>>> hold.admit([notice("fraud", "resolved")])  # it ended while silenced: nobody hears of it
([], 2)
>>> silenced.clear()  # the silence ends: the next call sends what it still holds
>>> [(n.key, n.status) for n in hold.admit([])[0]]
[('weapons', 'firing')]
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import asdict
from typing import Any, Callable, Sequence

from monitor.alerts.notice import Notice

log = logging.getLogger(__name__)


class SilenceHold:
    """Which status-change notices go to targets without silences of their own now, and which wait.

    ``capacity`` bounds the held notices (one per alert fingerprint: the latest); past it the oldest
    is given up, counted like any other notice a silence kept from going out. ``silenced`` may be set
    after construction (the service restores the hold before the triage console that answers it
    exists); until then new notices pass and held ones stay held. A ``silenced`` that raises counts as
    "not silenced": a broken silence lookup must not swallow pages.
    """

    def __init__(self, capacity: int, silenced: Callable[[Notice], bool] | None = None) -> None:
        self.silenced = silenced
        self.capacity = capacity
        self._held: OrderedDict[str, Notice] = OrderedDict()  # fingerprint -> the firing notice held back
        self._lock = threading.Lock()  # the worker thread and a reviewer's action (service.apply) both deliver

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def admit(self, notices: Sequence[Notice]) -> tuple[list[Notice], int]:
        """The notices to send now, in order: held ones whose silence has ended, then those of ``notices`` no
        silence keeps back; and how many notices the silences made obsolete (never to be sent)."""
        with self._lock:
            ended = [fp for fp, n in self._held.items() if not self._covers(n)] if self.silenced is not None else []
            out = [self._held.pop(fp) for fp in ended]
            obsolete = 0
            for notice in notices:
                held = self._held.pop(notice.fingerprint, None) is not None
                obsolete += held
                if notice.status != "firing":
                    if held:
                        obsolete += 1  # the receiver never heard it firing
                    else:
                        out.append(notice)
                elif not self._covers(notice):
                    out.append(notice)
                else:
                    self._held[notice.fingerprint] = notice
                    if len(self._held) > self.capacity:
                        self._held.popitem(last=False)
                        obsolete += 1
            return out, obsolete

    def state_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"held": [asdict(n) for n in self._held.values()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        known = set(Notice.__dataclass_fields__)
        with self._lock:
            self._held.clear()
            for fields in state["held"]:
                try:
                    notice = Notice(**{k: v for k, v in fields.items() if k in known})
                except TypeError as exc:  # saved by a version whose notices lacked a field this one needs
                    log.warning("dropping a held alert notice that does not restore: %s", exc)
                    continue
                self._held[notice.fingerprint] = notice

    def retain(self, firing: set[str]) -> int:
        """Keep only held notices whose alert (fingerprint) still fires; how many went (counted as obsolete).
        Why: restoring state can resolve alerts (a refitted detector) before delivery listens."""
        with self._lock:
            gone = [fp for fp in self._held if fp not in firing]
            for fp in gone:
                del self._held[fp]
            return len(gone)

    def _covers(self, notice: Notice) -> bool:
        if self.silenced is None:
            return False
        try:
            return bool(self.silenced(notice))
        except Exception:
            log.exception("silence lookup failed for alert %s; sending its notice", notice.id)
            return False
