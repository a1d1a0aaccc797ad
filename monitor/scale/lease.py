"""A lease in Redis that makes one process the owner of the detectors, with a fencing token.

Why fencing: a lease holder can stall (GC pause, overloaded host) past its lease, lose it to
another process and then wake up still believing it owns the detectors. Every write that must
come from the owner only (the state snapshot) is therefore made by a script that checks, inside
Redis, that the lease still holds this holder's value, ``<owner>:<token>``; the token grows with
every acquisition (``INCR``), so a stale holder can never match again.
"""

from __future__ import annotations

import redis

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_FENCED_SET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


class Lease:
    def __init__(self, client: redis.Redis, key: str, fence_key: str, owner: str, ttl_ms: int = 10_000) -> None:
        if ttl_ms < 100:
            raise ValueError(f"ttl_ms: a lease shorter than 100 ms cannot be renewed reliably, got {ttl_ms}")
        self.client = client
        self.key = key
        self.fence_key = fence_key
        self.owner = owner
        self.ttl_ms = ttl_ms
        self.token: int | None = None
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._fenced_set = client.register_script(_FENCED_SET)

    @property
    def value(self) -> str | None:
        return None if self.token is None else f"{self.owner}:{self.token}"

    def acquire(self) -> bool:
        """Take the lease if nobody holds it; the new fencing token is in ``token``."""
        if self.client.exists(self.key):
            return False
        token = int(self.client.incr(self.fence_key))
        if self.client.set(self.key, f"{self.owner}:{token}", nx=True, px=self.ttl_ms):
            self.token = token
            return True
        return False

    def renew(self) -> bool:
        """Extend the lease; False means it was lost (expired and possibly taken): stop acting as owner."""
        if self.value is None:
            return False
        if self._renew(keys=[self.key], args=[self.value, self.ttl_ms]):
            return True
        self.token = None
        return False

    def release(self) -> None:
        if self.value is not None:
            self._release(keys=[self.key], args=[self.value])
        self.token = None

    def fenced_set(self, key: str, data: bytes) -> bool:
        """``SET key data`` only while this holder still owns the lease (atomically, in Redis)."""
        if self.value is None:
            return False
        return bool(self._fenced_set(keys=[self.key, key], args=[self.value, data]))
