"""Where a person reads an alert's evidence: the alert itself, its cluster, and the drift report covering it."""

from __future__ import annotations

from monitor.alerts.engine import Alert
from monitor.export.report_link import report_link

# Kinds whose key is an emerging-cluster id with its own evidence page at /v1/clusters/{id}.
CLUSTER_KINDS = frozenset({"emerging_category"})


def evidence_links(alert: Alert, base_url: str = "") -> dict[str, str]:
    """Links to evidence pages on this service; ``base_url`` "" gives root-relative links.

    >>> alert = Alert("3f2a", "emerging_category/global/c01", "emerging_category", "global", "c01", "c01",
    ...               "warning", "firing", 1767225600.0, None, 1767225600.0, "new cluster", {})
    >>> sorted(evidence_links(alert, "http://monitor:8000"))
    ['alert', 'cluster', 'report']
    >>> evidence_links(alert)["cluster"]
    '/v1/clusters/c01'
    """
    base = base_url.rstrip("/")
    out = {"alert": f"{base}/v1/alerts/{alert.id}"}
    if alert.kind in CLUSTER_KINDS and alert.key:
        out["cluster"] = f"{base}/v1/clusters/{alert.key}"
    out["report"] = report_link(alert, base)
    return out
