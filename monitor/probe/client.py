"""Ask one configured target one question over the OpenAI chat-completions API.

Why this is strict: the prober sends requests on its own, on a schedule, with an API key. It
posts only to ``<base_url>/chat/completions`` of a target the operator configured, follows no
redirect (a 3xx is a failure, not a new address), sends ``temperature: 0`` and a fixed ``seed`` so
a deterministic model answers the same way every round, caps the answer with ``max_tokens``, and
names itself as the end user :func:`probe_end_user` (so the gateway's own logging
of the call is not taken for user traffic).

Every failure has a reason from :data:`FAILURES` (a metric label): ``timeout``, ``rate_limited``
(429), ``server_error`` (5xx), ``client_error`` (other 4xx, 3xx), ``transport`` and ``malformed``
(a 200 that is not a chat completion). Timeouts, transport errors, 408, 429 and 5xx are retried
with tenacity (exponential backoff, a 429's ``Retry-After`` honoured up to ``max_wait_s``);
retries are counted by reason through ``on_retry``.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from monitor.openai_chat import MalformedReply, message_content, retry_after_s, retryable

#: How the OpenAI ``user`` of every probe request starts (LiteLLM logs it as ``end_user``).
PROBE_END_USER_PREFIX = "llmsafety-canary-probe-"


@lru_cache(maxsize=8)  # the LiteLLM route asks on every request, with the one configured key
def probe_end_user(key: str) -> str:
    """The ``user`` probe requests carry: the prefix and an HMAC of ``key``. The monitor's LiteLLM integration
    skips calls from that name, so probes that travel through the gateway are not ingested a second time as
    user traffic. Keyed, not fixed: a gateway user may set OpenAI's ``user`` to anything, and a known name
    would let them skip the monitor.

    >>> probe_end_user("k") == probe_end_user("k") != probe_end_user("another key")
    True
    """
    return PROBE_END_USER_PREFIX + hmac.new(key.encode(), b"canary probe", hashlib.sha256).hexdigest()[:32]

FAILURES = ("timeout", "rate_limited", "server_error", "client_error", "transport", "malformed")


@dataclass(frozen=True, slots=True)
class Target:
    """A model behind an OpenAI-compatible endpoint: ``name`` is its label in metrics and alerts."""

    name: str
    base_url: str
    model: str

    @classmethod
    def parse(cls, spec: str) -> Target:
        """``MODEL@URL`` (``gpt-4o@http://litellm:4000/v1``); the model is also the target's name.

        >>> Target.parse("gpt-4o@http://gateway:4000/v1/")
        Target(name='gpt-4o', base_url='http://gateway:4000/v1', model='gpt-4o')
        """
        model, sep, url = spec.strip().partition("@")
        if not sep or not model:
            raise ValueError(f"probe target {spec!r}: expected MODEL@URL, e.g. gpt-4o@http://gateway:4000/v1")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"probe target {model!r}: URL must be http:// or https:// with a host")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError(f"probe target {model!r}: URL must not carry credentials, a query or a fragment (use probe_api_key)")
        if len(model) > 128 or any(c.isspace() for c in model):
            raise ValueError(f"probe target {model[:40]!r}: model name must be at most 128 characters without spaces")
        return cls(name=model, base_url=url.rstrip("/"), model=model)


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    latency_s: float
    tokens: int  # usage.total_tokens, or an estimate (4 characters a token) when the server sends none


class ProbeCallError(Exception):
    """A question that got no answer after its retries; ``reason`` is one of :data:`FAILURES`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return "rate_limited" if status == 429 else "server_error" if status >= 500 else "client_error"
    if isinstance(exc, httpx.RequestError):
        return "transport"
    return "malformed"


class ChatClient:
    """One HTTP client per target; use as an async context manager around a round."""

    def __init__(
        self,
        target: Target,
        api_key: SecretStr | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 2,
        max_tokens: int = 256,
        seed: int = 0,
        backoff_s: float = 0.5,
        max_wait_s: float = 10.0,
        on_retry: Callable[[str], None] = lambda reason: None,
        end_user: str = "",
    ) -> None:
        """``end_user``: the ``user`` each request names (:func:`probe_end_user`); empty: none."""
        self.target = target
        self.end_user = end_user
        self.max_retries = max_retries
        self.max_tokens = max_tokens
        self.seed = seed
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        self.on_retry = on_retry
        headers = {"Authorization": f"Bearer {api_key.get_secret_value()}"} if api_key is not None else {}
        self._client = httpx.AsyncClient(base_url=target.base_url, headers=headers, timeout=timeout_s, follow_redirects=False,
                                         verify=_tls_context())

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def ask(self, prompt: str) -> Reply:
        """The model's answer to ``prompt`` (one user turn); :class:`ProbeCallError` after the retries."""
        body = {
            "model": self.target.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0.0,
            "seed": self.seed,
            "max_tokens": self.max_tokens,
            "stream": False,
        } | ({"user": self.end_user} if self.end_user else {})
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(retryable),
            before_sleep=lambda state: self.on_retry(failure_reason(state.outcome.exception())),  # type: ignore[union-attr, arg-type]
            reraise=True,
        )
        started = time.perf_counter()
        try:
            async for attempt in retrying:
                with attempt:
                    started = time.perf_counter()
                    reply = await self._client.post("/chat/completions", json=body)
                    reply.raise_for_status()
            if reply.status_code != 200:  # a 1xx/2xx/3xx that is no completion (redirects are not followed)
                raise httpx.HTTPStatusError(f"status {reply.status_code}", request=reply.request, response=reply)
            payload = reply.json()
            text = message_content(payload)
        except (httpx.HTTPError, MalformedReply, ValueError) as exc:
            raise ProbeCallError(failure_reason(exc)) from None
        return Reply(text=text, latency_s=time.perf_counter() - started, tokens=_tokens(payload, prompt, text))

    def _wait(self, state: RetryCallState) -> float:
        backoff = self.backoff_s * 2 ** (state.attempt_number - 1)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, httpx.HTTPStatusError):
            backoff = max(backoff, retry_after_s(exc.response))
        return min(backoff, self.max_wait_s)


@lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context for every round: loading the CA bundle costs tens of ms each time."""
    return ssl.create_default_context()


def _tokens(payload: Any, prompt: str, text: str) -> int:
    try:
        total = payload["usage"]["total_tokens"]
        if isinstance(total, int) and total >= 0:
            return total
    except (KeyError, TypeError):
        pass
    return (len(prompt) + len(text)) // 4 + 1
