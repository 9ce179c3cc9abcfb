"""Apache htpasswd files as people make them: the formats nginx accepts that are safe to check.

`htpasswd` writes MD5 (`$apr1$`) entries unless told `-B`, and many guides (nginx's among them) make
those or SHA-1 (`{SHA}`) ones, so an existing nginx `.htpasswd` should work as it is. Accepted:
bcrypt (`-B`), SHA-512/SHA-256 crypt (`-5`, `-2`), Apache MD5 (`-m`, the default) and, with a
warning at load time because it has no salt, `{SHA}` (`-s`). Refused with the line named: plain
text (`-p`) and DES crypt (`-d`), which keeps only 8 characters of a password.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import bcrypt
from passlib.hash import apr_md5_crypt, ldap_sha1, sha256_crypt, sha512_crypt

from koubo.errors import ErrorCode, KouboError

log = logging.getLogger(__name__)

# bcrypt only looks at the first 72 bytes; Apache's htpasswd truncates the same way when hashing.
_BCRYPT_MAX_PASSWORD = 72
# $2y$ (Apache, PHP), $2b$ and the older $2a$: cost, then 22 characters of salt and 31 of hash.
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
# SHA-crypt's rounds when a hash does not name them (the algorithm's own default, htpasswd's too).
_SHA_CRYPT_DEFAULT_ROUNDS = 5000


class Scheme(Enum):
    BCRYPT = "bcrypt"
    SHA512_CRYPT = "sha512-crypt"
    SHA256_CRYPT = "sha256-crypt"
    APR1 = "apr1"
    SHA1 = "sha1"


_PASSLIB = {
    Scheme.SHA512_CRYPT: sha512_crypt,
    Scheme.SHA256_CRYPT: sha256_crypt,
    Scheme.APR1: apr_md5_crypt,
    Scheme.SHA1: ldap_sha1,
}


class AuthConfigError(KouboError):
    """The htpasswd file cannot be used; raised at startup so koubo never runs with broken auth."""

    def __init__(self, path: Path, en: str, zh: str) -> None:
        super().__init__(ErrorCode.AUTH_CONFIG, f"htpasswd file {path}: {en}", f"htpasswd 文件 {path}：{zh}")


@dataclass(frozen=True)
class Entry:
    user: bytes  # UTF-8
    scheme: Scheme
    hashed: str  # bcrypt in the $2b$ spelling the bcrypt package wants

    def matches(self, password: bytes) -> bool:
        if self.scheme is Scheme.BCRYPT:
            return bcrypt.checkpw(password[:_BCRYPT_MAX_PASSWORD], self.hashed.encode())
        return bool(_PASSLIB[self.scheme].verify(password, self.hashed))


@dataclass(frozen=True)
class Htpasswd:
    entries: tuple[Entry, ...]
    dummy: Entry  # checked for unknown users, so their answer takes as long as a known user's

    @classmethod
    def load(cls, path: Path) -> Htpasswd:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise AuthConfigError(path, f"cannot be read ({error})", f"无法读取（{error}）") from error
        entries: list[Entry] = []
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, hashed = line.partition(":")
            if not sep or not user:
                raise AuthConfigError(path, f"line {number} is not user:hash", f"第 {number} 行不是 用户名:哈希 格式")
            entries.append(_entry(path, number, user, hashed))
        if not entries:
            raise AuthConfigError(path, "has no users", "没有任何用户")
        weak = [entry.user.decode() for entry in entries if entry.scheme is Scheme.SHA1]
        if weak:
            log.warning(
                "htpasswd file %s: unsalted SHA-1 ({SHA}) entries for %s; recreate them with `htpasswd -B`",
                path,
                ", ".join(weak),
            )
        return cls(tuple(entries), _dummy_for(entries))

    def verify(self, user: str, password: bytes) -> bool:
        """Constant-time in the user name; always exactly one hash check, known user or not."""
        wanted = user.encode()
        chosen, found = self.dummy, False
        for entry in self.entries:
            if hmac.compare_digest(entry.user, wanted):
                chosen, found = entry, True
        return chosen.matches(password) and found


def _entry(path: Path, number: int, user: str, hashed: str) -> Entry:
    scheme = _scheme(hashed)
    if scheme is None:
        raise AuthConfigError(
            path,
            f"line {number} is neither bcrypt, SHA-512/SHA-256 crypt, Apache MD5 ($apr1$) nor {{SHA}}; plain text "
            "and DES crypt are refused because they are not safe (create the entry with `htpasswd -B`)",
            f"第 {number} 行既不是 bcrypt、SHA-512/SHA-256 crypt、Apache MD5（$apr1$），也不是 {{SHA}}；"
            "明文和 DES crypt 不安全，不予接受（请用 `htpasswd -B` 重新生成）",
        )
    if scheme is Scheme.BCRYPT:
        # $2y$ (PHP, Apache) and $2b$ are the same algorithm; the bcrypt package spells it $2b$.
        hashed = "$2b$" + hashed[4:]
    return Entry(user.encode(), scheme, hashed)


def _scheme(hashed: str) -> Scheme | None:
    if _BCRYPT_HASH.fullmatch(hashed):
        return Scheme.BCRYPT
    for scheme, handler in _PASSLIB.items():
        if handler.identify(hashed):
            return scheme
    return None


def _dummy_for(entries: list[Entry]) -> Entry:
    """A hash of a random password in the file's first scheme, so unknown users cost what known ones do."""
    first = entries[0]
    secret = secrets.token_hex(16)
    if first.scheme is Scheme.BCRYPT:
        cost = int(first.hashed[4:6])
        return Entry(b"", Scheme.BCRYPT, bcrypt.hashpw(secret.encode(), bcrypt.gensalt(rounds=cost)).decode())
    handler = _PASSLIB[first.scheme]
    if first.scheme in (Scheme.SHA512_CRYPT, Scheme.SHA256_CRYPT):
        rounds = re.match(r"\$[56]\$rounds=(\d+)\$", first.hashed)
        handler = handler.using(rounds=int(rounds.group(1)) if rounds else _SHA_CRYPT_DEFAULT_ROUNDS)
    return Entry(b"", first.scheme, handler.hash(secret))
