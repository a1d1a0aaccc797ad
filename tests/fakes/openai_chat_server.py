"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions wire format.

vLLM and Ollama both serve ``POST /v1/chat/completions`` this way; the guard's answer comes from
``answer(messages)``. Tests can script failures (any status, ``Retry-After``, or a raw body), slow
every reply down with ``delay_s`` to provoke timeouts and overlap, and read back what arrived:
requests that arrived (``arrivals``, failures included), the bodies and ``Authorization`` headers of
those answered, and the most requests ever in flight at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = Callable[[list[dict[str, str]]], str]


@dataclass(frozen=True)
class ScriptedReply:
    status: int
    body: bytes
    retry_after: float | None = None
    headers: tuple[tuple[str, str], ...] = ()


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: a client opening more connections at once than the
    # accept loop takes on a busy machine has SYNs dropped and waits a 1 s retransmit.
    request_queue_size = 128


class FakeChatServer:
    """Use as a context manager: ``with FakeChatServer(answer) as server: ... server.base_url``."""

    def __init__(self, answer: Answer = lambda messages: "safe", api_key: str | None = None) -> None:
        self.answer = answer
        self.api_key = api_key
        self.delay_s = 0.0
        self.requests: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        self.arrivals = 0
        self.max_in_flight = 0
        self._in_flight = 0
        self._scripted: deque[ScriptedReply] = deque()
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def fail_next(self, status: int, times: int = 1, retry_after: float | None = None, body: bytes | None = None,
                  headers: dict[str, str] | None = None) -> None:
        """Answer the next ``times`` requests with ``status`` (an OpenAI error body unless ``body`` is given)."""
        error = {"error": {"message": f"scripted failure {status}", "type": "server_error", "code": status}}
        reply = ScriptedReply(status, body if body is not None else json.dumps(error).encode(), retry_after,
                              tuple((headers or {}).items()))
        with self._lock:
            self._scripted.extend([reply] * times)

    def __enter__(self) -> FakeChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # --- called from handler threads ---

    def _enter(self) -> ScriptedReply | None:
        with self._lock:
            self.arrivals += 1
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            return self._scripted.popleft() if self._scripted else None

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _complete(self, request: dict[str, Any], authorization: str | None) -> dict[str, Any]:
        with self._lock:
            self.requests.append(request)
            self.authorizations.append(authorization)
            n = len(self.requests)
        content = self.answer(request["messages"])
        prompt_tokens = sum(len(m["content"].split()) for m in request["messages"])
        completion_tokens = len(content.split())
        return {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": 1_700_000_000 + n,
            "model": request["model"],
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


def _request_error(body: Any) -> str | None:
    """What is wrong with a chat-completions request body, or None."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "'model' must be a non-empty string"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            return f"messages[{i}].role must be system, user or assistant"
        if not isinstance(message.get("content"), str):
            return f"messages[{i}].content must be a string"
    return None


def _handler_for(server: FakeChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            scripted = server._enter()
            try:
                time.sleep(server.delay_s)
                if scripted is not None:
                    self._reply(scripted.status, scripted.body, scripted.retry_after, scripted.headers)
                elif self.path != "/v1/chat/completions":
                    self._error(404, f"no route {self.path}")
                elif server.api_key is not None and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    self._error(401, "invalid api key")
                else:
                    try:
                        request = json.loads(raw)
                    except ValueError:
                        request = None
                    problem = _request_error(request)
                    if problem:
                        self._error(400, problem)
                    else:
                        completion = server._complete(request, self.headers.get("Authorization"))
                        self._reply(200, json.dumps(completion).encode())
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout); nothing to answer
            finally:
                server._leave()

        def _error(self, status: int, message: str) -> None:
            body = {"error": {"message": message, "type": "invalid_request_error", "code": status}}
            self._reply(status, json.dumps(body).encode())

        def _reply(self, status: int, body: bytes, retry_after: float | None = None, headers: tuple[tuple[str, str], ...] = ()) -> None:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if retry_after is not None:
                self.send_header("Retry-After", f"{retry_after:g}")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
