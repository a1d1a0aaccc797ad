"""URLs reduced to ``scheme://host[:port]`` before they reach a log line or an HTTP answer.

Why: configured URLs carry secrets (``https://user:password@judge``, Slack webhook paths,
``?api_key=``), and error messages quote them: a malformed ``MONITOR_SECOND_JUDGE_URL`` came back
whole from ``/v1/status`` and ``/readyz``. Whatever text an exception carries passes through
:func:`redact_urls` before it is shown.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]{1,15})://(?P<rest>[^\s'\"<>]*)")


def safe_url(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: no user, password, path or query.

    >>> safe_url("ftp://user:pw@judge.internal:21/v1?key=x"), safe_url("https://hooks.slack.com/services/T0/B0/XYZ")
    ('ftp://judge.internal:21', 'https://hooks.slack.com')
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port that is no number, brackets that do not close: keep only the scheme
        return f"{url.split('://', 1)[0]}://…"
    return f"{parts.scheme}://{host}{port}"


def redact_urls(text: str) -> str:
    """``text`` with every URL in it reduced by :func:`safe_url`.

    >>> redact_urls("ValueError: second_judge_url 'ftp://user:pw@h/x' is not http(s)")
    "ValueError: second_judge_url 'ftp://h' is not http(s)"
    """
    return _URL.sub(lambda m: safe_url(m.group(0)), text)
