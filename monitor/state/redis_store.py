"""The Redis backend: state shared by every replica and kept across restarts.

Keys (all under ``key_prefix``, so several monitors or test runs share one Redis safely):

- ``<prefix>id:<event_id>``: one short string per accepted event, written with ``SET NX EX``, so
  checking and remembering an id is one atomic step even with several API replicas, and the set
  bounds itself (``dedup_ttl_seconds`` × event rate keys, about 150 bytes each).
- ``<prefix>snapshot:<name>``: the bytes of one snapshot, replaced with a single ``SET``.

Every request's ids go in one pipelined round trip. Connection failures surface as
:class:`~monitor.state.store.StoreUnavailable` after one quick retry (covers a connection left
stale by a Redis restart); redis-py reconnects by itself on the next call, so the service
recovers when Redis is back without anyone restarting it.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from monitor.redact_urls import safe_url
from monitor.state.store import StoreUnavailable

T = TypeVar("T")
SENTINEL_SCHEME = "redis+sentinel://"

# Errors that mean "Redis cannot take this now" (down, restarting, failing over, out of memory),
# as opposed to a bug in how we call it, which should still raise as itself.
UNAVAILABLE_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ClusterDownError,
)


def connect(url: str, timeout_seconds: float = 1.0) -> redis.Redis:
    """A client for ``url`` that fails fast when Redis is down.

    ``redis://``, ``rediss://`` (TLS) and ``unix://`` name one server;
    ``redis+sentinel://[:password@]host:26379[,host:26379...]/<master name>[/<db>]`` asks Sentinel for
    the current primary and follows it through failovers (the password is the primary's).
    """
    options: dict[str, Any] = {
        "socket_timeout": timeout_seconds,
        "socket_connect_timeout": timeout_seconds,
        "health_check_interval": 30,
        "retry": Retry(ExponentialBackoff(cap=0.1, base=0.01), retries=1),
    }
    if not url.startswith(SENTINEL_SCHEME):
        return redis.Redis.from_url(url, **options)
    parsed = urlsplit(url)
    auth, _, hosts = parsed.netloc.rpartition("@")
    password = unquote(auth.partition(":")[2]) or None if auth else None
    nodes = []
    for node in hosts.split(","):
        host, _, port = node.partition(":")
        nodes.append((host, int(port or 26379)))
    path = [part for part in parsed.path.split("/") if part]
    if not path or not all(host for host, _ in nodes):
        raise ValueError(f"redis_url: expected {SENTINEL_SCHEME}host:26379[,host:port]/<master name>[/<db>], got {safe_url(url)}")
    sentinel = Sentinel(nodes, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds)
    return sentinel.master_for(path[0], db=int(path[1]) if len(path) > 1 else 0, password=password, **options)


class RedisStateStore:
    backend = "redis"

    def __init__(self, client: redis.Redis, key_prefix: str = "llmsafety:", dedup_ttl_seconds: int = 86_400) -> None:
        if dedup_ttl_seconds < 1:
            raise ValueError(f"dedup_ttl_seconds: must be at least 1, got {dedup_ttl_seconds}")
        self.client = client
        self.key_prefix = key_prefix
        self.dedup_ttl_seconds = dedup_ttl_seconds

    @classmethod
    def from_url(cls, url: str, key_prefix: str = "llmsafety:", dedup_ttl_seconds: int = 86_400, timeout_seconds: float = 1.0) -> "RedisStateStore":
        return cls(connect(url, timeout_seconds), key_prefix, dedup_ttl_seconds)

    def _id_key(self, event_id: str) -> str:
        return f"{self.key_prefix}id:{event_id}"

    def _snapshot_key(self, name: str) -> str:
        return f"{self.key_prefix}snapshot:{name}"

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(f"redis: {what} failed: {type(exc).__name__}: {exc}") from exc

    def add_ids(self, event_ids: Sequence[str]) -> list[bool]:
        if not event_ids:
            return []

        def run() -> list[bool]:
            pipe = self.client.pipeline(transaction=False)
            for event_id in event_ids:
                pipe.set(self._id_key(event_id), b"1", nx=True, ex=self.dedup_ttl_seconds)
            return [bool(ok) for ok in pipe.execute()]

        return self._call("remembering event ids", run)

    def discard_ids(self, event_ids: Sequence[str]) -> None:
        if event_ids:
            self._call("forgetting event ids", lambda: self.client.delete(*(self._id_key(e) for e in event_ids)))

    def save_snapshot(self, name: str, data: bytes) -> None:
        self._call(f"saving snapshot {name!r}", lambda: self.client.set(self._snapshot_key(name), data))

    def load_snapshot(self, name: str) -> bytes | None:
        return self._call(f"loading snapshot {name!r}", lambda: self.client.get(self._snapshot_key(name)))

    def close(self) -> None:
        self.client.close()
