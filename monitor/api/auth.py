"""Bearer-token authentication with three scopes: ``ingest``, ``read`` and ``admin``.

Why: the monitor holds every prompt of the gateway and its feedback path steers a detector; anyone
who can reach the port could read the one and flip the other. Tokens come from settings
(``MONITOR_{INGEST,READ,ADMIN}_TOKENS`` or the ``*_TOKENS_FILE`` variants) as ``NAME:SECRET``;
only the name ever appears in logs, answers and feedback sources (a bare secret is named by a
hash prefix). Secrets are compared as SHA-256 digests with :func:`hmac.compare_digest`, against
every configured token, so the time taken tells nothing about which one nearly matched.

``admin`` implies ``read`` and ``ingest``. With ``auth: auto`` (the default) authentication is on
when any token is configured; with none it is off on a loopback host (``monitor serve`` on a
laptop keeps working) and the service refuses to start on any other host.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from monitor.config import Settings

log = logging.getLogger(__name__)

Scope = Literal["ingest", "read", "admin"]
SCOPES: tuple[Scope, ...] = ("ingest", "read", "admin")
#: What each configured scope grants.
GRANTS: dict[Scope, frozenset[str]] = {
    "ingest": frozenset({"ingest"}),
    "read": frozenset({"read"}),
    "admin": frozenset({"admin", "read", "ingest"}),
}
MIN_SECRET_CHARS = 16
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")

#: Documents the scheme in OpenAPI; ``auto_error=False`` because the answer (401 with a named body) is ours.
bearer = HTTPBearer(auto_error=False, description="A token configured in MONITOR_{INGEST,READ,ADMIN}_TOKENS.")


class AuthConfigError(ValueError):
    """Tokens are malformed, or the service would be reachable from the network without any."""


class AuthError(Exception):
    """401 (no or unknown token) or 403 (token without the scope); the app turns it into a JSON answer."""

    def __init__(self, status: int, message: str, scope: str, error: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.scope = scope
        self.error = error  # RFC 6750 error code for WWW-Authenticate

    def headers(self) -> dict[str, str]:
        value = f'Bearer realm="llm-safety-drift-monitor", scope="{self.scope}"'
        if self.error:
            value += f', error="{self.error}"'
        return {"WWW-Authenticate": value}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who sent a request: the token's name (never its secret) and what it may do."""

    name: str
    scopes: frozenset[str] = field(default_factory=frozenset)


ANONYMOUS = Principal("anonymous", frozenset({"admin", "read", "ingest"}))


def parse_token(raw: str, where: str) -> tuple[str, str]:
    """``NAME:SECRET`` → (name, secret); a bare secret gets the name ``token-<sha256 prefix>``.

    >>> parse_token("gateway:s3cret-s3cret-s3cret", "ingest_tokens")
    ('gateway', 's3cret-s3cret-s3cret')
    >>> parse_token("0123456789abcdef0123", "read_tokens")[0]
    'token-1bd8fd47'
    """
    raw = raw.strip()
    name, sep, secret = raw.partition(":")
    if not sep:
        name, secret = "token-" + hashlib.sha256(raw.encode()).hexdigest()[:8], raw
    elif not _NAME.match(name):
        raise AuthConfigError(f"{where}: a token name may have letters, digits and _.@- (1-64 characters)")
    if len(secret) < MIN_SECRET_CHARS:
        raise AuthConfigError(f"{where}: the secret of token {name!r} is shorter than {MIN_SECRET_CHARS} characters")
    return name, secret


def _read_file(path: Path, where: str) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise AuthConfigError(f"{where}: cannot read {path}: {exc.strerror}") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


class TokenTable:
    """Configured tokens as (digest, principal); :meth:`lookup` compares against every one."""

    def __init__(self, entries: dict[str, tuple[str, set[str]]]) -> None:
        # secret -> (name, scopes); a secret listed under two scopes has both
        self._entries = [(_digest(secret), Principal(name, frozenset(scopes))) for secret, (name, scopes) in entries.items()]

    @classmethod
    def from_settings(cls, settings: Settings) -> "TokenTable":
        entries: dict[str, tuple[str, set[str]]] = {}
        for scope in SCOPES:
            raws = [s.get_secret_value() for s in getattr(settings, f"{scope}_tokens")]
            path = getattr(settings, f"{scope}_tokens_file")
            if path is not None:
                raws += _read_file(path, f"{scope}_tokens_file")
            for raw in raws:
                name, secret = parse_token(raw, f"{scope}_tokens")
                known = entries.setdefault(secret, (name, set()))
                if known[0] != name:
                    raise AuthConfigError(f"{scope}_tokens: one secret is configured under two names ({known[0]!r}, {name!r})")
                known[1].update(GRANTS[scope])
        return cls(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> dict[str, list[str]]:
        """Scope → token names, for the start-up log line."""
        out: dict[str, list[str]] = {s: [] for s in SCOPES}
        for _, p in self._entries:
            for s in SCOPES:
                if s in p.scopes and (s == "admin" or "admin" not in p.scopes):
                    out[s].append(p.name)
        return out

    def lookup(self, secret: str) -> Principal | None:
        digest = _digest(secret)
        found: Principal | None = None
        for known, principal in self._entries:  # no early exit: the same work whichever token matches
            if hmac.compare_digest(known, digest):
                found = principal
        return found


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the port on this machine.

    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, True, False)
    """
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Authenticator:
    """Decides, once at start-up, whether requests need tokens, and checks them per request."""

    def __init__(self, settings: Settings) -> None:
        self.table = TokenTable.from_settings(settings)
        self.open_endpoints = frozenset(settings.open_endpoints)
        self.enabled = self._decide(settings)

    def _decide(self, settings: Settings) -> bool:
        if settings.auth == "off":
            log.warning(
                "AUTHENTICATION IS OFF (MONITOR_AUTH=off): anyone who reaches %s:%s can read prompts and send feedback",
                settings.host, settings.port,
            )
            return False
        if len(self.table):
            names = {s: n for s, n in self.table.names().items() if n}
            log.info("authentication on: tokens %s", "; ".join(f"{s}: {', '.join(n)}" for s, n in names.items()))
            return True
        if settings.auth == "on":
            raise AuthConfigError("auth: 'on' but no token is configured; set MONITOR_INGEST_TOKENS, MONITOR_READ_TOKENS or MONITOR_ADMIN_TOKENS (NAME:SECRET)")
        if is_loopback(settings.host):
            log.info("authentication off: no token configured and bound to loopback %s (auth: auto)", settings.host)
            return False
        raise AuthConfigError(
            f"auth: host {settings.host!r} is reachable from the network and no token is configured; set "
            "MONITOR_INGEST_TOKENS / MONITOR_READ_TOKENS / MONITOR_ADMIN_TOKENS (NAME:SECRET, or the *_FILE variants), "
            "or MONITOR_AUTH=off to run without authentication"
        )

    def check(self, credentials: HTTPAuthorizationCredentials | None, scope: Scope) -> Principal:
        if not self.enabled:
            return ANONYMOUS
        if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
            raise AuthError(401, f"authorization: missing bearer token (this endpoint needs scope '{scope}')", scope, "")
        principal = self.table.lookup(credentials.credentials)
        if principal is None:
            raise AuthError(401, f"authorization: unknown token (this endpoint needs scope '{scope}')", scope, "invalid_token")
        if scope not in principal.scopes:
            raise AuthError(
                403, f"authorization: token {principal.name!r} lacks scope '{scope}'", scope, "insufficient_scope"
            )
        return principal


def require(scope: Scope) -> Callable[..., Any]:
    """A FastAPI dependency: the request's :class:`Principal` for ``scope``, else :class:`AuthError`.
    Declares the bearer scheme, so OpenAPI documents the route as secured."""

    async def dependency(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> Principal:
        principal = request.app.state.auth.check(credentials, scope)
        request.state.principal = principal
        return principal

    return dependency


def sender(request: Request) -> str:
    """The name of the token that sent an ingest request, which namespaces its event ids ("" when
    authentication is off: one namespace, as before tokens)."""
    principal = getattr(request.state, "principal", None)
    return "" if principal is None or principal is ANONYMOUS else principal.name


def require_unless_open(endpoint: str) -> Callable[..., Any]:
    """For probes (healthz, readyz, metrics): open while ``endpoint`` is in ``open_endpoints``, else scope ``read``."""

    async def dependency(request: Request) -> Principal:
        auth: Authenticator = request.app.state.auth
        if endpoint in auth.open_endpoints:
            return ANONYMOUS
        return auth.check(await bearer(request), "read")

    return dependency
