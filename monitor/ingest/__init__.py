"""Ingest: parse and validate request bodies, deduplicate, sample under load, enqueue. Never waits for the model."""
