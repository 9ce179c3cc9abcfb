"""Signed download links: `/d/<job id>/<file name>?exp=<unix seconds or 0>&kid=<key id>&sig=<MAC>`.

The MAC is HMAC-SHA256 over the job id, the file name, the expiry and the key id, so no part of a
link can be changed without the key. The method is not covered: GET and HEAD (and Range requests)
of one link read the same bytes. Keys live in `<data_dir>/keys/links.json`; the newest signs and
every key verifies, so adding a key (rotation) leaves links already handed out working.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlencode

from koubo.config import Settings
from koubo.errors import ErrorCode, KouboError
from koubo.naming import is_link_name

DEFAULT_LIFETIME = 7 * 24 * 3600.0
# The longest a link may last, 0 aside (never expires): a century keeps every expiry within the
# twelve digits `verify` reads, and within what a datetime holds.
MAX_LIFETIME = 100 * 365 * 24 * 3600.0
_KEY_BYTES = 32


class LinkError(KouboError):
    """A link whose signature does not match (`link_tampered`) or whose time is up (`link_expired`)."""


def tampered() -> LinkError:
    return LinkError(
        ErrorCode.LINK_TAMPERED,
        "This download link is not valid: it was changed or was never issued by this server.",
        "下载链接无效：链接已被修改，或并非由本服务器签发。",
    )


def malformed() -> LinkError:
    return LinkError(ErrorCode.LINK_INVALID, "This download link is malformed.", "下载链接格式错误。")


def unlinkable_name(name: str) -> LinkError:
    return LinkError(
        ErrorCode.LINK_NAME_INVALID,
        f"“{name}” cannot be carried by a download link (it holds “..”, a slash or an unusable character).",
        f"“{name}”无法用于下载链接（含有“..”、斜杠或无法使用的字符）。",
    )


def bad_lifetime(lifetime: float) -> LinkError:
    years = int(MAX_LIFETIME // (365 * 24 * 3600))
    return LinkError(
        ErrorCode.LINK_LIFETIME_INVALID,
        f"A link's lifetime must be 0 (never expires) or a number of seconds up to {years} years, not {lifetime}.",
        f"链接有效期必须为 0（永不过期）或不超过 {years} 年的秒数，而不是 {lifetime}。",
    )


def expired() -> LinkError:
    return LinkError(ErrorCode.LINK_EXPIRED, "This download link has expired.", "下载链接已过期。")


class Keyring:
    """The link keys by id, in `<data_dir>/keys/links.json`; created with one random key on first use."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "keys" / "links.json"

    def by_id(self) -> dict[str, bytes]:
        """Every key by id, oldest first (the file keeps insertion order)."""
        if not self.path.exists():
            self._write([self._new_entry(1)], replace=False)
        return {str(entry["id"]): base64.b64decode(str(entry["secret"])) for entry in self._read()}

    def current(self) -> tuple[str, bytes]:
        """The newest key, the one that signs."""
        return list(self.by_id().items())[-1]

    def add_key(self) -> str:
        """A new random key that signs from now on; the older ones keep verifying. Returns its id."""
        existing = self._read()
        entry = self._new_entry(len(existing) + 1)
        self._write([*existing, entry], replace=True)
        return str(entry["id"])

    def retire(self, kid: str) -> None:
        """Forget key `kid`: every link it signed stops working (a leaked link, a leaked key)."""
        existing = self._read()
        kept = [entry for entry in existing if entry["id"] != kid]
        if len(kept) == len(existing):
            raise KouboError(ErrorCode.UNKNOWN_KEY, f"No link key “{kid}”.", f"没有名为“{kid}”的链接密钥。")
        if not kept:
            raise KouboError(
                ErrorCode.LAST_KEY,
                "The last link key cannot be retired; rotate first.",
                "不能删除最后一个链接密钥；请先轮换。",
            )
        self._write(kept, replace=True)

    def described(self) -> list[tuple[str, int]]:
        """(id, creation time in unix seconds) of every key, oldest first; the last one signs."""
        self.by_id()
        return [(str(entry["id"]), int(entry["created"])) for entry in self._read()]  # type: ignore[call-overload]

    @staticmethod
    def _new_entry(number: int) -> dict[str, object]:
        secret = base64.b64encode(secrets.token_bytes(_KEY_BYTES)).decode("ascii")
        return {"id": f"k{number}-{secrets.token_hex(3)}", "secret": secret, "created": int(time.time())}

    def _read(self) -> list[dict[str, object]]:
        if not self.path.exists():
            return []
        entries: list[dict[str, object]] = json.loads(self.path.read_text(encoding="utf-8"))["keys"]
        return entries

    def _write(self, entries: list[dict[str, object]], *, replace: bool) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Written beside the target, created 0600 (never readable by others, not even briefly),
        # then renamed: a reader sees the old file or the new one, never half of one.
        staged = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.part")
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump({"keys": entries}, out, indent=1)
                out.flush()
                os.fsync(out.fileno())
            if replace:
                os.replace(staged, self.path)
            else:
                # The first key: link() fails if another process created the keyring meanwhile,
                # and then its key, which may already have signed links, is the one kept.
                try:
                    os.link(staged, self.path)
                except FileExistsError:
                    pass
        finally:
            staged.unlink(missing_ok=True)


def _message(job_id: str, filename: str, exp: int, kid: str) -> bytes:
    # A JSON list, not the fields joined by a separator: no field, whatever it holds, can end
    # where another begins, so (job "a", name "b\nc") never signs (job "a\nb", name "c").
    return json.dumps(["v1", job_id, filename, exp, kid], ensure_ascii=False).encode("utf-8", "surrogatepass")


def _mac(key: bytes, job_id: str, filename: str, exp: int, kid: str) -> str:
    digest = hmac.new(key, _message(job_id, filename, exp, kid), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class SignedLink:
    url: str
    expires_at: datetime | None  # None: never expires
    kind: Literal["direct", "bucket"] = "direct"  # koubo's link server, or a presigned object-storage URL


def sign(
    keyring: Keyring, job_id: str, filename: str, lifetime: float = DEFAULT_LIFETIME, now: float | None = None
) -> str:
    """The link's path and query for `filename` of job `job_id`; lifetime 0 never expires."""
    return _signed_path(keyring, "d", job_id, job_id, filename, lifetime, now)[0]


def batch_subject(batch_id: str) -> str:
    """What a batch ZIP's MAC covers: never equal to a job id (those are hex), so no link serves both."""
    return f"batch:{batch_id}"


def signed_link(
    settings: Settings, job_id: str, filename: str, lifetime: float | None = None, keyring: Keyring | None = None
) -> SignedLink:
    """A full URL, under the configured public base, for a finished job's video. Pass `keyring` to sign
    many links with one read of the key file."""
    _check_linkable(job_id, filename)
    keyring = keyring or Keyring(settings.data_dir)
    path, exp = _signed_path(keyring, "d", job_id, job_id, filename, _lifetime(settings, lifetime))
    return SignedLink(settings.links_base + path, _expiry(exp))


def signed_batch_link(settings: Settings, batch_id: str, filename: str, lifetime: float | None = None) -> SignedLink:
    """A full URL for a batch's finished videos as one streamed ZIP."""
    _check_linkable(batch_id, filename)
    subject = batch_subject(batch_id)
    keyring = Keyring(settings.data_dir)
    path, exp = _signed_path(keyring, "z", batch_id, subject, filename, _lifetime(settings, lifetime))
    return SignedLink(settings.links_base + path, _expiry(exp))


def _check_linkable(*names: str) -> None:
    """A link the server would refuse for its names (`is_link_name`) is never handed out."""
    for name in names:
        if not is_link_name(name):
            raise unlinkable_name(name)


def _lifetime(settings: Settings, lifetime: float | None) -> float:
    lifetime = settings.link_lifetime if lifetime is None else lifetime
    # Not `0 <= lifetime <= MAX`, written so that NaN fails too.
    if not (lifetime >= 0 and lifetime <= MAX_LIFETIME):
        raise bad_lifetime(lifetime)
    return lifetime


def _expiry(exp: int) -> datetime | None:
    return None if exp == 0 else datetime.fromtimestamp(exp, UTC)


def _signed_path(
    keyring: Keyring, route: str, path_id: str, subject: str, filename: str, lifetime: float, now: float | None = None
) -> tuple[str, int]:
    """`/<route>/<path_id>/<filename>?exp&kid&sig` with the MAC over `subject`, and the expiry."""
    exp = 0 if lifetime == 0 else int((time.time() if now is None else now) + lifetime)
    kid, key = keyring.current()
    query = urlencode({"exp": exp, "kid": kid, "sig": _mac(key, subject, filename, exp, kid)})
    return f"/{route}/{quote(path_id, safe='')}/{quote(filename, safe='')}?{query}", exp


def verify(keyring: Keyring, job_id: str, filename: str, exp: str, kid: str, sig: str, now: float | None = None) -> int:
    """Raises LinkError unless the fields are as signed and the link has not expired; returns exp.

    `exp` is the query's text: only canonical decimal digits count, so one signature has one spelling.
    """
    # At most 12 digits (year 33658): int() of thousands of digits is slow, and refused past 4300.
    # No signed link spells its expiry otherwise, so anything else (1e12, inf, 2**63) is malformed.
    if not exp.isascii() or not exp.isdigit() or len(exp) > 12 or (exp != "0" and exp.startswith("0")):
        raise malformed()
    expiry = int(exp)
    key = keyring.by_id().get(kid)
    if key is None:
        raise tampered()
    # Compared as text bytes, not decoded: base64 decoding skips stray characters, and one MAC
    # should have one spelling. Bytes, because compare_digest refuses non-ASCII str; "replace"
    # because a query may decode to lone surrogates, which no MAC contains anyway.
    expected = _mac(key, job_id, filename, expiry, kid)
    if not hmac.compare_digest(sig.encode("utf-8", "replace"), expected.encode()):
        raise tampered()
    if expiry != 0 and expiry <= (time.time() if now is None else now):
        raise expired()
    return expiry
