"""HTTP Basic authentication against an Apache htpasswd file of bcrypt entries.

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
import re
import secrets
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import bcrypt
from starlette.types import ASGIApp, Receive, Scope, Send

from koubo.errors import KouboError, too_many_attempts
from koubo.ops.throttle import LoginThrottle
from koubo.web.errors import error_response, http_error

REALM = "koubo"
# bcrypt only looks at the first 72 bytes; Apache's htpasswd truncates the same way when hashing.
_BCRYPT_MAX_PASSWORD = 72
# After one successful bcrypt check, the same credentials pass without another for this long:
# a page load makes dozens of requests and each check costs tens to hundreds of milliseconds.
_VERIFIED_TTL_SECONDS = 300.0
_VERIFIED_MAX_ENTRIES = 1024
# $2y$ (Apache, PHP), $2b$ and the older $2a$: cost, then 22 characters of salt and 31 of hash.
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")


class AuthConfigError(KouboError):
    """The htpasswd file cannot be used; raised at startup so koubo never runs with broken auth."""

    def __init__(self, path: Path, en: str, zh: str) -> None:
        super().__init__("auth_config", f"htpasswd file {path}: {en}", f"htpasswd 文件 {path}：{zh}")


@dataclass(frozen=True)
class Htpasswd:
    users: tuple[tuple[bytes, bytes], ...]  # (user name as UTF-8, bcrypt hash in the $2b$ form)
    dummy_hash: bytes  # checked for unknown users, so their answer takes as long as a known user's

    @classmethod
    def load(cls, path: Path) -> Htpasswd:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise AuthConfigError(path, f"cannot be read ({error})", f"无法读取（{error}）") from error
        users: list[tuple[bytes, bytes]] = []
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, hashed = line.partition(":")
            if not sep or not user:
                raise AuthConfigError(path, f"line {number} is not user:hash", f"第 {number} 行不是 用户名:哈希 格式")
            users.append((user.encode(), _bcrypt_hash(path, number, hashed)))
        if not users:
            raise AuthConfigError(path, "has no users", "没有任何用户")
        cost = int(users[0][1][4:6])
        return cls(tuple(users), bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=cost)))

    def verify(self, user: str, password: bytes) -> bool:
        """Constant-time in the user name; always exactly one bcrypt check, known user or not."""
        wanted = user.encode()
        stored = self.dummy_hash
        found = False
        for name, hashed in self.users:
            if hmac.compare_digest(name, wanted):
                stored, found = hashed, True
        matches = bcrypt.checkpw(password[:_BCRYPT_MAX_PASSWORD], stored)
        return matches and found


def _bcrypt_hash(path: Path, number: int, hashed: str) -> bytes:
    if not _BCRYPT_HASH.fullmatch(hashed):
        raise AuthConfigError(
            path,
            f"line {number} is not a bcrypt hash; only bcrypt is supported (create it with `htpasswd -B`)",
            f"第 {number} 行不是 bcrypt 哈希；仅支持 bcrypt（请用 `htpasswd -B` 生成）",
        )
    # $2y$ (PHP, Apache) and $2b$ are the same algorithm; the bcrypt package spells it $2b$.
    return ("$2b$" + hashed[4:]).encode()


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
        # bcrypt is slow on purpose; keep it off the event loop.
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
