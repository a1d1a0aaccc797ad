"""HTTP API (FastAPI): ingest, status, alerts, metrics, health."""
