"""Request guards of ``samkit serve``: the access token and the request-size cap.

The token (when set) is accepted as ``Authorization: Bearer <token>`` or ``Token <token>``
(Label Studio's form), as the password of HTTP basic auth, as ``?token=`` in the URL, or as
the ``samkit_token`` cookie that the page sets when opened with ``?token=``. It is compared in
constant time. Request bodies over ``max_body`` bytes are refused with 413 before they are read
in full.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

COOKIE = "samkit_token"
ISOLATION_HEADERS = [
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-embedder-policy", b"require-corp"),
    (b"x-content-type-options", b"nosniff"),
]


@dataclass
class Limits:
    token: str | None = None
    max_body: int = 32 * 2**20
    max_pixels: int = 50_000_000


def _json(status: int, message: str, extra: list | None = None) -> tuple[dict, bytes]:
    body = json.dumps({"detail": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return {
        "type": "http.response.start",
        "status": status,
        "headers": headers + (extra or []),
    }, body


def _presented_tokens(scope: dict) -> list[str]:
    found = []
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() in ("bearer", "token"):
        found.append(value.strip())
    elif scheme.lower() == "basic":
        with contextlib.suppress(ValueError):
            found.append(base64.b64decode(value.strip()).decode().partition(":")[2])
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    found += query.get("token", [])
    if "cookie" in headers:
        cookie = SimpleCookie()
        with contextlib.suppress(Exception):
            cookie.load(headers["cookie"])
        if COOKIE in cookie:
            found.append(cookie[COOKIE].value)
    return found


class GuardMiddleware:
    """Pure ASGI middleware: token check, then a streaming body-size cap."""

    def __init__(self, app: Any, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        token = self.limits.token
        if token:
            good = any(
                hmac.compare_digest(t.encode(), token.encode()) for t in _presented_tokens(scope)
            )
            if not good:
                start, body = _json(
                    401,
                    "missing or wrong token: open the page as /?token=... or send "
                    "'Authorization: Bearer <token>'",
                    [(b"www-authenticate", b'Bearer realm="samkit"')],
                )
                await send(start)
                await send({"type": "http.response.body", "body": body})
                return
        cap = self.limits.max_body
        for k, v in scope["headers"]:
            if k.lower() == b"content-length" and v.isdigit() and int(v) > cap:
                return await self._too_large(send, cap)
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    raise _TooLarge()
            return message

        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                # cross-origin isolation: lets the in-browser decoder use wasm threads
                message["headers"] = [*message.get("headers", []), *ISOLATION_HEADERS]
                if token and _query_token(scope) == token:
                    # the page was opened with ?token=: keep it in a cookie for images and fetches
                    cookie = f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
                    message["headers"] = [
                        *message.get("headers", []),
                        (b"set-cookie", cookie.encode()),
                    ]
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._too_large(send, cap)

    @staticmethod
    async def _too_large(send: Any, cap: int) -> None:
        start, body = _json(413, f"request body over the cap of {cap} bytes (max_upload_mb=)")
        await send(start)
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def _query_token(scope: dict) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[0] if values else None


def guard(app: Any, limits: Limits) -> None:
    """Install :class:`GuardMiddleware` on a Starlette/FastAPI app."""
    app.add_middleware(GuardMiddleware, limits=limits)
