"""Who may talk to the studio: a browser on this machine that holds the session token.

The server binds loopback, but a web page from anywhere can still make the user's browser send
requests to ``127.0.0.1`` (DNS rebinding, cross-site forms). So every request must:

- name a loopback ``Host`` (a rebinding attacker's page sends its own name): else 403;
- carry the session token, as the ``HttpOnly`` cookie set on the first page load or as the
  ``X-Arkor-Studio-Token`` header (scripts): none is 401, a wrong one 403;
- for a request that changes something (POST), come from no other origin than the studio's.

``GET /?token=...`` (the URL the command prints) sets the cookie and redirects to ``/``, so the
token leaves the address bar and never reaches a ``Referer``. The cookie is ``SameSite=Strict``.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import Headers

COOKIE = "arkor_studio_token"
HEADER = "x-arkor-studio-token"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def hostname(host: str | None) -> str:
    """The name part of a ``Host`` header or an origin's netloc (``[::1]:80`` -> ``::1``)."""
    if not host:
        return ""
    return (urlsplit(f"//{host}").hostname or "").lower()


def same_token(given: str | None, token: str) -> bool:
    """Whether ``given`` is the session token (compared in constant time)."""
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def _cookie(headers: Headers) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value
    return None


class StudioAccess:
    """ASGI middleware enforcing the rules of the module docstring in front of ``app``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if hostname(headers.get("host")) not in LOOPBACK_HOSTS:
            await _refuse(send, 403, "the studio is loopback-only: open it as 127.0.0.1")
            return
        if scope["path"] == "/" and self._login(scope):
            await _login_redirect(send, self.token)
            return
        given = headers.get(HEADER) or _cookie(headers)
        if given is None:
            await _refuse(send, 401, "no studio token: open the URL `arkor-ops studio` printed")
            return
        if not same_token(given, self.token):
            await _refuse(send, 403, "wrong studio token (a studio restarted mints a new one)")
            return
        origin = headers.get("origin")
        if scope["method"] not in ("GET", "HEAD") and origin and not _own_origin(origin, headers):
            await _refuse(send, 403, f"cross-origin request from {origin[:100]} refused")
            return
        await self.app(scope, receive, send)

    def _login(self, scope: Scope) -> bool:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        return same_token((query.get("token") or [None])[0], self.token)


def _own_origin(origin: str, headers: Headers) -> bool:
    return urlsplit(origin).netloc.lower() == headers.get("host", "").lower()


async def _refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _login_redirect(send: Send, token: str) -> None:
    cookie = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [
                (b"location", b"/"),
                (b"set-cookie", cookie.encode()),
                (b"cache-control", b"no-store"),
                (b"referrer-policy", b"no-referrer"),
                (b"content-length", b"0"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})
