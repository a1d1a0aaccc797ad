"""Triage: a reviewer's decisions about alerts and emerging clusters, and what the monitor learns from them.

Modules, lowest first: :mod:`~monitor.triage.recent` (the recent judged events a label can reach),
:mod:`~monitor.triage.online` (the online judge layer fitted on labels), :mod:`~monitor.triage.state`
(labels, categories, models, marks and the audit log, persisted in the state store),
:mod:`~monitor.triage.alertmanager` (silences), :mod:`~monitor.triage.console` (the actions),
:mod:`~monitor.triage.export` (what was triaged, as files) and :mod:`~monitor.pipeline.triaging` (wiring).
"""
