"""Poll until a condition holds, for tests that watch other processes (servers, workers, Prometheus)."""

from __future__ import annotations

import time
from typing import Any, Callable


def wait_for(what: str, check: Callable[[], Any], timeout: float = 45.0, interval: float = 0.25) -> Any:
    """``check()``'s first truthy value, polled every ``interval`` s; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
