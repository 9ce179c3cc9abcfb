"""Password files made by Apache's own `htpasswd` tool, in each mode it offers."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from koubo.auth.htpasswd import AuthConfigError, Htpasswd, Scheme

PASSWORD = "口令 secret"


def htpasswd_line(flag: str, user: str = "alice", password: str = PASSWORD) -> str:
    # -b takes the password from the command line; -C 4 keeps bcrypt fast enough for a test.
    extra = ["-C", "4"] if flag == "B" else []
    made = subprocess.run(["htpasswd", f"-nb{flag}", *extra, user, password], capture_output=True, text=True, check=True)
    return made.stdout.strip()


@pytest.mark.parametrize(
    ("flag", "scheme"),
    [("B", Scheme.BCRYPT), ("m", Scheme.APR1), ("2", Scheme.SHA256_CRYPT), ("5", Scheme.SHA512_CRYPT), ("s", Scheme.SHA1)],
)
def test_each_safe_htpasswd_mode_is_accepted(tmp_path: Path, flag: str, scheme: Scheme) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(f"# made by htpasswd -{flag}\n{htpasswd_line(flag)}\n{htpasswd_line(flag, 'bob', 'other')}\n")
    users = Htpasswd.load(path)
    assert [entry.scheme for entry in users.entries] == [scheme, scheme]
    assert users.verify("alice", PASSWORD.encode())
    assert users.verify("bob", b"other")
    assert not users.verify("alice", b"other")
    assert not users.verify("bob", PASSWORD.encode())
    assert not users.verify("mallory", PASSWORD.encode())
    # The unknown user is checked against a hash of the file's own kind, so it costs what a known one does.
    assert users.dummy.scheme is scheme


def test_a_file_mixing_modes_checks_each_entry_by_its_own(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text("\n".join(htpasswd_line(flag, f"user{flag}") for flag in "Bm25") + "\n")
    users = Htpasswd.load(path)
    assert all(users.verify(f"user{flag}", PASSWORD.encode()) for flag in "Bm25")
    assert not users.verify("userB", b"wrong")


def test_unsalted_sha1_is_accepted_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(htpasswd_line("s") + "\n")
    with caplog.at_level(logging.WARNING):
        Htpasswd.load(path)
    assert "unsalted SHA-1" in caplog.text and "alice" in caplog.text


@pytest.mark.parametrize("flag", ["p", "d"])
def test_plain_text_and_des_crypt_are_refused_naming_the_line(tmp_path: Path, flag: str) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(f"{htpasswd_line('B', 'ok')}\n\n{htpasswd_line(flag, password='short')}\n")
    with pytest.raises(AuthConfigError) as refused:
        Htpasswd.load(path)
    assert "line 3 is neither bcrypt" in refused.value.en
    assert "第 3 行" in refused.value.zh and "htpasswd -B" in refused.value.zh
