"""The monitor's own canary probe calls, recognised in a gateway's logs and traces by the end-user name
they carry (:func:`monitor.probe.client.probe_end_user`), so a call the prober already judges is not
ingested a second time as user traffic.

>>> calls = ProbeCalls("llmsafety-canary-probe-abc")
>>> calls.named("llmsafety-canary-probe-abc"), calls.named("alice"), calls.named(7), ProbeCalls(None).named("x")
(True, False, False, False)
"""

from __future__ import annotations

import hmac
from typing import Any


class ProbeCalls:
    """``name``: the end user this deployment's probes name (None: no call is a probe). Compared in
    constant time: the name is keyed, and a gateway user who learned it could hide from the monitor."""

    def __init__(self, name: str | None) -> None:
        self._name = name.encode() if name else None

    @property
    def enabled(self) -> bool:
        return self._name is not None

    def named(self, end_user: Any) -> bool:
        return (self._name is not None and isinstance(end_user, str)
                and hmac.compare_digest(end_user.encode("utf-8", "replace"), self._name))
