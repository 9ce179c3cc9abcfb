"""Checking HTTP Basic credentials against an htpasswd file, shared by the web app and the link server.

Framework-free: the web app's middleware (koubo/web/auth.py) and the link server's listing
(koubo/links/server.py) both ask `CredentialCheck` and answer 401 with `challenge_header()`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
import time

from koubo.auth.htpasswd import Htpasswd

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
