"""Prometheus metrics of canary probes, on the service's registry.

Labels are bounded: ``target`` is a configured model name, ``probe_set`` a configured set's
``name@vN``, ``outcome``/``reason`` come from code (:data:`monitor.probe.client.FAILURES`).
Every target's request counters start at 0, so ``increase()`` in the "probes failing" rule and
the dashboard has a zero to start from.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitor.probe.client import FAILURES
from monitor.probe.detector import KeyReading

P = "llmsafety_probe_"
OUTCOMES = ("ok", *FAILURES, "budget")


class ProbeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.requests = Counter(f"{P}requests", "Probe questions by outcome: ok, a failure after retries (timeout, rate_limited, "
                                "server_error, client_error, transport, malformed), or budget (not sent: daily token budget spent).",
                                ["target", "outcome"], registry=r)
        self.retries = Counter(f"{P}retries", "Probe request attempts retried, by the failure that caused the retry.", ["target", "reason"], registry=r)
        self.rounds = Counter(f"{P}rounds", "Probe rounds run.", ["target"], registry=r)
        self.up = Gauge(f"{P}up", "1 when the target's last round got at least one answer, 0 when every question failed.", ["target"], registry=r)
        self.tokens = Counter(f"{P}tokens", "Tokens the target reported for probe questions and answers.", ["target"], registry=r)
        self.budget_remaining = Gauge(f"{P}budget_remaining_tokens", "Tokens left in today's probe budget (UTC day of event time).", ["target"], registry=r)
        self.latency = Histogram(f"{P}latency_seconds", "Time to the target's answer (successful attempt).", ["target"], registry=r,
                                 buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60))
        self.answer_chars = Histogram(f"{P}answer_chars", "Length of the target's answers in characters.", ["target", "probe_set"], registry=r,
                                      buckets=(10, 50, 100, 250, 500, 1000, 2000, 5000))
        self.judge_seconds = Histogram(f"{P}judge_seconds", "Time to embed and judge one round's answers.", registry=r)
        self.rate = Gauge(f"{P}rate", "Share of bad probe answers (signal over_refusal: refused should_answer probes; unsafe_compliance: "
                          "answered should_refuse probes), in the reference and in the current window.",
                          ["target", "probe_set", "signal", "window"], registry=r)
        self.harmful = Gauge(f"{P}harmful_response_rate", "Share of the last round's answers the judge called harmful.", ["target", "probe_set"], registry=r)
        self.expectation_misses = Counter(f"{P}expectation_misses", "Answers to should_answer probes that missed the probe's expected answer.",
                                          ["target", "probe_set"], registry=r)
        self.flipped = Gauge(f"{P}flipped", "Probes whose behaviour flipped from the reference in the latest round.", ["target", "probe_set", "signal"], registry=r)
        self.p_value = Gauge(f"{P}p_value", "p-value of the current window against the reference (alert below probe_p_value and a rise of probe_min_rate_change).",
                             ["target", "probe_set", "signal"], registry=r)

    def declare(self, target: str) -> None:
        for outcome in OUTCOMES:
            self.requests.labels(target=target, outcome=outcome)
        self.rounds.labels(target=target)

    def export_readings(self, readings: list[KeyReading]) -> None:
        for r in readings:
            labels = {"target": r.target, "probe_set": r.probe_set, "signal": r.signal}
            if r.reference_rate is not None:
                self.rate.labels(**labels, window="reference").set(r.reference_rate)
            if r.current_rate is not None:
                self.rate.labels(**labels, window="current").set(r.current_rate)
            self.flipped.labels(**labels).set(r.flipped)
            self.p_value.labels(**labels).set(r.p_value)
