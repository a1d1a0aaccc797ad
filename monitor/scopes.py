"""Bounded scopes and label values for model and route.

Only names on the configured allow-lists get their own scope and metric label value; any other
name becomes ``other`` and a missing one ``none``, so label cardinality is fixed by configuration,
never by traffic.

>>> r = ScopeResolver(models=["gpt-4o"], routes=[])
>>> r.labels("gpt-4o", "/chat"), r.labels("llama", None)
(('gpt-4o', 'other'), ('other', 'none'))
>>> r.scopes("gpt-4o", "/chat")
('global', 'model=gpt-4o')
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
