"""Safety-drift monitor: a sidecar that watches an LLM gateway's traffic for safety drift.

Data flows through the sub-packages in this order:
``ingest`` (validate, dedup, sample, queue) → ``embed`` → ``judge`` → ``drift`` (detectors)
→ ``alerts`` (lifecycle) → ``export`` (Prometheus metrics, reports). ``pipeline`` wires the
stages together and ``api`` exposes them over HTTP.
"""

__version__ = "0.1.0"
