"""A LiteLLM callback that forwards every LLM call to the monitor without adding latency to it.

Register it in the LiteLLM proxy ``config.yaml`` (``MONITOR_URL`` names the monitor)::

    litellm_settings:
      callbacks: ["monitor.integrations.litellm_logger.monitor_logger"]

or in code: ``litellm.callbacks = [MonitorLogger("http://monitor:8000", token=...)]``. The token (default
``$MONITOR_TOKEN``, a token of scope ``ingest``) is sent as ``Authorization: Bearer``.

Each hook (async and sync, success and failure) only appends the call's ``StandardLoggingPayload``,
slimmed to the fields the monitor reads, to a bounded buffer; a background thread posts batches to
``POST /v1/ingest/litellm``, where the same mapping as for the ``generic_api`` callback applies. A
slow or absent monitor never blocks the gateway: when the buffer is full (``max_buffer`` calls or
``max_buffer_bytes`` of their JSON), calls are dropped and counted. LiteLLM can fire a success callback twice for one call: payloads are deduplicated by id
here (bounded memory) and again by the monitor. Redacted calls (``redacted-by-litellm``) are sent
on and counted by the monitor in ``llmsafety_events_redacted_total{source="litellm"}``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from monitor.client import DEFAULT_URL, MonitorClient
from monitor.ingest.dedup import RecentIds
from monitor.integrations.litellm import slim

INGEST_PATH = "/v1/ingest/litellm"


class MonitorLogger(CustomLogger):
    """``url`` defaults to ``$MONITOR_URL``, ``token`` to ``$MONITOR_TOKEN``; other keyword arguments go to LiteLLM's ``CustomLogger``."""

    def __init__(
        self,
        url: str | None = None,
        *,
        max_buffer: int = 10_000,
        max_buffer_bytes: int = 64 * 1024 * 1024,
        batch_size: int = 100,
        flush_interval: float = 0.5,
        timeout: float = 5.0,
        dedup_capacity: int = 10_000,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.client = MonitorClient(
            url or os.environ.get("MONITOR_URL", DEFAULT_URL),
            path=INGEST_PATH,
            batch_size=batch_size,
            max_buffer=max_buffer,
            max_buffer_bytes=max_buffer_bytes,
            flush_interval=flush_interval,
            timeout=timeout,
            headers=headers,
            token=token,
        )
        self._seen = RecentIds(dedup_capacity)
        self._lock = threading.Lock()
        self.duplicates = 0  # callbacks for a call already forwarded
        self.without_payload = 0  # callbacks that carried no standard_logging_object

    def enqueue(self, kwargs: dict[str, Any]) -> bool:
        """Buffer the call's payload for the monitor; False if it was a duplicate, missing, or dropped."""
        payload = kwargs.get("standard_logging_object")
        if not isinstance(payload, dict):
            with self._lock:
                self.without_payload += 1
            return False
        call_id = payload.get("id") or payload.get("litellm_call_id")
        if call_id:
            with self._lock:
                if not self._seen.add(str(call_id)):
                    self.duplicates += 1
                    return False
        return self.client.send(slim(payload))

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):  # type: ignore[no-untyped-def]
        self.enqueue(kwargs)

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):  # type: ignore[no-untyped-def]
        self.enqueue(kwargs)

    def log_success_event(self, kwargs, response_obj, start_time, end_time):  # type: ignore[no-untyped-def]
        self.enqueue(kwargs)

    def log_failure_event(self, kwargs, response_obj, start_time, end_time):  # type: ignore[no-untyped-def]
        self.enqueue(kwargs)

    def stats(self) -> dict[str, int]:
        """The sender's counters (sent, dropped, failed, ...) plus ``duplicates`` and ``without_payload``."""
        with self._lock:
            return {**asdict(self.client.stats()), "duplicates": self.duplicates, "without_payload": self.without_payload}

    def flush(self, timeout: float | None = None) -> bool:
        return self.client.flush(timeout)

    def close(self, timeout: float | None = None) -> dict[str, int]:
        self.client.close(timeout)
        return self.stats()


#: The instance a LiteLLM proxy config names; it starts no thread until the first call is logged.
monitor_logger = MonitorLogger()
