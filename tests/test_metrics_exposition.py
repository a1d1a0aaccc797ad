"""What /metrics shows before anything happened: build info, process metrics, alert gauges at 0."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitor import __version__
from monitor.config import Settings
from monitor.drift.registry import build_detectors
from monitor.pipeline.service import MonitorService


def _samples(registry) -> dict[tuple[str, tuple], float]:
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_fresh_service_exports_build_info_process_metrics_and_zero_alert_gauges():
    settings = Settings(judge="prototype")
    scorer = SimpleNamespace(judge=SimpleNamespace(version="proto-7"), embedder=None)
    detectors = build_detectors(settings)
    service = MonitorService(settings, scorer, detectors)  # type: ignore[arg-type]
    samples = _samples(service.metrics.registry)
    build = {dict(k[1])["judge_version"]: (dict(k[1]), v) for k, v in samples.items() if k[0] == "llmsafety_build_info"}
    assert build["proto-7"] == ({"version": __version__, "judge_version": "proto-7", "embedding_model": settings.embedding_model}, 1.0)
    names = {name for name, _ in samples}
    assert "process_cpu_seconds_total" in names and "process_resident_memory_bytes" in names and "python_info" in names
    firing = {(dict(k[1])["kind"], dict(k[1])["severity"]): v for k, v in samples.items() if k[0] == "llmsafety_alerts_firing"}
    kinds = set(detectors.alert_kinds())
    assert "emerging_category" in kinds
    assert firing == {(kind, sev): 0.0 for kind in kinds for sev in ("info", "warning", "critical")}


def test_detector_series_are_read_at_scrape_time_and_leave_with_their_suite():
    from monitor.export.metrics import DetectorView, MonitorMetrics
    from monitor.signals import Reading

    metrics = MonitorMetrics()
    shown = {"a": DetectorView((Reading("over_refusal", "global", "", 1.5, 4.0, False),), {("global", "emerging"): 2})}
    forget_a = metrics.detectors.watch(lambda: shown["a"])
    metrics.detectors.watch(lambda: DetectorView((Reading("over_refusal", "model=m", "", 5.0, 4.0, True),)))
    samples = _samples(metrics.registry)
    assert samples[("llmsafety_detector_statistic", (("detector", "over_refusal"), ("key", ""), ("scope", "global")))] == 1.5
    assert samples[("llmsafety_detector_active", (("detector", "over_refusal"), ("key", ""), ("scope", "model=m")))] == 1.0
    assert samples[("llmsafety_emerging_clusters", (("scope", "global"), ("status", "emerging")))] == 2.0
    shown["a"] = DetectorView((Reading("over_refusal", "global", "", 4.5, 4.0, True),))  # the next batch
    assert _samples(metrics.registry)[("llmsafety_detector_active", (("detector", "over_refusal"), ("key", ""), ("scope", "global")))] == 1.0
    forget_a()  # its partition moved to another process
    scopes = {dict(k[1]).get("scope") for k in _samples(metrics.registry) if k[0].startswith("llmsafety_detector_")}
    assert scopes == {"model=m"}


def test_report_late_events_are_read_from_the_reservoir_at_scrape_time_and_leave_with_its_service():
    import numpy as np

    from monitor.events import Event, ScoredEvent
    from monitor.judge.verdict import Verdict
    from monitor.pipeline.builder import attach_reservoir
    from monitor.scopes import ScopeResolver

    settings = Settings(judge="prototype", report_windows_kept=1)
    scorer = SimpleNamespace(judge=SimpleNamespace(version="proto-7"), embedder=None, scopes=ScopeResolver([], []))
    service = MonitorService(settings, scorer, build_detectors(settings))  # type: ignore[arg-type]
    reservoir = attach_reservoir(service)
    late = ("llmsafety_report_events_late_total", ())
    assert _samples(service.metrics.registry)[late] == 0.0
    verdict = Verdict("t", "safe", {}, 0.1, False)
    reservoir([ScoredEvent(Event(f"e{t}", t, "hi"), 1.0, np.ones(4, np.float32), None, verdict) for t in (7200.0, 10.0, 20.0)])
    assert reservoir.late_dropped == 2 and _samples(service.metrics.registry)[late] == 2.0
    service.close()  # a detector partition given up: its next owner restores the count and exports it
    assert _samples(service.metrics.registry)[late] == 0.0
