"""The service's memory and connections under unauthenticated clients that never finish a request head,
and what the guarded protocol costs per request.

Run: ``.venv/bin/python bench/connection_flood.py [--floods 8] [--flood-mib 64] [--held 1000] [--idle 2000] [--requests 5000]``

Starts ``monitor serve`` in a subprocess (prototype judge, defaults otherwise), resets the process's peak
RSS once it is ready (``/proc/<pid>/clear_refs``), then two rows:

- *header flood*: ``floods`` connections at once each send ``flood-mib`` MiB of header lines, as fast as
  the server reads them, never ending the head (no token is needed: nothing reaches the app); the row
  gives the rise of the service's peak RSS (``VmHWM``) over its ready RSS, and how many bytes each
  connection got to send before the server closed it (the kernel's socket buffers hold part of them);
- *held heads*: ``held`` connections each send a head just under ``max_request_head_bytes`` and stop
  there; the row gives the peak RSS rise while they are held;
- *idle connections*: ``idle`` connections opened and left silent; the row gives how many the service
  answered at once (503, past ``max_connections``), how many it closed at the head deadline
  (``request_head_timeout_seconds``), the peak RSS rise, and ``/healthz`` answering meanwhile;
- *protocol cost*: server CPU time per request (``/proc``), ``requests`` small POSTs on one kept-alive
  connection, to a minimal ASGI app under the guarded protocol and under uvicorn's default (httptools).

Linux only (reads ``/proc``). Raise ``ulimit -n`` above ``idle`` + 100 first.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.healthz_overload import free_port, start  # noqa: E402
from bench.inflight_bodies import kib  # noqa: E402
from bench.light_load_cpu import cpu_seconds  # noqa: E402
from bench.machine import describe  # noqa: E402
from monitor.config import Settings  # noqa: E402

WAIT_S = 20.0  # how long the idle row waits for the service to answer or close its connections
LINE = b"X-Pad: " + b"a" * 4000 + b"\r\n"


def flood(port: int, limit: int) -> int:
    """Bytes sent before the server closed the connection (or ``limit``)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        try:
            sock.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
            while sent < limit:
                sock.sendall(LINE)
                sent += len(LINE)
        except OSError:
            pass
    return sent


def held_row(port: int, n: int, head_bytes: int) -> list[socket.socket]:
    """``n`` connections, each holding an unfinished head of about ``head_bytes``."""
    line = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    head = b"GET /v1/status HTTP/1.1\r\nHost: x\r\n" + line * (head_bytes // len(line))
    socks = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(head)
        socks.append(sock)
    return socks


def idle_row(port: int, url: str, n: int) -> dict[str, float]:
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    t0 = time.monotonic()
    healthz = httpx.get(url + "/healthz", timeout=10).status_code  # a new connection while all are held
    answered, closed, deadline = 0, 0, t0 + WAIT_S
    for sock in socks:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data: bytes | None = sock.recv(4096)
        except TimeoutError:
            data = None  # still open
        except OSError:
            data = b""
        answered += bool(data and data.startswith(b"HTTP/1.1 503"))
        closed += data == b""
    took = time.monotonic() - t0
    for sock in socks:
        sock.close()
    return {"answered_503": answered, "closed_silently": closed, "open": n - answered - closed, "seconds": took, "healthz": healthz}


PROTOCOL_SERVER = """
import sys, uvicorn
from monitor.api.connections import ConnectionGuard, guarded_http
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
options = guarded_http(ConnectionGuard(1024, 32768, 10.0, 1)) if sys.argv[2] == "guarded" else {"http": "httptools"}
uvicorn.run(app, port=int(sys.argv[1]), log_level="warning", access_log=False, **options)
"""


def protocol_cost(protocol: str, requests: int) -> float:
    """Server CPU microseconds per small POST on one kept-alive connection."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", PROTOCOL_SERVER, str(port), protocol], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        body = b'[{"prompt": "hello there, how are you today?", "response": "fine, thanks"}]'
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(300):
                try:
                    client.post("/", content=body)
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            for _ in range(200):  # warm
                client.post("/", content=body)
            stat = Path(f"/proc/{proc.pid}/stat")
            before = cpu_seconds(stat)
            for _ in range(requests):
                client.post("/", content=body, headers={"Content-Type": "application/json", "Authorization": "Bearer " + "x" * 40})
            return (cpu_seconds(stat) - before) / requests * 1e6
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--floods", type=int, default=8)
    parser.add_argument("--flood-mib", type=int, default=64)
    parser.add_argument("--held", type=int, default=1000)
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, max(args.idle, args.held) + 256)), hard))
    print(f"# Unauthenticated connections that never finish a request head ({describe()})\n")
    proc, url = start({})
    port = int(url.rsplit(":", 1)[1])
    try:
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
        base = kib(proc.pid, "VmRSS:")
        sent: list[int] = []
        threads = [threading.Thread(target=lambda: sent.append(flood(port, args.flood_mib * 1024 * 1024))) for _ in range(args.floods)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        flood_rise = (kib(proc.pid, "VmHWM:") - base) / 1024
        print(f"header flood: {args.floods} connections x {args.flood_mib} MiB: peak RSS rise {flood_rise:.0f} MB over "
              f"{base / 1024:.0f} MB; bytes sent per connection before it was closed: max {max(sent) / 1024:.0f} KiB, "
              f"min {min(sent) / 1024:.0f} KiB")
        head_bytes = Settings.model_fields["max_request_head_bytes"].default - 2048
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
        base = kib(proc.pid, "VmRSS:")
        held = held_row(port, args.held, head_bytes)
        time.sleep(1)
        print(f"held heads: {args.held} connections x {head_bytes / 1024:.0f} KiB of unfinished head: peak RSS rise "
              f"{(kib(proc.pid, 'VmHWM:') - base) / 1024:.0f} MB")
        for sock in held:
            sock.close()
        time.sleep(1)
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
        base = kib(proc.pid, "VmRSS:")
        row = idle_row(port, url, args.idle)
        print(f"idle connections: {args.idle} opened: {row['answered_503']} answered 503 at once, {row['closed_silently']} "
              f"closed without an answer (head deadline), {row['open']} still open, after {row['seconds']:.1f} s; peak RSS "
              f"rise {(kib(proc.pid, 'VmHWM:') - base) / 1024:.0f} MB; /healthz meanwhile {row['healthz']}")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    costs: dict[str, list[str]] = {"guarded": [], "httptools": []}
    for protocol in ("httptools", "guarded") * 2:
        costs[protocol].append(f"{protocol_cost(protocol, args.requests):.0f}")
    print(f"protocol cost: server CPU per small POST (two runs each, alternated), guarded h11 {' and '.join(costs['guarded'])} us, "
          f"uvicorn's httptools {' and '.join(costs['httptools'])} us")


if __name__ == "__main__":
    main()
