"""Gateway integrations: map what gateways already emit (LiteLLM logs, OpenTelemetry GenAI spans) to
:class:`~monitor.ingest.schema.EventIn`, plus a non-blocking Python client. Every adapter feeds the same
``MonitorService.ingest`` path as ``POST /v1/events``."""
