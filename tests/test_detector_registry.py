"""The detector registry: one entry per configurable name, each detector saying what its alerts are."""

from __future__ import annotations

from monitor.config import ALL_DETECTORS, Settings
from monitor.drift.base import ClusterQueries, Detector
from monitor.drift.registry import REGISTRY, build_detectors


def test_registry_and_settings_name_the_same_detectors_in_the_same_order():
    assert tuple(REGISTRY) == ALL_DETECTORS


def test_every_detector_builds_from_default_settings_and_keeps_the_contract():
    suite = build_detectors(Settings(detectors=list(ALL_DETECTORS)))
    assert [d.name for d in suite.detectors] == list(ALL_DETECTORS)
    for detector in suite.detectors:
        assert isinstance(detector, Detector), detector.name
        assert detector.alert_kind and isinstance(detector.alert_kind, str)
    kinds = dict(zip(ALL_DETECTORS, suite.alert_kinds()))
    assert kinds["emerging_clusters"] == "emerging_category" and kinds["over_refusal"] == "over_refusal"
    clustering = suite.cluster_queries()
    assert isinstance(clustering, ClusterQueries) and clustering.name == "emerging_clusters"


def test_a_suite_without_a_clustering_detector_answers_no_cluster_queries():
    assert build_detectors(Settings(detectors=["category_share", "over_refusal"])).cluster_queries() is None
