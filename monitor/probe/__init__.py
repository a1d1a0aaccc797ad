"""Canary probes: ask the deployed model known questions on a schedule and alert when its answers change.

Layers, lowest first: ``probe_sets`` (format, loader, built-in sets in ``sets/``), ``client`` (one
OpenAI-compatible call with retries), ``budget``, ``detector`` (rate change per target and set),
``metrics``, ``prober`` (rounds), ``scheduler`` (rounds on a timer). The service wiring and the
``monitor probe`` command live in :mod:`monitor.pipeline.probing` and :mod:`monitor.pipeline.probe_cli`.
"""

#: The OpenAI ``user`` every probe request carries (LiteLLM logs it as ``end_user``): the monitor's
#: LiteLLM integration ignores calls from it, so probes that travel through the gateway are not
#: ingested a second time as user traffic.
PROBE_END_USER = "llmsafety-canary-probe"
