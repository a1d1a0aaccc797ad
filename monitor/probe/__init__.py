"""Canary probes: ask the deployed model known questions on a schedule and alert when its answers change.

Layers, lowest first: ``probe_sets`` (format, loader, built-in sets in ``sets/``), ``client`` (one
OpenAI-compatible call with retries), ``budget``, ``detector`` (rate change per target and set),
``metrics``, ``prober`` (rounds), ``scheduler`` (rounds on a timer). The service wiring and the
``monitor probe`` command live in :mod:`monitor.pipeline.probing` and :mod:`monitor.pipeline.probe_cli`.
"""
