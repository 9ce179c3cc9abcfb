"""HTTP Basic authentication for the web app: one ASGI middleware (credentials: koubo/auth/).

One middleware guards the whole app (the API, /metrics, /docs and the Gradio UI mounted at
"/"), so no route can forget it; only the health check stays open for monitors and load balancers.
"""

from __future__ import annotations

import math
from collections.abc import Collection

from starlette.types import ASGIApp, Receive, Scope, Send

from koubo.auth.credentials import CredentialCheck, challenge_header
from koubo.auth.htpasswd import Htpasswd
from koubo.auth.throttle import LoginThrottle
from koubo.errors import too_many_attempts
from koubo.web.errors import error_response, http_error


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
