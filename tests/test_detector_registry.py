"""The detector registry: one entry per configurable name, each detector saying what its alerts are."""

from __future__ import annotations

import inspect

from monitor.config import ALL_DETECTORS, Settings, default
from monitor.drift.base import CategoryReferences, ClusterLabels, ClusterQueries, Detector, FeedbackSink, Resettable
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


def test_the_service_and_the_triage_console_find_detectors_by_capability():
    """Routes and reviewer actions look detectors up by Protocol: each capability has its detector."""
    suite = build_detectors(Settings(detectors=list(ALL_DETECTORS)))
    names = {cap: [d.name for d in suite.having(cap)] for cap in (ClusterLabels, CategoryReferences, Resettable, FeedbackSink)}
    assert names == {
        ClusterLabels: ["emerging_clusters"],
        CategoryReferences: ["category_share"],
        Resettable: ["category_share"],
        FeedbackSink: ["feedback_disagreement"],
    }


def test_detector_defaults_are_the_settings_defaults():
    """A detector built without arguments tunes itself as the shipped settings do (one place per default)."""
    from monitor.drift.category_share import CategoryShareDetector
    from monitor.drift.embedding_drift import EmbeddingMMDDetector
    from monitor.drift.emerging_clusters import EmergingClusterSettings
    from monitor.drift.rate_change import RateChangeConfig

    share = inspect.signature(CategoryShareDetector).parameters
    assert share["warmup_events"].default == default("share_warmup_events") == Settings().share_warmup_events
    assert inspect.signature(EmbeddingMMDDetector).parameters["window_events"].default == Settings().embedding_window_events
    assert EmergingClusterSettings().reference_events == Settings().emerging_reference_events
    assert RateChangeConfig().arl == Settings().concept_arl_trials
