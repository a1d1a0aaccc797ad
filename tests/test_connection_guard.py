"""The connection guard in a real uvicorn: what a connection may hold before the app sees a request
(open connections, request head bytes, time to send the head), answered, counted and exported."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from contextlib import closing, contextmanager
from typing import Iterator

import httpx
import pytest
import uvicorn

from monitor.api.connections import MAX_HEAD_LINES, ConnectionGuard, guarded_http
from monitor.config import Settings
from monitor.pipeline.builder import build_service
from tests.helpers.server import free_port, running_server


async def small_app(scope, receive, send):
    """Echoes how many body bytes it read; ``/slow`` answers after 1 s; ``/early`` answers 401 without
    reading; refuses WebSockets."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close"})
        return
    if scope["type"] != "http":
        return
    if scope["path"] == "/early":  # answers before reading the body, as a route refusing a token does
        await send({"type": "http.response.start", "status": 401, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
        return
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    if scope["path"] == "/slow":
        await asyncio.sleep(1.0)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(size).encode()})


@contextmanager
def guarded_server(**limits) -> Iterator[tuple[int, ConnectionGuard]]:
    guard = ConnectionGuard(**{"max_connections": 100, "max_head_bytes": 16 * 1024, "head_timeout_s": 5.0,
                               "retry_after_s": 2, **limits})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(small_app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off", **guarded_http(guard)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield port, guard
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def send_slowly(sock: socket.socket, data: bytes, piece: int = 4096) -> None:
    for i in range(0, len(data), piece):
        sock.sendall(data[i : i + piece])
        time.sleep(0.001)  # one read per piece on the server


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.mark.parametrize("flood", [
    b"X-Pad: " + b"a" * 200 + b"\r\n",  # endless header lines
    b"b" * 200,  # one header value that never ends (httptools buffers it whole until its line ends)
])
def test_a_head_past_its_byte_cap_is_a_431_and_closed(flood):
    with guarded_server(max_head_bytes=16 * 1024) as (port, guard):
        with closing(connect(port)) as sock:
            head = b"GET / HTTP/1.1\r\nHost: x\r\n" + (b"X-Long: " if flood.startswith(b"b") else b"")
            send_slowly(sock, head + flood * (20 * 1024 // len(flood)))  # past the cap, then wait for the answer
            answer = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
        assert guard.refused["head_too_large"] == 1
        wait_for(lambda: guard.open == 0)


def test_a_head_of_too_many_lines_or_too_many_bytes_in_one_read_is_a_431():
    """Counted up to the head's blank line, whatever else the read holds, so the answer does not depend on
    how the bytes arrive; and by lines, since tiny header lines take many times their bytes once parsed."""
    many_lines = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"a:\r\n" * MAX_HEAD_LINES + b"\r\n"
    too_long = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Pad: " + b"a" * 17_000 + b"\r\n\r\nhello"
    with guarded_server(max_head_bytes=16 * 1024) as (port, guard):
        for request in (many_lines, too_long):
            with closing(connect(port)) as sock:
                sock.sendall(request)
                assert read_until_closed(sock).startswith(b"HTTP/1.1 431 ")
        assert guard.refused["head_too_large"] == 2


def test_a_head_and_a_large_body_in_one_write_pass():
    body = b"z" * 200_000
    with guarded_server(max_head_bytes=16 * 1024) as (port, guard):
        with closing(connect(port)) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            answer = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 200 ") and b"\r\n200000\r\n" in answer
        assert sum(guard.refused.values()) == 0


def test_endless_trailers_are_bounded_and_counted():
    """A chunked body's trailers come after the head: h11's buffer bound closes the connection (400)."""
    with guarded_server(max_head_bytes=16 * 1024) as (port, guard):
        with closing(connect(port)) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n")
            try:
                send_slowly(sock, b"a: b\r\n" * 60_000, piece=16_384)  # 360 KB, past the 16 KiB + one read bound
            except OSError:
                pass  # closed while sending: the bound held
            answer = read_until_closed(sock)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 400 "), answer[:80]
        wait_for(lambda: guard.refused["malformed"] == 1 and guard.open == 0)


def test_pipelined_requests_waiting_their_turn_are_not_cut_by_the_head_deadline():
    """While a request is answered, h11 holds the next one unread: its head clock has not started."""
    slow = b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na"
    with guarded_server(head_timeout_s=0.5) as (port, guard):
        with closing(connect(port)) as sock:
            sock.sendall(slow + slow + b"GET / HTTP/1.1\r\nHost: x\r\n")  # the third head is unfinished
            time.sleep(0.2)
            sock.sendall(b"Connection: close\r\n\r\n")
            answer = read_until_closed(sock)
        assert answer.count(b"HTTP/1.1 200 ") == 3, answer
        assert guard.refused["head_timeout"] == 0


def test_heads_under_the_cap_and_large_bodies_pass():
    """Only head bytes count: a body sent with its head in one write, and a request whose headers take
    most of the cap, are served; so are many requests on one kept-alive connection."""
    with guarded_server(max_head_bytes=16 * 1024) as (port, guard):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert client.get("/", headers={"X-Pad": "a" * 12_000}).status_code == 200
            body = b"x" * 3_000_000
            resp = client.post("/", content=body)
            assert resp.status_code == 200 and resp.text == str(len(body))
            for _ in range(50):
                assert client.post("/", content=b"y" * 10_000).text == "10000"
        assert sum(guard.refused.values()) == 0


def test_a_silent_or_trickling_connection_is_closed_at_the_head_deadline():
    with guarded_server(head_timeout_s=0.5) as (port, guard):
        with closing(connect(port)) as silent, closing(connect(port)) as trickling:
            started = time.monotonic()
            trickling.sendall(b"GET / HTTP/1.1\r\n")
            for _ in range(3):
                time.sleep(0.1)
                trickling.sendall(b"X-A: b\r\n")  # each byte would have stopped uvicorn's keep-alive timer
            assert read_until_closed(silent) == b""
            assert read_until_closed(trickling) == b""
            assert time.monotonic() - started < 3.0
        assert guard.refused["head_timeout"] == 2
        wait_for(lambda: guard.open == 0)


def test_the_head_deadline_never_cuts_a_slow_answer_on_a_kept_alive_connection():
    """The deadline starts with a request's first byte, not when the previous one was read: a client
    waiting for a slow answer and then sending its next request is served both times."""
    with guarded_server(head_timeout_s=0.5) as (port, guard):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert client.post("/slow", content=b"abc").text == "3"
            assert client.post("/slow", content=b"abcd").text == "4"
        assert guard.refused["head_timeout"] == 0


def test_connections_past_the_cap_get_a_503_with_retry_after_and_close():
    with guarded_server(max_connections=3, retry_after_s=7) as (port, guard):
        held = [connect(port) for _ in range(3)]
        try:
            wait_for(lambda: guard.open == 3)
            for _ in range(20):  # clients that send their request at once read the 503, not a reset
                with closing(connect(port)) as extra:
                    extra.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
                    answer = read_until_closed(extra)
                assert answer.startswith(b"HTTP/1.1 503 ") and re.search(rb"retry-after: 7\r\n", answer), answer
            assert guard.refused["connection_limit"] == 20 and guard.open == 3
            held.pop().close()
            wait_for(lambda: guard.open == 2)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:  # a freed slot serves again
                assert client.get("/").status_code == 200
        finally:
            for sock in held:
                sock.close()
        wait_for(lambda: guard.open == 0)


def test_a_body_dribbled_after_an_early_answer_is_on_the_head_clock():
    """A client answered before its body was read (a 401) cannot keep the connection by dribbling that body."""
    with guarded_server(head_timeout_s=1.0) as (port, guard):
        with closing(connect(port)) as sock:
            sock.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
            started = time.monotonic()
            try:
                for _ in range(40):
                    sock.sendall(b"x" * 10)
                    time.sleep(0.1)
            except OSError:
                pass  # closed while dribbling
            answer = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 401 ") and time.monotonic() - started < 3.0
        assert guard.refused["head_timeout"] == 1
        wait_for(lambda: guard.open == 0)


def test_a_pipelined_head_is_measured_while_the_answer_before_it_is_prepared():
    with guarded_server(max_head_bytes=16 * 1024) as (port, guard):
        with closing(connect(port)) as sock:
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.3)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"a:\r\n" * 30_000 + b"\r\n")
            answer = read_until_closed(sock)
        assert b"431" not in answer  # nothing written ahead of the answer being prepared: the connection just closes
        assert guard.refused["head_too_large"] == 1
        wait_for(lambda: guard.open == 0)


def test_odd_but_valid_clients_pass_and_a_late_malformed_byte_logs_no_traceback(caplog):
    body = b"q" * 40_000
    with guarded_server(max_head_bytes=16 * 1024) as (port, guard):
        with closing(connect(port)) as sock:  # LF header lines closed by a CRLF blank line: h11 takes it
            sock.sendall(b"POST / HTTP/1.1\nHost: x\nConnection: close\nContent-Length: %d\n\r\n" % len(body) + body)
            assert b"\r\n40000\r\n" in read_until_closed(sock)
        with closing(connect(port)) as sock:  # a chunked request answered, then a bad chunk line
            sock.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            time.sleep(0.2)
            sock.sendall(b"zz\r\n")
            assert read_until_closed(sock).startswith(b"HTTP/1.1 401 ")
        wait_for(lambda: guard.open == 0)
    assert "Traceback" not in caplog.text and "Fatal error" not in caplog.text


def test_a_websocket_upgrade_releases_its_slot():
    """uvicorn hands an upgraded transport to its WebSocket protocol, which gets the connection_lost."""
    upgrade = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    with guarded_server(max_connections=5) as (port, guard):
        for _ in range(10):
            with closing(connect(port)) as sock:
                sock.sendall(upgrade)
                assert read_until_closed(sock).startswith(b"HTTP/1.1 403 ")
        wait_for(lambda: guard.open == 0)
        assert guard.refused["connection_limit"] == 0


def test_the_service_exports_what_its_guard_refused(embedder):
    settings = Settings(judge="prototype", max_request_head_bytes=8192)
    with running_server(settings, lambda s: build_service(s, embedder=embedder)) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with closing(connect(port)) as sock:
            send_slowly(sock, b"POST /v1/events HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: aaaaaaaa\r\n" * 600)
            assert read_until_closed(sock).startswith(b"HTTP/1.1 431 ")
        text = server.client.get("/metrics").text
        assert 'llmsafety_http_connections_refused_total{reason="head_too_large"} 1.0' in text
        assert 'llmsafety_http_connections_refused_total{reason="connection_limit"} 0.0' in text
        assert re.search(r"^llmsafety_http_connections [1-9]", text, re.M)  # the scrape's own connection at least


def test_monitor_serve_runs_uvicorn_with_the_guard_from_its_settings(monkeypatch, caplog):
    import resource

    from typer.testing import CliRunner

    from monitor.api.connections import GuardedH11Protocol
    from monitor.cli import app as cli

    runs = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: runs.append(k))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    env = {"MONITOR_AUTH": "auto", "MONITOR_MAX_CONNECTIONS": "7", "MONITOR_REQUEST_HEAD_TIMEOUT_SECONDS": "2.5"}
    assert CliRunner().invoke(cli, ["serve"], env=env).exit_code == 0
    protocol = runs[0]["http"]
    assert issubclass(protocol, GuardedH11Protocol) and runs[0]["h11_max_incomplete_event_size"] > 32 * 1024
    assert (protocol.guard.max_connections, protocol.guard.head_timeout_s, protocol.guard.max_head_bytes) == (7, 2.5, 32 * 1024)
    assert "open-file limit" not in caplog.text
    if soft != resource.RLIM_INFINITY and soft < 1_000_000:
        env["MONITOR_MAX_CONNECTIONS"] = str(soft)
        assert CliRunner().invoke(cli, ["serve"], env=env).exit_code == 0
        assert f"max_connections {soft} is above what the open-file limit ({soft})" in caplog.text
