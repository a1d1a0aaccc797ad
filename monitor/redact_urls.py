"""URLs reduced to ``scheme://host[:port]`` before they reach a log line or an HTTP answer.

Why: configured URLs carry secrets (``https://user:password@judge``, Slack webhook paths,
``?api_key=``), and error messages quote them: a malformed ``MONITOR_SECOND_JUDGE_URL`` came back
whole from ``/v1/status`` and ``/readyz``. Checks of URL settings say what is wrong with
:func:`url_fault`, never quoting the value; whatever text an exception carries still passes through
:func:`redact_urls` before it is shown, which also cuts URLs written without a scheme
(``hooks.slack.com/services/...``, ``:password@host``), as a mistyped setting is.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

_SCHEME = r"[A-Za-z][A-Za-z0-9+.-]{1,15}"
_URL = re.compile(rf"{_SCHEME}://[^\s'\"<>]*")
# Without a scheme, as a mistyped setting is: user info holding a ':' (a password) is dropped, and a
# path, query or fragment after a host (dotted name, IPv4 or localhost) is cut. Not inside a longer
# token: file paths in tracebacks (/usr/lib/x.py) stay.
_OUTSIDE = r"(?<![\w.:/@+-])"
# The password runs to the last '@' before the host: a password may hold '@' itself.
_USER_INFO = re.compile(_OUTSIDE + r"[^\s'\"<>/@:]{0,128}:[^\s'\"<>/]{0,512}@(?=[\w\[])")  # bounded: linear time
_HOST_PATH = re.compile(
    _OUTSIDE + r"(?P<host>(?:[A-Za-z0-9-]+\.)+[A-Za-z][A-Za-z0-9-]*|\d{1,3}(?:\.\d{1,3}){3}|localhost)(?P<port>:\d{1,5})?[/?#][^\s'\"<>]*"
)


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


def _cut(match: re.Match[str]) -> str:
    """A URL by :func:`safe_url`, keeping the punctuation that closed its sentence or clause
    (``see http://h/x.``, ``http://h:80: refused``): a port followed by ':' would not parse."""
    found = match.group(0)
    url = found.rstrip(".,;:)]")
    return safe_url(url) + found[len(url):]


def redact_urls(text: str) -> str:
    """``text`` with every URL in it reduced by :func:`safe_url`, and every URL without a scheme to its host.

    >>> redact_urls("ValueError: second_judge_url 'ftp://user:pw@h/x' is not http(s)")
    "ValueError: second_judge_url 'ftp://h' is not http(s)"
    >>> redact_urls("got 'hooks.slack.com/services/T0/B0/SECRET', ':pw@127.0.0.1:6379', 'u:pw@judge' in /usr/lib/a.py")
    "got 'hooks.slack.com', '127.0.0.1:6379', 'judge' in /usr/lib/a.py"
    >>> redact_urls("bad 'user:p@ss@judge.internal/v1'")
    "bad 'judge.internal'"
    """
    text = _URL.sub(_cut, text)
    return _HOST_PATH.sub(r"\g<host>\g<port>", _USER_INFO.sub("", text))


def url_fault(url: object, schemes: tuple[str, ...], need_host: bool = True) -> str | None:
    """What is wrong with ``url`` as an absolute URL of one of ``schemes``, or None when nothing is.

    The answer never quotes the value (it may hold a password or a webhook's secret path): a value
    with a scheme is shown as :func:`safe_url` cuts it, one without is not shown at all.

    >>> url_fault("hooks.slack.com/services/T0/B0/SECRET", ("http", "https"))
    'no scheme (expected http:// or https://; the value is not shown: it may hold a secret)'
    >>> url_fault("ftp://user:pw@judge/v1", ("http", "https")), url_fault("https:///path", ("http", "https"))
    ("ftp://judge: scheme 'ftp', expected http:// or https://", 'https://: no host')
    >>> url_fault("https://:8080/x", ("https",)), url_fault("https://u:pw@:8080/x", ("https",))
    ('https://:8080: no host', 'https://:8080: no host')
    """
    if not isinstance(url, str):
        return f"must be a string, got {type(url).__name__}"
    *others, last = [f"{scheme}://" for scheme in schemes]
    expected = f"{', '.join(others)} or {last}" if others else last
    scheme, sep, _ = url.partition("://")
    if not sep or not re.fullmatch(_SCHEME, scheme):
        return f"no scheme (expected {expected}; the value is not shown: it may hold a secret)"
    shown = safe_url(url)
    if scheme.lower() not in schemes:
        return f"{shown}: scheme {scheme!r}, expected {expected}"
    if shown.endswith("…"):
        return f"{shown}: a port that is no number, or brackets that do not close"
    if need_host and not urlsplit(url).hostname:
        return f"{shown}: no host"
    return None


class AccessLogQueries(logging.Filter):
    """Cuts the query string from uvicorn's access-log lines to ``?…``.

    Why: clients put secrets in query strings (``?access_token=``, a pre-signed link), and uvicorn
    logs each request's path with its query. This API reads no secret from a query, so nothing of
    use is lost; the path stays.

    >>> record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
    ...                            ("127.0.0.1:5", "GET", "/v1/status?access_token=s3cret", "1.1", 200), None)
    >>> AccessLogQueries().filter(record), record.getMessage()
    (True, '127.0.0.1:5 - "GET /v1/status?… HTTP/1.1" 200')
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?…", *args[3:])
        return True


def hide_access_log_queries(logger: logging.Logger) -> None:
    """Attach :class:`AccessLogQueries` to ``logger`` once (apps built again in one process add none)."""
    if not any(isinstance(f, AccessLogQueries) for f in logger.filters):
        logger.addFilter(AccessLogQueries())
