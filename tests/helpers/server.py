"""Run the real service (uvicorn with monitor serve's protocol + the FastAPI app) on a free loopback port in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import httpx
import uvicorn

from monitor.api.app import create_app
from monitor.api.connections import guarded_http
from monitor.config import Settings
from monitor.pipeline.service import MonitorService


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    def __init__(self, url: str, app) -> None:
        self.url = url
        self.app = app
        self.client = httpx.Client(base_url=url, timeout=30.0)

    @property
    def service(self) -> MonitorService:
        return self.app.state.holder["service"]

    def wait_processed(self, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            status = self.client.get("/v1/status").json()
            if status.get("ready") and status["processed"] >= status["accepted"] and status["queue_depth"] == 0:
                # A batch is counted before its listeners run (a snapshot must include it): queue a
                # no-op behind it in the one worker thread, so the listeners have run on return.
                if hasattr(self.service, "call_in_worker"):
                    self.service.call_in_worker(lambda: None).result(timeout)
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"not processed in {timeout}s: {status}")
            time.sleep(0.05)


@contextmanager
def running_server(settings: Settings, factory: Callable[[Settings], MonitorService], ready_timeout: float = 120.0) -> Iterator[RunningServer]:
    port = free_port()
    app = create_app(settings, service_factory=factory)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                            **guarded_http(app.state.connection_guard))  # as monitor serve runs it
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    running = RunningServer(f"http://127.0.0.1:{port}", app)
    deadline = time.monotonic() + ready_timeout
    try:
        while True:
            try:
                if running.client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("service did not become ready")
            time.sleep(0.05)
        yield running
    finally:
        running.client.close()
        server.should_exit = True
        thread.join(timeout=30)
