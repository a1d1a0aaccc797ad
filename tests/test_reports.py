"""Drift reports: the windowed reservoir, the Evidently report, the HTTP route, the CLI and alert links.

Drift decisions are read from the report's JSON. Embeddings are synthetic 16-d unit vectors (one
cluster per category), except in the HTTP tests, which run the real service and embedder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
from html import escape
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from monitor.alerts.engine import Alert
from monitor.config import Settings
from monitor.events import Event, ScoredEvent
from monitor.export.report import ReportError, build_report
from monitor.export.report_link import report_link, report_windows
from monitor.export.reservoir import WindowReservoir
from monitor.export.windows import TimeWindow, WindowError, parse_window
from monitor.taxonomy import SAFE
from monitor.pipeline.builder import build_service
from monitor.scopes import ScopeResolver
from tests.helpers.scored import verdict
from tests.helpers.server import running_server

T0 = 1767225600.0  # 2026-01-01T00:00Z
HOUR = 3600.0
CATEGORIES = (SAFE, "violence_aiding_and_abetting_incitement", "self_harm", "privacy_violation")
BASE = (0.85, 0.05, 0.05, 0.05)
MORE_SELF_HARM = (0.75, 0.05, 0.15, 0.05)
CENTERS = np.random.default_rng(1).normal(size=(len(CATEGORIES) + 1, 16))  # the last one: a topic the judge calls safe
NEW_TOPIC = len(CATEGORIES)
CANNED = np.full(16, 0.25, np.float32)  # the embedding of one canned reply given to every prompt


def event(
    i: int, t: float, category: str, rng: np.random.Generator, model: str = "gpt-4o", center: int | None = None
) -> ScoredEvent:
    """A judged event of ``category`` with a response; flagged prompts are refused 70% of the time."""
    c = CATEGORIES.index(category) if center is None else center
    emb = (CENTERS[c] + rng.normal(scale=0.5, size=16)).astype(np.float32)
    emb /= np.linalg.norm(emb)
    refused = category != SAFE and bool(rng.random() < 0.7)
    return ScoredEvent(
        Event(f"e{t:.3f}-{i}", t, f"question {i} about {category}, mail me at user{i}@example.com",
              "I can't help with that." if refused else "Sure, here you go.", model=model),
        1.0,
        emb,
        emb,
        verdict(category, response_unsafe=False, refused=refused),
    )


def hour_of_events(hour: int, n: int, shares: tuple[float, ...], seed: int, new_topic: float = 0.0) -> list[ScoredEvent]:
    """``n`` events over one hour; a ``new_topic`` fraction of the safe ones sits far from every known category."""
    rng = np.random.default_rng(seed)
    cats = rng.choice(len(CATEGORIES), size=n, p=shares)
    novel = (cats == 0) & (rng.random(n) < new_topic)
    return [
        event(i, T0 + hour * HOUR + i * HOUR / n, SAFE if new else CATEGORIES[c], rng, center=NEW_TOPIC if new else None)
        for i, (c, new) in enumerate(zip(cats, novel))
    ]


@pytest.fixture(scope="module")
def shifted_stream() -> WindowReservoir:
    """Two stationary hours, then an hour where self-harm triples (at the expense of safe traffic)."""
    reservoir = WindowReservoir(per_window=1500, max_windows=4, seed=0)
    for hour, shares in enumerate((BASE, BASE, MORE_SELF_HARM)):
        reservoir(hour_of_events(hour, 1500, shares, seed=hour))
    return reservoir


@pytest.fixture(scope="module")
def shifted_report(shifted_stream):
    hour = lambda h: shifted_stream.sample(TimeWindow(T0 + h * HOUR, T0 + (h + 1) * HOUR))  # noqa: E731
    return build_report(hour(0), hour(2), max_rows=1000, tsne_points=50).to_json()


@pytest.fixture(scope="module")
def stationary_report(shifted_stream):
    hour = lambda h: shifted_stream.sample(TimeWindow(T0 + h * HOUR, T0 + (h + 1) * HOUR))  # noqa: E731
    return build_report(hour(0), hour(1), max_rows=1000, tsne_points=50).to_json()


# ---------------------------------------------------------------------- the report
def test_shifted_category_is_drifted(shifted_report):
    checks = shifted_report["checks"]
    assert checks["category"]["drifted"] and checks["category"]["method"] == "chisquare"
    assert checks["category=self_harm"]["drifted"]
    assert shifted_report["drifted_categories"] == ["self_harm"]
    assert not checks["category=privacy_violation"]["drifted"]
    assert checks["unsafe"]["drifted"] and checks["refused"]["drifted"]
    shares = shifted_report["shares"]["category"]["self_harm"]
    assert shares["reference"] < 0.08 < 0.12 < shares["current"]


def test_stationary_pair_is_not_drifted(stationary_report):
    checks = stationary_report["checks"]
    assert stationary_report["drifted_categories"] == []
    for name in ("category", "unsafe", "unsafe_response", "refused", "embedding:prompt", "embedding:response"):
        assert checks[name]["drifted"] is False, name


def test_new_topic_shows_as_embedding_drift_only():
    """Traffic the judge calls safe but that sits where no earlier prompt did: only the embeddings move."""
    reservoir = WindowReservoir(per_window=800, seed=0)
    reservoir(hour_of_events(0, 800, BASE, seed=10))
    reservoir(hour_of_events(1, 800, BASE, seed=11, new_topic=0.3))
    hour = lambda h: reservoir.sample(TimeWindow(T0 + h * HOUR, T0 + (h + 1) * HOUR))  # noqa: E731
    report = build_report(hour(0), hour(1), tsne_points=50).to_json()
    assert report["checks"]["embedding:prompt"]["drifted"] and report["checks"]["embedding:prompt"]["score"] > 0.6
    assert report["checks"]["embedding:prompt"]["method"] == "model (bootstrap, quantile 0.95)"  # fewer than 1000 rows
    assert not report["checks"]["category=self_harm"]["drifted"] and report["drifted_categories"] == []


def test_report_json_carries_evidently_results_and_says_it_sampled(shifted_report):
    json.dumps(shifted_report, allow_nan=False)  # strict JSON: what the API sends
    value_drifts = [m for m in shifted_report["evidently"]["metrics"] if m["config"]["type"].endswith(":ValueDrift")]
    by_column = {m["config"]["column"]: m["value"] for m in value_drifts}
    assert by_column["category=self_harm"] == shifted_report["checks"]["category=self_harm"]["score"] < 1e-6
    for side in ("reference", "current"):
        assert shifted_report[side]["rows"] == 1000 and shifted_report[side]["sampled"] is True
        assert shifted_report[side]["events"] == pytest.approx(1500)
    assert "a uniform sample of 1,000 of ~1,500 events analysed" in shifted_report["notes"][1]


def test_examples_of_drifted_categories_are_redacted_current_prompts(shifted_report):
    examples = shifted_report["examples"]["self_harm"]
    assert 1 <= len(examples) <= 5
    assert all("about self_harm" in text and "<email>" in text and "@" not in text for text in examples)


def test_report_needs_enough_events_and_names_the_side(shifted_stream):
    some = shifted_stream.sample(TimeWindow(T0, T0 + HOUR))
    nothing = shifted_stream.sample(TimeWindow(T0 - 10 * HOUR, T0 - 9 * HOUR))
    with pytest.raises(ReportError) as err:
        build_report(some, nothing)
    assert err.value.parameter == "current" and "only 0 sampled events" in str(err.value)
    with pytest.raises(ReportError, match="embedding_method: must be one of"):
        build_report(some, some, embedding_method="cosine")  # type: ignore[arg-type]


def test_mmd_method_is_capped_and_uses_the_upper_tail(shifted_stream):
    hour = lambda h: shifted_stream.sample(TimeWindow(T0 + h * HOUR, T0 + (h + 1) * HOUR))  # noqa: E731
    report = build_report(hour(0), hour(2), max_rows=300, embedding_method="mmd", tsne_points=30).to_json()
    check = report["checks"]["embedding:prompt"]
    assert check["method"] == "mmd (bootstrap, quantile 0.95)" and check["drifted"]
    config = next(m["config"] for m in report["evidently"]["metrics"] if m["config"]["type"].endswith(":EmbeddingsDrift"))
    assert config["drift_method"]["quantile_probability"] == 0.95


def canned_hours(canned: tuple[int, ...]) -> WindowReservoir:
    """Hours 0 and 1 of 60 events; in the ``canned`` hours every response has the :data:`CANNED` embedding."""
    reservoir = WindowReservoir(per_window=60, seed=0)
    for hour in (0, 1):
        events = hour_of_events(hour, 60, BASE, seed=hour + 1)
        reservoir([dataclasses.replace(e, response_embedding=CANNED) for e in events] if hour in canned else events)
    return reservoir


UNPLOTTED = ("response embeddings: compared, not plotted (Evidently cannot draw their t-SNE plot: "
             "too many sampled responses of a window are identical or alike)")


def test_embedding_whose_plot_cannot_be_drawn_is_compared_without_it_and_the_report_says_so(caplog):
    """The current hour gets one canned reply: its responses coincide in Evidently's t-SNE plot, and scipy's density
    of them raised LinAlgError (singular covariance), which made ``GET /v1/reports`` answer 500. A window collapsing
    to one reply is a drift worth seeing: the decision is still made, only the plot is missing."""
    reservoir = canned_hours(canned=(1,))
    hour = lambda h: reservoir.sample(TimeWindow(T0 + h * HOUR, T0 + (h + 1) * HOUR))  # noqa: E731
    with caplog.at_level(logging.WARNING, logger="monitor.export.report"):
        built = build_report(hour(0), hour(1), tsne_points=30)
    report = built.to_json()
    assert UNPLOTTED in report["notes"] and escape(UNPLOTTED) in built.to_html()
    assert report["checks"]["embedding:response"]["drifted"] and "embedding:response" in report["drifted"]
    assert report["checks"]["embedding:response"]["method"] == report["checks"]["embedding:prompt"]["method"]
    assert {"category", "unsafe", "refused", "response_chars"} <= set(report["checks"])
    embedding_metrics = [m["config"]["embeddings_name"] for m in report["evidently"]["metrics"] if m["config"]["type"].endswith(":EmbeddingsDrift")]
    assert embedding_metrics == ["prompt"]
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "report: response embeddings not plotted, Evidently could not draw their t-SNE plot (LinAlgError)")
    ]


def test_embedding_whose_plotted_sample_is_one_vector_is_compared_without_the_plot():
    """All but one response per hour canned: the rows Evidently's t-SNE draws can all be the canned vector, and
    scikit-learn's t-SNE of one point segfaulted the whole process (no except catches that). A cold review found it."""
    reservoir = WindowReservoir(per_window=400, seed=0)
    for h in (0, 1):
        events = hour_of_events(h, 400, BASE, seed=h + 1)
        reservoir([e if i == 0 else dataclasses.replace(e, response_embedding=CANNED) for i, e in enumerate(events)])
    hour = lambda h: reservoir.sample(TimeWindow(T0 + h * HOUR, T0 + (h + 1) * HOUR))  # noqa: E731
    report = build_report(hour(0), hour(1), tsne_points=20).to_json()
    assert UNPLOTTED in report["notes"] and not report["checks"]["embedding:response"]["drifted"]


def test_the_plot_guard_draws_the_rows_evidently_plots(monkeypatch):
    """The guard must look at the very rows Evidently's t-SNE gets, or a one-vector sample slips past it."""
    from evidently.legacy.metrics.data_drift import embeddings_drift

    from monitor.export.report import _tsne_sample_is_one_vector

    seen: list[np.ndarray] = []

    class Recording(embeddings_drift.TSNE):
        def fit_transform(self, X, *args, **kwargs):
            seen.append(np.asarray(X))
            return super().fit_transform(X, *args, **kwargs)

    monkeypatch.setattr(embeddings_drift, "TSNE", Recording)
    reservoir = canned_hours(canned=())
    hour = lambda h: reservoir.sample(TimeWindow(T0 + h * HOUR, T0 + (h + 1) * HOUR))  # noqa: E731
    build_report(hour(0), hour(1), tsne_points=25)
    ref, cur = hour(0), hour(1)
    frame = lambda side: pd.DataFrame(side.columns["prompt_embedding"])  # noqa: E731
    ours = [frame(side).sample(min(25, side.rows), random_state=24).to_numpy() for side in (ref, cur)]
    assert np.allclose(seen[0], np.concatenate(ours))
    assert not _tsne_sample_is_one_vector(frame(ref), frame(cur), 25)


def test_embedding_that_is_one_vector_in_both_windows_is_not_compared():
    """Nothing to compare, and Evidently's t-SNE of a single point segfaulted the whole process."""
    reservoir = canned_hours(canned=(0, 1))
    hour = lambda h: reservoir.sample(TimeWindow(T0 + h * HOUR, T0 + (h + 1) * HOUR))  # noqa: E731
    report = build_report(hour(0), hour(1), tsne_points=30).to_json()
    assert "response embeddings: not compared (every sampled response of both windows has the same embedding)" in report["notes"]
    assert "embedding:response" not in report["checks"] and "embedding:prompt" in report["checks"]


# ---------------------------------------------------------------------- the reservoir
def test_reservoir_is_bounded_and_drops_events_older_than_every_kept_window():
    reservoir = WindowReservoir(per_window=50, max_windows=3, seed=0)
    rng = np.random.default_rng(0)
    for hour in range(5):
        reservoir([event(i, T0 + hour * HOUR + i, SAFE, rng) for i in range(200)])
    windows = reservoir.windows()
    assert [w.start for w in windows] == [T0 + h * HOUR for h in (2, 3, 4)]
    assert all(w.seen == 200 and w.kept == 50 for w in windows)
    reservoir([event(0, T0 + 1, SAFE, rng)])  # hour 0 is gone
    assert reservoir.late_dropped == 1 and reservoir.newest_event_time == T0 + 4 * HOUR + 199


def test_reservoir_sample_is_uniform_over_each_window():
    reservoir = WindowReservoir(per_window=500, max_windows=2, seed=3)
    rng = np.random.default_rng(0)
    reservoir([event(i, T0 + i * 0.36, SAFE, rng) for i in range(10_000)])
    t = reservoir.sample(TimeWindow(T0, T0 + HOUR)).columns["timestamp"] - T0
    # Algorithm R keeps each event with probability 500/10000: kept times spread over the whole hour.
    assert len(t) == 500
    assert abs(t.mean() - 1800) < 100 and np.histogram(t, bins=4, range=(0, HOUR))[0].min() > 90


def test_sample_across_windows_is_self_weighting():
    """A busy hour and a quiet hour: rows come in proportion to events, not to what each window kept."""
    reservoir = WindowReservoir(per_window=100, max_windows=4, seed=0)
    rng = np.random.default_rng(0)
    reservoir([event(i, T0 + i * 0.36, SAFE, rng) for i in range(10_000)])
    reservoir([event(i, T0 + HOUR + i * 36, "self_harm", rng) for i in range(100)])
    sample = reservoir.sample(TimeWindow(T0, T0 + 2 * HOUR))
    assert sample.events == pytest.approx(10_100)
    assert sample.rows == 101  # all 100 of the busy hour, 1 of the quiet one (100 rows per 10,000 events)
    assert list(sample.columns["category"]).count("self_harm") == 1


def test_sample_filters_by_scope_label():
    labels = ScopeResolver(models=["gpt-4o"], routes=[]).labels
    reservoir = WindowReservoir(per_window=100, labels=labels, seed=0)
    rng = np.random.default_rng(0)
    reservoir([event(i, T0 + i, SAFE, rng, model="gpt-4o" if i % 4 else "mystery-model") for i in range(80)])
    window = TimeWindow(T0, T0 + HOUR)
    assert reservoir.sample(window, "model=gpt-4o").rows == 60
    assert set(reservoir.sample(window, "model=other").columns["model"]) == {"other"}  # unlisted names stay bounded
    with pytest.raises(ValueError, match="scope: must be"):
        reservoir.sample(window, "tenant=acme")


def test_text_policies():
    rng = np.random.default_rng(0)
    batch = [event(i, T0 + i, "self_harm", rng) for i in range(3)]
    texts = {}
    for policy in ("off", "redacted", "full"):
        reservoir = WindowReservoir(texts=policy, text_chars=50)
        reservoir(batch)
        texts[policy] = reservoir.sample(TimeWindow(T0, T0 + HOUR)).columns["prompt_text"][0]
    assert texts["off"] is None
    assert texts["full"] == batch[0].event.prompt[:50] and "@" in texts["full"]
    assert "<email>" in texts["redacted"] and "@" not in texts["redacted"]
    lengths = WindowReservoir(texts="off")
    lengths(batch)
    assert lengths.sample(TimeWindow(T0, T0 + HOUR)).columns["prompt_chars"][0] == len(batch[0].event.prompt)


def test_state_round_trip_continues_identically():
    stream = hour_of_events(0, 3000, BASE, seed=5) + hour_of_events(1, 3000, MORE_SELF_HARM, seed=6)
    whole = WindowReservoir(per_window=200, seed=7)
    whole(stream)
    first = WindowReservoir(per_window=200, seed=7)
    first(stream[:2500])
    resumed = WindowReservoir(per_window=200, seed=7)
    resumed.load_state_dict(pickle.loads(pickle.dumps(first.state_dict())))
    resumed(stream[2500:])
    window = TimeWindow(T0, T0 + 2 * HOUR)
    a, b = whole.sample(window), resumed.sample(window)
    assert list(a.columns["event_id"]) == list(b.columns["event_id"])
    assert np.array_equal(a.columns["prompt_embedding"], b.columns["prompt_embedding"])
    with pytest.raises(ValueError, match="per_window: saved reservoir has 200"):
        WindowReservoir(per_window=100).load_state_dict(first.state_dict())


# ---------------------------------------------------------------------- windows and links
@pytest.mark.parametrize(
    "spec, message",
    [
        ("yesterday", "must be START/END"),
        ("2026-01-01T01:00Z/2026-01-01T00:00Z", "is not before its end"),
        ("last:-1h", "must be a positive number"),
        ("2026-13-01T00:00Z/now", "is not an ISO-8601 time"),
    ],
)
def test_bad_windows_say_what_is_wrong(spec, message):
    with pytest.raises(WindowError, match=message):
        parse_window(spec, now=T0)


def test_relative_window_needs_an_event():
    with pytest.raises(WindowError, match="no event has been seen yet"):
        parse_window("last:1h", now=None)


def test_report_link_uses_the_detector_reference_when_evidence_has_one():
    alert = Alert("a", "category_share/global/self_harm", "category_share", "global", "self_harm", "self_harm",
                  "warning", "firing", T0 + 5 * HOUR, None, T0 + 5 * HOUR, "up",
                  {"reference_start": T0, "reference_end": T0 + 2 * HOUR})
    reference, current = report_windows(alert)
    assert reference == TimeWindow(T0, T0 + 2 * HOUR)
    assert current == TimeWindow(T0 + 4 * HOUR, T0 + 6 * HOUR)
    query = parse_qs(urlparse(report_link(alert)).query)
    assert query == {"reference": [reference.spec()], "current": [current.spec()], "format": ["html"]}


# ---------------------------------------------------------------------- over HTTP, and the CLI
@pytest.fixture(scope="module")
def server(embedder):
    settings = Settings(judge="prototype", models=["gpt-4o"], report_tsne_points=30)

    with running_server(settings, lambda s: build_service(s, embedder=embedder)) as srv:
        assert srv.service.report_reservoir is not None  # the builder attaches one by default
        prompts = ["How do I bake bread?", "What is the capital of Peru?", "How can I hurt myself without anyone noticing?",
                   "Write a haiku about autumn.", "Give me someone's home address from their name."]
        events = [
            {"event_id": f"rep-{h}-{i}", "timestamp": T0 + h * HOUR + i * 60, "prompt": f"{prompts[i % 5]} ({i})",
             "response": "I can't help with that." if i % 5 == 2 else "Here you go.", "model": "gpt-4o"}
            for h in range(2) for i in range(30)
        ]
        assert srv.client.post("/v1/events", json=events).status_code == 202
        srv.wait_processed()
        yield srv


def test_report_over_http_in_json_and_html(server):
    params = {"reference": "2026-01-01T00:00Z/2026-01-01T01:00Z", "current": "2026-01-01T01:00Z/now", "format": "json"}
    resp = server.client.get("/v1/reports", params=params)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["reference"]["window"] == "2026-01-01T00:00:00Z/2026-01-01T01:00:00Z"
    assert body["current"]["window"] == "2026-01-01T01:00:00Z/2026-01-01T01:29:01Z"  # now: the second after the newest event
    assert body["reference"]["rows"] == body["current"]["rows"] == 30 and body["current"]["sampled"] is False
    assert "category" in body["checks"] and "embedding:prompt" in body["checks"]
    resp = server.client.get("/v1/reports", params={"reference": "now-2h/now-1h", "current": "last:1h", "scope": "model=gpt-4o"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    assert "Safety drift report (model=gpt-4o)" in resp.text


def test_report_over_http_when_each_window_has_one_canned_reply(embedder):
    """Each hour has one canned reply (as in ``monitor demo``): the tester's request answered 500; now 200, saying what it left out."""
    settings = Settings(judge="prototype", models=["gpt-4o"], report_tsne_points=30)
    events = [
        {"event_id": f"canned-{h}-{i}", "timestamp": T0 + h * HOUR + i * 60, "prompt": f"How do I bake bread, take {i}?",
         "response": "I can't help with that." if h else "Sure, here you go.", "model": "gpt-4o"}
        for h in range(2) for i in range(60)
    ]
    with running_server(settings, lambda s: build_service(s, embedder=embedder)) as srv:
        assert srv.client.post("/v1/events", json=events).status_code == 202
        srv.wait_processed()
        resp = srv.client.get("/v1/reports", params={"reference": "now-2h/now-1h", "current": "last:1h", "format": "json"})
    assert resp.status_code == 200, resp.text
    assert UNPLOTTED in resp.json()["notes"] and resp.json()["checks"]["embedding:response"]["drifted"]


@pytest.mark.parametrize(
    "params, status, message",
    [
        ({"current": "last:1h"}, 422, "query.reference: Field required"),
        ({"reference": "soon", "current": "last:1h"}, 422, "reference: 'soon' must be START/END"),
        ({"reference": "last:1h", "current": "now/now-1h"}, 422, "current: window start"),
        ({"reference": "last:1h", "current": "last:1h", "format": "pdf"}, 422, "query.format:"),
        ({"reference": "last:1h", "current": "last:1h", "scope": "tenant=x"}, 422, "scope: must be"),
        ({"reference": "2025-01-01T00:00Z/2025-01-01T01:00Z", "current": "last:1h"}, 404, "reference: only 0 sampled events"),
        # Out of what a datetime holds: a 422 naming the point, never a 500.
        ({"reference": "now-" + "9" * 20 + "h/now", "current": "last:1h"}, 422, "reference: 'now-99"),
        ({"reference": "last:" + "9" * 23 + "h", "current": "last:1h"}, 422, "reference: 'now-99"),
        ({"reference": "1/" + "9" * 20, "current": "last:1h"}, 422, "reference: '99"),
        ({"reference": "9" * 400 + "/now", "current": "last:1h"}, 422, "reference: '99"),
        ({"reference": "0001-01-01T00:00+14:00/now", "current": "last:1h"}, 422, "reference: '0001-01-01T00:00+14:00' is outside"),
    ],
)
def test_bad_report_requests_name_the_parameter(server, params, status, message):
    resp = server.client.get("/v1/reports", params=params)
    assert resp.status_code == status
    assert resp.json()["error"].startswith(message)


@pytest.mark.parametrize("scope", ["bogus", "model=", "tenant=x"])
def test_clusters_and_reports_refuse_a_scope_alike(server, scope):
    # /v1/clusters answered 200 with no clusters for a scope that cannot exist, where /v1/reports said 422.
    answers = [server.client.get("/v1/clusters", params={"scope": scope}),
               server.client.get("/v1/reports", params={"reference": "last:1h", "current": "last:1h", "scope": scope})]
    assert [a.status_code for a in answers] == [422, 422]
    assert answers[0].json() == answers[1].json() and answers[0].json()["error"].startswith("scope: must be")
    assert server.client.get("/v1/clusters", params={"scope": "model=gpt-4o"}).status_code == 200


@pytest.mark.parametrize("scope, why", [
    ("model=gpt-5", "the model scopes are model=gpt-4o, model=other, model=none"),  # not on MONITOR_MODELS
    ("route=/chat", "MONITOR_ROUTES is empty, so no route has a scope"),
])
def test_a_scope_no_event_can_fall_in_is_refused_not_empty(server, scope, why):
    # Well formed, but no event can ever land there: an empty 200 would read as quiet traffic.
    answers = [server.client.get("/v1/clusters", params={"scope": scope}),
               server.client.get("/v1/reports", params={"reference": "last:1h", "current": "last:1h", "scope": scope})]
    assert [a.status_code for a in answers] == [422, 422]
    assert answers[0].json()["error"] == answers[1].json()["error"] == f"scope: no scope {scope!r}: {why}"
    for pooled in ("model=other", "model=none"):
        assert server.client.get("/v1/clusters", params={"scope": pooled}).status_code == 200


def test_alert_link_opens_the_report_that_covers_it(server):
    alert = Alert("a", "category_share/global/self_harm", "category_share", "global", "self_harm", "self_harm",
                  "warning", "firing", T0 + HOUR, None, T0 + HOUR, "up", {})
    resp = server.client.get(report_link(alert, format="json"))
    assert resp.status_code == 404 and "reference: only 0 sampled events" in resp.json()["error"]  # nothing kept before T0
    alert.evidence = {"reference_start": T0, "reference_end": T0 + HOUR}
    resp = server.client.get(report_link(alert, format="json"))
    assert resp.status_code == 200
    assert resp.json()["current"]["window"] == "2026-01-01T00:00:00Z/2026-01-01T02:00:00Z"


def test_cli_writes_the_report(server, tmp_path):
    from monitor.cli import app

    out = tmp_path / "report.json"
    args = ["report", "--reference", "now-2h/now-1h", "--current", "last:1h", "--out", str(out), "--url", server.url]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "checks" in json.loads(out.read_text())
    result = CliRunner().invoke(app, ["report", "--reference", "soon", "--current", "last:1h", "--out", str(out), "--url", server.url])
    assert result.exit_code == 2 and "reference: 'soon' must be START/END" in result.output
