"""Bounded scopes and label values for model and route.

Only names on the configured allow-lists get their own scope and metric label value; any other
name becomes ``other`` and a missing one ``none``, so label cardinality is fixed by configuration,
never by traffic.

>>> r = ScopeResolver(models=["gpt-4o"], routes=[])
>>> r.labels("gpt-4o", "/chat"), r.labels("llama", None)
(('gpt-4o', 'other'), ('other', 'none'))
>>> r.scopes("gpt-4o", "/chat")
('global', 'model=gpt-4o')
>>> r.exists("model=other"), r.exists("model=llama"), r.exists("route=none")
(True, False, False)
"""

from __future__ import annotations

from typing import Sequence

GLOBAL = "global"
OTHER = "other"
NONE = "none"


class ScopeResolver:
    def __init__(self, models: Sequence[str], routes: Sequence[str]) -> None:
        self.models = frozenset(models)
        self.routes = frozenset(routes)

    @staticmethod
    def _value(name: str | None, allowed: frozenset[str]) -> str:
        if name is None:
            return NONE
        return name if name in allowed else OTHER

    def labels(self, model: str | None, route: str | None) -> tuple[str, str]:
        return self._value(model, self.models), self._value(route, self.routes)

    def scopes(self, model: str | None, route: str | None) -> tuple[str, ...]:
        """``global`` plus one scope per configured dimension (unlisted names pool into ``other``)."""
        model_label, route_label = self.labels(model, route)
        out = [GLOBAL]
        if self.models:
            out.append(f"model={model_label}")
        if self.routes:
            out.append(f"route={route_label}")
        return tuple(out)

    def exists(self, scope: str) -> bool:
        """Whether an event can fall in ``scope``: ``global``, or a listed, ``other`` or ``none`` value of a
        configured dimension. A read of any other scope would answer empty, as if that traffic were quiet."""
        if scope == GLOBAL:
            return True
        name, _, value = scope.partition("=")
        allowed = {"model": self.models, "route": self.routes}.get(name)
        return bool(allowed) and (value in allowed or value in (OTHER, NONE))
