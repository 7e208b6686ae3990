"""Who may do what: the token, the loopback rule, and the headers every response carries.

* The token comes from ``$DASHSPOOL_WEB_TOKEN`` or the file ``$DASHSPOOL_WEB_TOKEN_FILE`` names
  (readable by its owner only), never from policies.toml.
* Without a token the server may only listen on loopback, and it is read-only.
* The actions (requeue, pause, resume) need ``Authorization: Bearer <token>``. The pages' buttons
  send it from JavaScript with the token the person typed (kept in sessionStorage, never in a
  cookie): a forged form on another site cannot set that header, so there is nothing for
  cross-site request forgery to ride on, and no CORS headers are ever sent.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import stat
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response

from watchers.errors import ConfigError

TOKEN_ENV = "DASHSPOOL_WEB_TOKEN"
TOKEN_FILE_ENV = "DASHSPOOL_WEB_TOKEN_FILE"
MIN_TOKEN_CHARS = 16


def load_token(environ: dict[str, str] | None = None) -> str | None:
    """The token from the environment or its file; None when neither is set."""
    env = os.environ if environ is None else environ
    value = env.get(TOKEN_ENV, "").strip()
    source = f"${TOKEN_ENV}"
    if not value and env.get(TOKEN_FILE_ENV):
        path = Path(env[TOKEN_FILE_ENV]).expanduser()
        source = str(path)
        try:
            mode = path.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(
                    f"{path}: the web token file must be readable by its owner only "
                    f"(chmod 600 {path})"
                )
            value = path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the web token file: {e.strerror}") from None
    if not value:
        return None
    if len(value) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"{source}: the web token must be at least {MIN_TOKEN_CHARS} characters "
            "(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
        )
    return value


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token."""
    if not is_loopback(host) and token is None:
        raise ConfigError(
            f"dashspool web --host {host}: listening beyond loopback needs a token in "
            f"${TOKEN_ENV} or a file named by ${TOKEN_FILE_ENV} (see docs/web.md)"
        )


def require_token(request: Request) -> None:
    """A dependency of the actions: 403 when the server has no token (read-only), 401 when the
    request does not carry it."""
    expected: str | None = request.app.state.web.token
    if expected is None:
        raise HTTPException(
            403, f"read-only: start dashspool web with ${TOKEN_ENV} set to allow actions"
        )
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), expected.encode()
    ):
        raise HTTPException(
            401, "this action needs the token", headers={"WWW-Authenticate": "Bearer"}
        )


def tile_origin(tile_url: str) -> str:
    """The CSP source for the map tiles (``{s}`` subdomains become a wildcard)."""
    if not tile_url:
        return ""
    parts = urlsplit(tile_url.replace("{s}", "tiles-sub"))
    host = (parts.hostname or "").replace("tiles-sub", "*")
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def content_security_policy(tile_url: str) -> str:
    tiles = tile_origin(tile_url)
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src 'self' data:{' ' + tiles if tiles else ''}",
            "media-src 'self'",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


class SecurityHeaders(BaseHTTPMiddleware):
    """CSP (no inline script or style), nosniff, no framing, no referrer; and, when the server
    listens on loopback, only loopback Host names (a DNS-rebinding page gets 421)."""

    def __init__(self, app: object, *, csp: str, hosts: tuple[str, ...] | None) -> None:
        super().__init__(app)  # type: ignore[arg-type]
        self.csp = csp
        self.hosts = hosts

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if self.hosts is not None:
            host = request.headers.get("host", "")
            host = host[1 : host.find("]")] if host.startswith("[") else host.split(":")[0]
            if host not in self.hosts:
                return Response("unknown Host\n", status_code=421, media_type="text/plain")
        response = await call_next(request)
        h = response.headers
        h["Content-Security-Policy"] = self.csp
        h["X-Content-Type-Options"] = "nosniff"
        h["X-Frame-Options"] = "DENY"
        h["Referrer-Policy"] = "no-referrer"
        h["Cross-Origin-Opener-Policy"] = "same-origin"
        h["Cross-Origin-Resource-Policy"] = "same-origin"
        if not request.url.path.startswith(("/static/", "/media/")):
            h.setdefault("Cache-Control", "no-store")
        return response
