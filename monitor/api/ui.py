"""``/ui``: the triage console, a server-rendered page (Jinja2, no external assets, no JavaScript needed).

Access. The same tokens as the API: a reviewer pastes a token once at ``/ui/login``; the page then
runs on a session cookie (random id, ``HttpOnly``, ``SameSite=Strict``, ``Secure`` over https, path
``/ui``, expiring after ``SESSION_SECONDS``) mapped in memory to the token's name and scopes, never
to the secret. Viewing needs scope ``read``, every form needs ``admin``. CSRF: every form carries the
session's own random token, compared in constant time; ``SameSite=Strict`` keeps the cookie off
cross-site posts as well; the login form, which has no session yet, is refused when posted from
another site. With authentication off (loopback without tokens) there is no login.

Forms post to ``/ui/...`` and call the same triage actions as the JSON API; a refused action
re-renders the page with the error (naming the field) and its 4xx status.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from monitor.api.adapter_ingest import read_body
from monitor.api.auth import ANONYMOUS, Authenticator, Principal
from monitor.api.deps import count_refused_body
from monitor.backend import NotReady
from monitor.ingest.parsing import BodyError
from monitor.api.triage import export_response
from monitor.api.ui_page import gather, when
from monitor.pipeline.service import MonitorService
from monitor.state.store import StoreUnavailable
from monitor.pipeline.triaging import triage_of
from monitor.triage.console import SplitLabel, Triage, TriageError

router = APIRouter(include_in_schema=False)
COOKIE = "llmsafety_ui"
SESSION_SECONDS = 8 * 3600
MAX_SESSIONS = 1000
MAX_FORM_BYTES = 64 * 1024
# The forms' own share of memory (monitor.api.body_budget): login needs no session, so anyone may post to it, and
# posts that fill this budget refuse the console's forms (login, logout, triage), never the gateway's ingest.
# 32 largest forms at once.
FORMS_BUDGET_BYTES = 32 * MAX_FORM_BYTES
TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).with_name("templates")), autoescape=select_autoescape(["html"]))
TEMPLATES.filters["when"] = when
TEMPLATES.filters["pct"] = lambda v: "-" if v is None else f"{v:.2%}"


@dataclass
class Session:
    principal: Principal
    csrf: str
    expires: float
    notice: str = ""


class Sessions:
    """Browser sessions in this process (a restart logs reviewers out), bounded in count and age."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, Session] = OrderedDict()

    def open(self, principal: Principal) -> str:
        sid = secrets.token_urlsafe(32)
        self._items[sid] = Session(principal, secrets.token_urlsafe(32), time.monotonic() + SESSION_SECONDS)
        while len(self._items) > MAX_SESSIONS:
            self._items.popitem(last=False)
        return sid

    def get(self, sid: str | None) -> Session | None:
        session = self._items.get(sid or "")
        if session is None or session.expires < time.monotonic():
            self._items.pop(sid or "", None)
            return None
        return session

    def close(self, sid: str | None) -> None:
        self._items.pop(sid or "", None)


def _sessions(request: Request) -> Sessions:
    state = request.app.state
    if not hasattr(state, "ui_sessions"):
        state.ui_sessions = Sessions()
    return state.ui_sessions


def _session(request: Request) -> Session | None:
    """The request's session; with authentication off, one anonymous session per process."""
    sessions = _sessions(request)
    auth: Authenticator = request.app.state.auth
    if not auth.enabled:
        if not hasattr(request.app.state, "ui_open_session"):
            request.app.state.ui_open_session = Session(ANONYMOUS, secrets.token_urlsafe(32), float("inf"))
        return request.app.state.ui_open_session
    return sessions.get(request.cookies.get(COOKIE))


async def _form(request: Request) -> dict[str, list[str]]:
    """The posted form. Read through the ingest routes' bounded reader, not ``request.body()``: login takes no
    session, so anyone can post to it, and a body must not be held in memory past the form's limit to be refused."""
    try:
        body = await read_body(request, MAX_FORM_BYTES, limit=f"the form limit of {MAX_FORM_BYTES} bytes")
    except BodyError as exc:
        count_refused_body(request, request.app.state.holder["service"], exc.status)
        raise TriageError(exc.status, f"form: {exc.message.removeprefix('body: ')}", exc.headers) from None
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=500)
    except (UnicodeDecodeError, ValueError) as exc:
        count_refused_body(request, request.app.state.holder["service"], 400)
        raise TriageError(400, f"form: not a URL-encoded form ({type(exc).__name__})") from None


def _one(form: dict[str, list[str]], name: str) -> str:
    return (form.get(name) or [""])[0]


def _render(name: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    return HTMLResponse(TEMPLATES.get_template(name).render(**context), status_code=status,
                        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                 "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                                                            "form-action 'self'; frame-ancestors 'none'", **(headers or {})})


def _retry_after(request: Request) -> dict[str, str]:
    return {"Retry-After": str(request.app.state.settings.retry_after_seconds)}


def _login_page(message: str = "", status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    return _render("login.html", status, headers, message=message)


async def _page(request: Request, session: Session, error: str = "", status: int = 200,
                headers: dict[str, str] | None = None) -> HTMLResponse:
    holder = request.app.state.holder
    service: MonitorService | None = holder["service"]
    if service is None:
        return _render("login.html", 503, _retry_after(request),
                       message=f"not ready: {holder['error'] or 'the model is still loading'}; reload in a moment")
    triage = triage_of(service)
    if triage is None:
        return _render("login.html", 409, message="triage: runs in the embedded service only (role all)")
    page = await asyncio.to_thread(gather, service, triage)
    notice, session.notice = session.notice, ""
    return _render("ui.html", status, headers, page=page, who=session.principal, csrf=session.csrf, error=error, notice=notice,
                   admin="admin" in session.principal.scopes, login=request.app.state.auth.enabled)


@router.get("/ui", response_class=HTMLResponse)
async def ui(request: Request) -> Response:
    session = _session(request)
    if session is None:
        return RedirectResponse("/ui/login", status_code=303)
    if "read" not in session.principal.scopes:
        return _login_page(f"token {session.principal.name!r} lacks scope 'read'", 403)
    return await _page(request, session)


@router.get("/ui/login", response_class=HTMLResponse)
async def login_form() -> Response:
    return _login_page()


def _cross_origin(request: Request) -> bool:
    """Whether a browser says the request comes from a page of another site (``Origin``, else ``Referer``).

    Login CSRF: a page elsewhere could post the attacker's token to ``/ui/login`` and have the
    reviewer triage in the attacker's session; ``SameSite`` does not help, as there is no session yet.
    Browsers name the page a form was posted from; a client that names none (curl) is not a browser.
    Compared with the ``Host`` header or, behind a reverse proxy that rewrites ``Host``, the
    ``X-Forwarded-Host`` it sets (a form posted from another site cannot set that header), host
    names without case and default ports.
    """
    source = request.headers.get("origin") or request.headers.get("referer")
    if source is None:
        return False
    parts = urlsplit(source)
    scheme = parts.scheme
    origin = _site(*_host_port(parts.netloc), scheme)
    if origin[0] is None:  # "null" (a sandboxed page), or no readable host: another site
        return True
    ours = [request.headers.get("host") or "", (request.headers.get("x-forwarded-host") or "").split(",")[0]]
    return all(origin != _site(*_host_port(value.strip()), scheme) for value in ours if value.strip())


def _host_port(netloc: str) -> tuple[str | None, int | None]:
    """Host and port of ``netloc``; ``(None, None)`` when it has none or they do not parse."""
    try:
        parts = urlsplit(f"//{netloc}")
        return parts.hostname, parts.port
    except ValueError:
        return None, None


def _site(host: str | None, port: int | None, scheme: str) -> tuple[str | None, int | None]:
    """``(host, port)`` with the host lower-cased and the scheme's default port made explicit.

    >>> _site("Example.COM", None, "https") == _site("example.com", 443, "https")
    True
    """
    return (host.lower() if host else None), port or {"http": 80, "https": 443}.get(scheme)


@router.post("/ui/login")
async def login(request: Request) -> Response:
    auth: Authenticator = request.app.state.auth
    if not auth.enabled:
        return RedirectResponse("/ui", status_code=303)
    if _cross_origin(request):
        return _login_page("origin: the login form was posted from another site; log in from this page", 403)
    try:
        token = _one(await _form(request), "token").strip()
    except TriageError as exc:
        return _login_page(exc.message, exc.status, exc.headers)
    if not token:
        return _login_page("token: paste a read or admin token", 422)
    principal = auth.table.lookup(token)
    if principal is None:
        return _login_page("token: unknown token", 401)
    if "read" not in principal.scopes:
        return _login_page(f"token: {principal.name!r} lacks scope 'read'", 403)
    response = RedirectResponse("/ui", status_code=303)
    response.set_cookie(COOKIE, _sessions(request).open(principal), max_age=SESSION_SECONDS, path="/ui", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return response


@router.post("/ui/logout")
async def logout(request: Request) -> Response:
    session = _session(request)
    try:
        form = await _form(request)
    except TriageError as exc:  # e.g. a 503 under load: say so, rather than drop the cookie of a session still open
        if session is not None:
            return await _page(request, session, f"logout not done: {exc.message}", exc.status, exc.headers)
        form = {}
    if session is not None and hmac.compare_digest(_one(form, "csrf"), session.csrf):
        _sessions(request).close(request.cookies.get(COOKIE))
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
    return response


async def _act(request: Request, anchor: str, action: Callable[[Triage, str, dict[str, list[str]]], dict[str, Any]]) -> Response:
    """Check session, CSRF and scope, run the action, then redirect (303) back to the page or show the error."""
    session = _session(request)
    if session is None:
        return _login_page("session: log in again (sessions end after 8 hours or a restart)", 401)
    try:
        form = await _form(request)
        if not hmac.compare_digest(_one(form, "csrf"), session.csrf):
            raise TriageError(403, "csrf: the form's token does not match this session; reload the page")
        if "admin" not in session.principal.scopes:
            raise TriageError(403, f"authorization: token {session.principal.name!r} lacks scope 'admin'")
        service: MonitorService | None = request.app.state.holder["service"]
        triage = triage_of(service) if service is not None else None
        if triage is None:
            raise TriageError(409, "triage: not available (model loading, or a scale-out role)")
        entry = await asyncio.to_thread(action, triage, session.principal.name, form)
    except TriageError as exc:
        return await _page(request, session, exc.message, exc.status, exc.headers)
    except StoreUnavailable as exc:
        return await _page(request, session, f"state store unavailable: {exc}; nothing was changed, retry later", 503,
                           _retry_after(request))
    session.notice = f"{entry['action']} {entry['target']}: done (judge {entry['judge_version_after']})"
    return RedirectResponse(f"/ui#{anchor}", status_code=303)


def _number(form: dict[str, list[str]], name: str) -> float:
    try:
        return float(_one(form, name))
    except ValueError:
        raise TriageError(422, f"{name}: must be a number, got {_one(form, name)!r}") from None


@router.post("/ui/clusters/{cluster_id}")
async def ui_cluster(request: Request, cluster_id: str) -> Response:
    def action(triage: Triage, who: str, form: dict[str, list[str]]) -> dict[str, Any]:
        kind = _one(form, "action")
        labels = [SplitLabel(e, c) for e, c in zip(form.get("event_id", []), form.get("label", [])) if c]
        return triage.label_cluster(who, cluster_id, kind, name=_one(form, "name").strip() or None,
                                    category=_one(form, "category") or None, description=_one(form, "description") or None,
                                    labels=labels, reason=_one(form, "reason"))
    return await _act(request, "clusters", action)


@router.post("/ui/alerts/{alert_id}")
async def ui_alert(request: Request, alert_id: str) -> Response:
    def action(triage: Triage, who: str, form: dict[str, list[str]]) -> dict[str, Any]:
        kind = _one(form, "action")
        seconds = 60.0 * _number(form, "duration_minutes") if kind == "silence" else None
        return triage.act_on_alert(who, alert_id, kind, seconds=seconds, reason=_one(form, "reason"))
    return await _act(request, "alerts", action)


@router.post("/ui/revert")
async def ui_revert(request: Request) -> Response:
    return await _act(request, "judge", lambda triage, who, form: triage.revert(who, _one(form, "reason")))


@router.get("/ui/export")
async def ui_export(request: Request, format: str = "jsonl") -> Response:
    session = _session(request)
    if session is None:
        return RedirectResponse("/ui/login", status_code=303)
    service: MonitorService | None = request.app.state.holder["service"]
    if service is None:
        raise NotReady("the model is still loading", request.app.state.settings.retry_after_seconds)
    triage = triage_of(service)
    if triage is None:
        return _login_page("triage: runs in the embedded service only (role all)", 409)
    return export_response(request, triage, format, False, session.principal)
