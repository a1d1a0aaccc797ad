"""Every detector the service can run, by name: a new detector is a module and one line here.

Each entry builds the detector from the settings (its own fields) and the taxonomy. The names and
their order are ``config.ALL_DETECTORS`` (the order conditions reach the alert engine); the
settings validate ``detectors`` against that list and a test checks that both agree. A detector
says what its alerts are called (``alert_kind``) and what else it can do by the Protocols it
implements (:class:`~monitor.drift.base.ClusterQueries`), not by its class.
"""

from __future__ import annotations

from typing import Callable

from monitor.config import ALL_DETECTORS, Settings
from monitor.drift.category_share_adwin import AdwinShareDetector
from monitor.drift.base import Detector
from monitor.drift.over_refusal import OverRefusalDetector
from monitor.drift.unsafe_response_rate import UnsafeResponseRateDetector
from monitor.drift.embedding_drift import EmbeddingMMDDetector
from monitor.drift.emerging_clusters import EmergingClusterDetector, EmergingClusterSettings
from monitor.drift.feedback_disagreement import FeedbackDisagreementDetector
from monitor.drift.category_share import CategoryShareDetector
from monitor.drift.rate_change import RateChangeConfig
from monitor.drift.judge_disagreement import SecondOpinionDisagreementDetector
from monitor.drift.suite import DetectorSuite
from monitor.privacy.redact import Redactor
from monitor.taxonomy import Taxonomy, load_taxonomy

DetectorFactory = Callable[[Settings, Taxonomy], Detector]


def _rates(s: Settings) -> RateChangeConfig:
    """The concept-shift detectors share one tuning (warm-up, false-alarm budget, ratio to detect)."""
    return RateChangeConfig(warmup=s.concept_warmup_trials, arl=s.concept_arl_trials, ratio=s.concept_shift_ratio)


REGISTRY: dict[str, DetectorFactory] = {
    "category_share": lambda s, t: CategoryShareDetector(
        t.harm_ids,
        warmup_events=s.share_warmup_events,
        expected_run_time=s.share_expected_run_time,
        ratio=s.share_shift_ratio,
        share_weighting=s.share_weighting,
    ),
    "category_share_adwin": lambda s, t: AdwinShareDetector(t.harm_ids, delta=s.adwin_delta, warmup_events=s.share_warmup_events),
    "embedding_drift": lambda s, t: EmbeddingMMDDetector(
        reference_events=s.embedding_reference_events,
        window_events=s.embedding_window_events,
        expected_run_time=s.embedding_expected_run_time,
        seed=s.seed,
    ),
    "emerging_clusters": lambda s, t: EmergingClusterDetector(
        EmergingClusterSettings(
            reference_events=s.emerging_reference_events,
            calibration_events=s.emerging_calibration_events,
            min_share=s.emerging_min_share,
            max_clusters=s.emerging_max_clusters,
        ),
        redactor=Redactor(s.redaction),
        store_raw_text=s.store_raw_text,
    ),
    "feedback_disagreement": lambda s, t: FeedbackDisagreementDetector(
        t.ids, memory=s.feedback_memory, config=_rates(s), max_source_share=s.feedback_max_source_share
    ),
    "judge_disagreement": lambda s, t: SecondOpinionDisagreementDetector(
        _rates(s), uncertain_above=s.second_judge_uncertain_above if s.second_judge_uncertain_rate is not None else None
    ),
    "unsafe_response_rate": lambda s, t: UnsafeResponseRateDetector(_rates(s)),
    "over_refusal": lambda s, t: OverRefusalDetector(_rates(s)),
}


def build_detectors(settings: Settings, taxonomy: Taxonomy | None = None) -> DetectorSuite:
    """The detectors named in ``settings.detectors``, in the fixed order of ``ALL_DETECTORS``."""
    taxonomy = taxonomy or load_taxonomy()
    return DetectorSuite([REGISTRY[name](settings, taxonomy) for name in ALL_DETECTORS if name in settings.detectors])
