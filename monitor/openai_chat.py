"""The OpenAI chat-completions wire format, as both of its callers read it.

Why one module: the second-opinion judge (:mod:`monitor.judge.llm_guard`) and the canary prober
(:mod:`monitor.probe.client`) talk to the same kind of server, so they must agree on which
failures are worth a retry, how long a ``Retry-After`` asks them to wait, and what a usable reply
looks like.
"""

from __future__ import annotations

from typing import Any

import httpx

#: Statuses that say "try again later" besides 5xx: request timeout and rate limiting.
RETRY_STATUS = frozenset({408, 429})


class MalformedReply(ValueError):
    """A 200 answer without a usable ``choices[0].message.content``."""


def retryable(exc: BaseException) -> bool:
    """Timeouts, transport errors, 408, 429 and 5xx are worth another attempt; other failures are not."""
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return status in RETRY_STATUS or status >= 500
    return isinstance(exc, httpx.TransportError)  # timeouts included


def retry_after_s(response: httpx.Response) -> float:
    """Seconds from a numeric ``Retry-After`` header; 0 when absent or an HTTP date."""
    try:
        return max(0.0, float(response.headers.get("retry-after", "0")))
    except ValueError:
        return 0.0


def message_content(payload: Any) -> str:
    """The first choice's message text of a chat completion; :class:`MalformedReply` if missing."""
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise MalformedReply("chat completion has no choices[0].message.content") from None
    if not isinstance(content, str):
        raise MalformedReply("choices[0].message.content is not a string")
    return content
