"""HTTP Basic authentication against an Apache htpasswd file (formats: koubo/web/htpasswd.py).

One ASGI middleware guards the whole app (the API, /metrics, /docs and the Gradio UI mounted at
"/"), so no route can forget it; only the health check stays open for monitors and load balancers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Collection

from starlette.types import ASGIApp, Receive, Scope, Send

from koubo.errors import too_many_attempts
from koubo.ops.throttle import LoginThrottle
from koubo.web.errors import error_response, http_error
from koubo.web.htpasswd import Htpasswd

REALM = "koubo"
# After one successful password check, the same credentials pass without another for this long:
# a page load makes dozens of requests and each check costs tens to hundreds of milliseconds.
_VERIFIED_TTL_SECONDS = 300.0
_VERIFIED_MAX_ENTRIES = 1024


def _credentials(authorization: bytes) -> tuple[str, bytes] | None:
    scheme, _, encoded = authorization.partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
        user, sep, password = decoded.partition(b":")
        return (user.decode("utf-8"), password) if sep else None
    except (binascii.Error, UnicodeDecodeError):
        return None


class CredentialCheck:
    """Whether an Authorization header carries a valid user and password, remembering recent successes."""

    def __init__(self, htpasswd: Htpasswd) -> None:
        self.htpasswd = htpasswd
        # Keyed by an HMAC of the header under a per-process secret: the cache never holds a password.
        self._secret = secrets.token_bytes(32)
        self._verified: dict[bytes, float] = {}

    async def allowed(self, authorization: bytes) -> bool:
        credentials = _credentials(authorization) if authorization else None
        if credentials is None:
            return False
        key = hmac.new(self._secret, authorization, hashlib.sha256).digest()
        now = time.monotonic()
        if self._verified.get(key, 0.0) > now:
            return True
        # Password hashes are slow on purpose; keep the check off the event loop.
        if not await asyncio.to_thread(self.htpasswd.verify, *credentials):
            return False
        if len(self._verified) >= _VERIFIED_MAX_ENTRIES:
            self._verified.clear()
        self._verified[key] = now + _VERIFIED_TTL_SECONDS
        return True


def challenge_header() -> dict[str, str]:
    return {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}


class BasicAuthMiddleware:
    """Answers 401 with a Basic challenge unless the request carries a valid user and password."""

    def __init__(
        self,
        app: ASGIApp,
        htpasswd: Htpasswd,
        throttle: LoginThrottle,
        open_paths: Collection[str] = ("/api/health",),
    ) -> None:
        self.app = app
        self.check = CredentialCheck(htpasswd)
        self.throttle = throttle
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        authorization = dict(scope["headers"]).get(b"authorization", b"")
        address = (scope.get("client") or ("?", 0))[0]
        wait = self.throttle.retry_after(address) if authorization else None
        if wait is not None:
            # Not even checked: a guess during the back-off learns nothing, right or wrong.
            seconds = math.ceil(wait)
            response = error_response(429, too_many_attempts(seconds), {"Retry-After": str(seconds)})
        elif await self.check.allowed(authorization):
            if authorization:
                self.throttle.succeeded(address)
            await self.app(scope, receive, send)
            return
        else:
            # A request without credentials is a browser asking for the login prompt, not a guess.
            if authorization:
                self.throttle.failed(address)
            response = http_error(401, challenge_header())
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await response(scope, receive, send)
