"""An Evidently drift report comparing two windows of judged events, for a person to read.

What it checks (each an Evidently 0.7 metric, so the HTML shows both distributions):

- ``category``: the distribution of top harm categories (chi-square, p < 0.05), and per category
  ``category=<id>``, its share (two-proportion z-test, p below 0.05 divided by the number of
  categories, so a stationary pair rarely shows a spurious category);
- ``unsafe`` (flagged prompts), ``unsafe_response`` and ``refused`` shares (z-test, p < 0.05;
  events without a response do not count for the last two);
- text descriptors of the *original* texts: ``prompt_chars`` and ``response_chars``
  (Evidently's default numeric test), and the ``model``/``route`` mix when it varies;
- ``embedding:prompt`` (and ``embedding:response`` when every row has one) with Evidently's
  embedding methods: ``model`` (a classifier told to separate the windows; ROC AUC above 0.55, or
  above the 95th percentile of chance with fewer than 1000 rows), ``mmd`` (kernel MMD against a
  bootstrap of the reference; quantile 0.95 so it compares with the upper tail) or ``distance``
  (cosine distance between mean embeddings, bootstrap, same quantile).

Evidently draws each embedding's t-SNE plot as a density per window, which cannot be drawn when a
window's points coincide (e.g. every sampled response is the same text). Such an embedding's plot is
left out, its drift decision is still made (by the same method, outside Evidently's metric), and the
report's ``notes`` and header say which embedding and why.

Cost: Evidently's embedding drift fits a t-SNE plot (``tsne_points`` per side) and, for ``mmd``,
a kernel matrix over all rows. Windows larger than ``max_rows`` (2000 for ``mmd``) are sampled
uniformly, and the report's ``notes`` and header say so. Builds run one at a time with BLAS/OpenMP
limited to one thread, so a report never starves the pipeline's worker.

The JSON form is this module's summary (``checks``, ``drifted``, ``shares``, ``examples``, ...)
plus Evidently's own ``snapshot.dict()`` under ``evidently``; decisions in ``checks`` are read from
Evidently's results, never recomputed.
"""

from __future__ import annotations

import html
import json
import logging
import os
import threading
import traceback
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from monitor.export.reservoir import WindowSample
from monitor.export.windows import TimeWindow, format_time
from monitor.taxonomy import SAFE

EmbeddingMethod = Literal["model", "mmd", "distance"]
EMBEDDING_METHODS: tuple[str, ...] = ("model", "mmd", "distance")
ALPHA = 0.05
MIN_ROWS = 20  # t-SNE needs more points than its perplexity (30) across both sides
MMD_MAX_ROWS = 2000  # mmd holds an (n_ref + n_cur)^2 kernel matrix
QUANTILE = 0.95
EXAMPLES_PER_CATEGORY = 5

log = logging.getLogger(__name__)

_BUILD_LOCK = threading.Lock()  # one report at a time: they are CPU-heavy and share evidently's t-SNE sample size


class ReportError(ValueError):
    """A report that cannot be built; ``parameter`` names the request parameter at fault."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


@dataclass(frozen=True)
class DriftReport:
    """``summary`` is this module's reading of the results; ``evidently`` is Evidently's ``snapshot.dict()``."""

    summary: dict[str, Any]
    evidently: dict[str, Any]
    page: str  # Evidently's HTML with our header

    def to_json(self) -> dict[str, Any]:
        return {**self.summary, "evidently": self.evidently}

    def to_html(self) -> str:
        return self.page


def build_report(
    reference: WindowSample,
    current: WindowSample,
    *,
    max_rows: int = 5000,
    embedding_method: EmbeddingMethod = "model",
    tsne_points: int = 200,
    scope: str = "global",
    seed: int = 0,
) -> DriftReport:
    """Compare ``current`` with ``reference``; raises :class:`ReportError` naming the side that is unusable."""
    if embedding_method not in EMBEDDING_METHODS:
        raise ReportError("embedding_method", f"must be one of {', '.join(EMBEDDING_METHODS)}, got {embedding_method!r}")
    for name, sample in (("reference", reference), ("current", current)):
        if sample.rows < MIN_ROWS:
            raise ReportError(
                name,
                f"only {sample.rows} sampled events between {format_time(sample.start)} and {format_time(sample.end)}; "
                f"a report needs at least {MIN_ROWS}",
            )
    cap = min(max_rows, MMD_MAX_ROWS) if embedding_method == "mmd" else max_rows
    ref, cur = reference.limit(cap, seed), current.limit(cap, seed + 1)
    categories = sorted((set(ref.columns["category"]) | set(cur.columns["category"])) - {SAFE})
    responses = min(int(ref.columns["has_response"].sum()), int(cur.columns["has_response"].sum())) >= MIN_ROWS
    response_embeddings = bool(ref.columns["has_response"].all() and cur.columns["has_response"].all())
    dim = ref.columns["prompt_embedding"].shape[1]
    embeddings = ("prompt", "response")[: 1 + response_embeddings]
    uniform = [name for name in embeddings if _one_vector(ref, cur, name)]
    columns = Columns(
        categorical=["category", *[f"category={c}" for c in categories], "unsafe"]
        + (["unsafe_response", "refused"] if responses else [])
        + [c for c in ("model", "route") if len(set(ref.columns[c]) | set(cur.columns[c])) > 1],
        numerical=["prompt_chars"] + (["response_chars"] if responses else []),
        embeddings={name: [f"{name}{i}" for i in range(dim)] for name in embeddings if name not in uniform},
    )
    frames = _frame(ref, columns), _frame(cur, columns)

    with _BUILD_LOCK:
        snapshot, embedding_results, unplottable = _run_evidently(*frames, columns, len(categories), embedding_method, tsne_points)
        evidently = _finite(json.loads(snapshot.json()))
        report_html = snapshot.get_html_str(as_iframe=False)

    checks = _checks(evidently)
    checks.update(embedding_results)
    notes = [_sampling_note(n, full, used) for n, full, used in (("reference", reference, ref), ("current", current, cur))]
    if not responses:
        notes.append(f"responses: not compared (fewer than {MIN_ROWS} sampled events with a response in a window)")
    elif not response_embeddings:
        notes.append("response embeddings: not compared (some sampled events have no response)")
    notes += [f"{name} embeddings: not compared (every sampled {name} of both windows has the same embedding)" for name in uniform]
    notes += [
        f"{name} embeddings: compared, not plotted (Evidently cannot draw their t-SNE plot: too many sampled {name}s "
        "of a window are identical or alike)"
        for name in unplottable
    ]
    drifted_categories = [c for c in categories if checks.get(f"category={c}", {}).get("drifted")]
    summary = {
        "scope": scope,
        "reference": _side(reference, ref),
        "current": _side(current, cur),
        "notes": notes,
        "drifted": [name for name, check in checks.items() if check["drifted"]],
        "drifted_categories": drifted_categories,
        "checks": checks,
        "shares": _shares(ref, cur, categories),
        "lengths": {c: {"reference": _mean(ref.columns[c]), "current": _mean(cur.columns[c])} for c in ("prompt_chars", "response_chars")},
        "examples": _examples(cur, drifted_categories),
    }
    summary = _finite(summary)
    return DriftReport(summary, evidently, _with_header(report_html, summary))


# ---------------------------------------------------------------------- data
@dataclass(frozen=True, slots=True)
class Columns:
    """What the report compares: Evidently column types, and embedding name -> its columns."""

    categorical: list[str]
    numerical: list[str]
    embeddings: dict[str, list[str]]


def _column(sample: WindowSample, name: str) -> np.ndarray:
    """One report column from the sample; binary shares are 0/1 floats, NaN where they do not apply."""
    c = sample.columns
    if name.startswith("category="):
        return (c["category"] == name.removeprefix("category=")).astype(float)
    derived = {
        "unsafe": lambda: c["prompt_flagged"].astype(float),
        "unsafe_response": lambda: c["response_flagged"].astype(float),
        "refused": lambda: c["refused"].astype(float),
        "prompt_chars": lambda: c["prompt_chars"].astype(float),
        "response_chars": lambda: np.where(c["response_chars"] >= 0, c["response_chars"], np.nan),
    }
    return derived[name]() if name in derived else c[name].astype(str)


def _frame(sample: WindowSample, columns: Columns) -> Any:
    import pandas as pd

    parts = [pd.DataFrame({name: _column(sample, name) for name in [*columns.categorical, *columns.numerical]})]
    for name, names in columns.embeddings.items():
        parts.append(pd.DataFrame(sample.columns[f"{name}_embedding"].astype(np.float32), columns=names))
    return pd.concat(parts, axis=1)


def _one_vector(ref: WindowSample, cur: WindowSample, name: str) -> bool:
    """Whether every row of both windows has the same ``name`` embedding (e.g. one canned reply throughout).

    Nothing to compare, and Evidently's t-SNE plot of it would crash the process: its PCA start divides by
    a zero spread, and scikit-learn's Barnes-Hut t-SNE segfaults on the NaNs, which no ``except`` can catch.
    """
    return _one_row(np.concatenate([ref.columns[f"{name}_embedding"], cur.columns[f"{name}_embedding"]]))


def _one_row(rows: np.ndarray) -> bool:
    return bool((rows == rows[0]).all())


def _embedding_method(name: str, rows: int) -> Any:
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import distance, mmd, model

    if name == "mmd":
        return mmd(bootstrap=True, quantile_probability=QUANTILE)
    if name == "distance":
        return distance(dist="cosine", bootstrap=True, quantile_probability=QUANTILE)
    return model(bootstrap=rows < 1000, quantile_probability=QUANTILE)  # evidently's own rule, made explicit


# ---------------------------------------------------------------------- evidently
def _run_evidently(
    ref_df: Any, cur_df: Any, columns: Columns, n_categories: int, method_name: str, tsne_points: int
) -> tuple[Any, dict[str, dict[str, Any]], list[str]]:
    """Evidently's snapshot, the embedding checks, and the embeddings left out because their plot cannot be drawn."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from evidently import DataDefinition, Dataset
    from evidently.legacy.metrics.data_drift import embeddings_drift
    from evidently.metrics import RowCount, ValueDrift

    definition = DataDefinition(
        numerical_columns=columns.numerical, categorical_columns=columns.categorical, embeddings=columns.embeddings
    )
    per_category = ALPHA / max(n_categories, 1)
    metrics = [RowCount(tests=[])]
    for col in columns.categorical:
        if col == "category":
            metrics.append(ValueDrift(column=col, method="chisquare", threshold=ALPHA))
        elif col.startswith("category="):
            metrics.append(ValueDrift(column=col, method="z", threshold=per_category))
        elif col in ("unsafe", "unsafe_response", "refused"):
            metrics.append(ValueDrift(column=col, method="z", threshold=ALPHA))
        else:
            metrics.append(ValueDrift(column=col))
    metrics += [ValueDrift(column=col) for col in columns.numerical]
    methods = {name: _embedding_method(method_name, min(len(ref_df), len(cur_df))) for name in columns.embeddings}

    # evidently samples this many points per side for its t-SNE plot; module-level, hence the build lock.
    embeddings_drift.SAMPLE_CONSTANT = tsne_points
    stacked = [name for name, cols in columns.embeddings.items() if _tsne_sample_is_one_vector(ref_df[cols], cur_df[cols], tsne_points)]
    snapshot, unplottable = _run_report(
        metrics,
        methods,
        reference=Dataset.from_pandas(ref_df, data_definition=definition),
        current=Dataset.from_pandas(cur_df, data_definition=definition),
        unplottable=stacked,
    )
    results = {}
    for name, method in methods.items():
        if name in unplottable:  # Evidently's metric left out: the same method, called as it calls it
            cols = columns.embeddings[name]
            score, drifted, method_label = method(cur_df[cols], ref_df[cols])
        else:
            # Evidently's JSON keeps only the score. The decision is in the legacy result it computed during the run:
            # the same metric and method have the same fingerprint, so the context returns that cached result.
            legacy, _ = snapshot.context.get_legacy_metric(embeddings_drift.EmbeddingsDriftMetric(name, method), None, None)
            score, drifted, method_label = legacy.drift_score, legacy.drift_detected, legacy.method_name
        results[f"embedding:{name}"] = {
            "method": method_label + (f" (bootstrap, quantile {QUANTILE})" if method.bootstrap else f" (threshold {method.threshold})"),
            "score": float(score),
            "threshold": None if method.bootstrap else float(method.threshold),
            "drifted": bool(drifted),
        }
    return snapshot, results, unplottable


def _tsne_sample_is_one_vector(ref: Any, cur: Any, points: int) -> bool:
    """Whether the rows Evidently's t-SNE plot takes (``points`` per side, drawn as it draws them) are all one
    vector: scikit-learn's t-SNE divides by their zero spread and segfaults, which no ``except`` catches. Two
    distinct rows are enough: the plot then fails, if it does, with an error that :func:`_run_report` catches.
    Follows ``EmbeddingsDriftMetric.calculate`` of the Evidently version pinned (a test checks the two agree)."""
    return _one_row(np.concatenate([side.sample(min(points, len(side)), random_state=24).to_numpy() for side in (ref, cur)]))


def _run_report(metrics: list[Any], methods: dict[str, Any], *, reference: Any, current: Any,
                unplottable: list[str]) -> tuple[Any, list[str]]:
    """Evidently's snapshot of ``metrics`` plus the embedding drift of ``methods`` but ``unplottable``, and the
    embeddings left out: those, and any whose t-SNE plot raised.

    Evidently stops the whole run at the first metric that raises, so an embedding whose plot cannot be drawn is
    left out and the report run again without it; its drift decision is made without Evidently's metric.
    """
    from evidently import Report
    from evidently.metrics import EmbeddingsDrift
    from threadpoolctl import threadpool_limits

    unplottable = list(unplottable)
    while True:
        embeddings = [EmbeddingsDrift(embeddings_name=n, drift_method=m) for n, m in methods.items() if n not in unplottable]
        try:
            with threadpool_limits(limits=1):
                snapshot = Report([*metrics, *embeddings], include_tests=True).run(current_data=current, reference_data=reference)
            return snapshot, unplottable
        except ValueError as exc:  # numpy's LinAlgError is a ValueError
            name = _unplottable_embedding(exc)
            if name is None or name in unplottable:  # not the plot, or no progress: never loop
                raise
            log.warning("report: %s embeddings not plotted, Evidently could not draw their t-SNE plot (%s)", name, type(exc).__name__)
            unplottable.append(name)


def _unplottable_embedding(exc: ValueError) -> str | None:
    """The embedding whose t-SNE plot raised ``exc``, or None when ``exc`` came from anything else.

    Evidently's embedding drift draws the t-SNE points of each window as a density (scipy's ``gaussian_kde``),
    which raises when a window's points coincide or lie on a line: a singular covariance, as when many sampled
    texts are identical. Its error does not say which embedding, and the run stops there; the traceback does
    (the frame of Evidently's ``EmbeddingsDriftMetric.calculate``).
    """
    from evidently.legacy.metrics.data_drift.embeddings_drift import EmbeddingsDriftMetric
    from evidently.legacy.utils.visualizations import get_gaussian_kde

    frames = [frame for frame, _ in traceback.walk_tb(exc.__traceback__)]
    if not any(frame.f_code is get_gaussian_kde.__code__ for frame in frames):
        return None
    owners = [frame.f_locals.get("self") for frame in frames]
    return next((owner.embeddings_name for owner in owners if isinstance(owner, EmbeddingsDriftMetric)), None)


def _checks(evidently: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-column drift checks from Evidently's JSON: its ValueDrift scores and its tests' verdicts."""
    status = {
        t["metric_config"]["metric_id"]: t["status"] for t in evidently["tests"] if t["metric_config"]["params"]["type"].endswith(":ValueDrift")
    }
    checks = {}
    for metric in evidently["metrics"]:
        config = metric["config"]
        if not config["type"].endswith(":ValueDrift"):
            continue
        checks[config["column"]] = {
            "method": config["method"],
            "score": metric["value"],
            "threshold": config["threshold"],
            "drifted": status[metric["id"]] == "FAIL",
        }
    return checks


# ---------------------------------------------------------------------- summary
def _side(full: WindowSample, used: WindowSample) -> dict[str, Any]:
    return {
        "window": TimeWindow(full.start, full.end).spec(),
        "start": full.start,
        "end": full.end,
        "events": round(full.events, 1),
        "rows": used.rows,
        "sampled": used.rows < round(full.events),
    }


def _finite(value: Any) -> Any:
    """NaN and infinities (an undefined statistic) become None: JSON has no such numbers."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _sampling_note(name: str, full: WindowSample, used: WindowSample) -> str:
    if used.rows >= round(full.events):
        return f"{name}: all {used.rows:,} events of the window analysed"
    return f"{name}: a uniform sample of {used.rows:,} of ~{round(full.events):,} events analysed"


def _mean(values: np.ndarray) -> float | None:
    values = values[values >= 0].astype(np.float64)
    return float(values.mean()) if len(values) else None


def _share(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)].astype(np.float64)
    return float(values.mean()) if len(values) else None


def _shares(ref: WindowSample, cur: WindowSample, categories: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        name: {"reference": _share(ref.columns[col]), "current": _share(cur.columns[col])}
        for name, col in (("unsafe", "prompt_flagged"), ("unsafe_response", "response_flagged"), ("refused", "refused"))
    }
    out["category"] = {
        cat: {"reference": float(np.mean(ref.columns["category"] == cat)), "current": float(np.mean(cur.columns["category"] == cat))}
        for cat in categories
    }
    return out


def _examples(cur: WindowSample, categories: list[str]) -> dict[str, list[str]]:
    """A few current prompts of each drifted category (as the reservoir kept them: redacted, cut, or absent)."""
    texts, cats = cur.columns["prompt_text"], cur.columns["category"]
    out = {}
    for cat in categories:
        found = [t for t in texts[cats == cat] if t]
        if found:
            out[cat] = found[:EXAMPLES_PER_CATEGORY]
    return out


def _with_header(report_html: str, summary: dict[str, Any]) -> str:
    e = html.escape
    drifted_style = ' style="color:#b00020;font-weight:bold"'
    rows = "".join(
        f"<tr{drifted_style if c['drifted'] else ''}><td>{e(name)}</td><td>{e(str(c['method']))}</td>"
        f"<td>{'n/a' if c['score'] is None else format(c['score'], '.4g')}</td><td>{'drift' if c['drifted'] else 'no drift'}</td></tr>"
        for name, c in summary["checks"].items()
    )
    examples = "".join(
        f"<h4>{e(cat)}</h4><ul>{''.join(f'<li>{e(t)}</li>' for t in texts)}</ul>" for cat, texts in summary["examples"].items()
    )
    header = (
        '<div style="font-family:sans-serif;margin:16px">'
        f"<h2>Safety drift report ({e(summary['scope'])})</h2>"
        f"<p>reference {e(summary['reference']['window'])}<br>current {e(summary['current']['window'])}</p>"
        f"<ul>{''.join(f'<li>{e(n)}</li>' for n in summary['notes'])}</ul>"
        f"<p><b>Drifted:</b> {e(', '.join(summary['drifted']) or 'nothing')}</p>"
        f'<table border="1" cellpadding="4" style="border-collapse:collapse"><tr><th>check</th><th>method</th><th>score</th><th></th></tr>{rows}</table>'
        f"{'<h3>Current examples of drifted categories</h3>' + examples if examples else ''}"
        "</div>"
    )
    return report_html.replace("<body>", "<body>" + header, 1)
