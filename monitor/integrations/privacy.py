"""End-user ids become salted hashes before they enter the monitor: never a raw id in any store or label.

>>> hash_id("alice", salt="s1") == hash_id("alice", salt="s1") != hash_id("alice", salt="s2")
True
>>> len(hash_id("alice"))
16
"""

from __future__ import annotations

import hashlib

HASH_CHARS = 16  # 64 bits: collisions negligible at any realistic user count


def hash_id(value: str, salt: str = "") -> str:
    """Stable per salt, so one user's events group together; set a secret salt so ids cannot be guessed back."""
    return hashlib.sha256(f"{salt}\x00{value}".encode()).hexdigest()[:HASH_CHARS]
