"""Properties of the HTTP rules and the name checks, over random headers and names (hypothesis):
no input makes them raise, every answer is one the rules allow, every 206 lies inside the file."""

from __future__ import annotations

import time
from email.utils import formatdate
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from koubo.links.delivery import FileState, content_disposition, multipart_framing, plan_response
from koubo.links.signing import Keyring, LinkError, verify
from koubo.naming import is_link_name, output_name

PROPERTIES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DIGITS = st.one_of(
    st.integers(min_value=0, max_value=2**70).map(str),
    st.text("0123456789", min_size=1, max_size=5000),
    st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=4),  # "²", "١", "０"
)
POSITION = st.one_of(st.just(""), DIGITS, st.text(max_size=6))
SPEC = st.builds(lambda first, last: f"{first}-{last}", POSITION, POSITION) | st.text(max_size=12)
RANGE = st.one_of(
    st.builds(
        lambda unit, specs, space: unit + "=" + ("," + space).join(specs),
        st.sampled_from(["bytes", "BYTES", " bytes ", "items", ""]),
        st.lists(SPEC, min_size=0, max_size=20),
        st.sampled_from(["", " ", "  "]),
    ),
    st.text(max_size=40),
)
FILE = st.builds(
    FileState,
    size=st.integers(min_value=0, max_value=2**62),
    mtime_ns=st.integers(min_value=0, max_value=4_000_000_000 * 10**9),
)


def validator(state: FileState) -> st.SearchStrategy[str]:
    """What a client may send in If-Range or If-None-Match: this file's tag or date, others, junk."""
    seconds = state.mtime_ns // 10**9
    return st.one_of(
        st.just(state.etag),
        st.just("W/" + state.etag),
        st.just("*"),
        st.just(formatdate(seconds, usegmt=True)),
        st.integers(min_value=-(2**40), max_value=2**40).map(lambda s: formatdate(s, usegmt=True) if abs(s) < 2**35 else str(s)),
        st.text(max_size=40),
        st.lists(st.sampled_from([state.etag, '"x"', "W/\"y\"", ""]), max_size=4).map(", ".join),
    )


@st.composite
def requests(draw: st.DrawFn) -> tuple[dict[str, str], FileState]:
    state = draw(FILE)
    headers = {}
    for name in ("Range", "If-Range", "If-None-Match", "If-Match", "If-Modified-Since", "If-Unmodified-Since"):
        if draw(st.booleans()):
            headers[name] = draw(RANGE if name == "Range" else validator(state))
    return headers, state


@PROPERTIES
@given(requests())
@example(({"Range": "bytes=0-" + "9" * 5000}, FileState(1000, 0)))
@example(({"Range": "bytes=²-9"}, FileState(1000, 0)))
@example(({"Range": "bytes=-" + "9" * 5000, "If-Range": "Mon, 01 Jan 99999 00:00:00 GMT"}, FileState(1000, 0)))
def test_every_request_gets_an_allowed_answer_inside_the_file(request_and_file):
    headers, state = request_and_file
    plan = plan_response(headers, state, "video/mp4")
    assert plan.status in (200, 206, 304, 412, 416)
    if plan.status == 200:
        assert plan.ranges == () and plan.headers["Content-Length"] == str(state.size)
    if plan.status == 416:
        assert plan.headers["Content-Range"] == f"bytes */{state.size}"
    if plan.status != 206:
        return
    assert plan.ranges and all(0 <= first <= last < state.size for first, last in plan.ranges)
    data = sum(last - first + 1 for first, last in plan.ranges)
    if len(plan.ranges) == 1:
        first, last = plan.ranges[0]
        assert plan.headers["Content-Range"] == f"bytes {first}-{last}/{state.size}"
        assert plan.headers["Content-Length"] == str(data)
    else:
        assert plan.boundary is not None
        framing = multipart_framing(list(plan.ranges), state.size, "video/mp4", plan.boundary)
        assert plan.headers["Content-Length"] == str(data + sum(len(piece) for piece in framing))
    # Every header value can go out on the wire as it is.
    for value in plan.headers.values():
        value.encode("latin-1")


NAMES = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(list("ab.. /\\\x00\x7f:?*\"<>|") + ["主播", "\ud800", "é"]), max_size=40).map("".join),
)


@PROPERTIES
@given(NAMES, NAMES, st.one_of(st.none(), st.integers(min_value=0, max_value=9999)))
@example("take1..final.wav", "主播.mp4", None)
@example("..", "../..", 0)
@example("\ud800.wav", "a" * 300 + ".mp4", None)
@example("", "a.\ud800.a.", None)
def test_every_generated_output_name_is_a_link_name(audio, video, index):
    name = output_name(audio, video, index)
    assert is_link_name(name), name
    assert name.endswith(".mp4")


@PROPERTIES
@given(NAMES)
def test_a_link_name_never_climbs_and_always_makes_a_header(name):
    if not is_link_name(name):
        return
    assert ".." not in name and "/" not in name and "\\" not in name and "\x00" not in name
    content_disposition(name, fallback="koubo.mp4").encode("latin-1")


@pytest.fixture(scope="module")
def keyring(tmp_path_factory: pytest.TempPathFactory) -> Keyring:
    keyring = Keyring(Path(tmp_path_factory.mktemp("keys")))
    keyring.current()
    return keyring


@PROPERTIES
@given(NAMES, st.one_of(DIGITS, st.text(max_size=30), st.sampled_from(["1e12", "inf", "nan", "-1", "9223372036854775808"])), st.text(max_size=60))
def test_verify_only_ever_refuses_with_a_link_error(keyring, name, exp, sig):
    kid = keyring.current()[0]
    try:
        verify(keyring, "job", name, exp, kid, sig, now=time.time())
    except LinkError as error:
        assert error.code in ("link_invalid", "link_tampered", "link_expired")
    else:
        pytest.fail(f"accepted a signature nobody made: {exp!r} {sig!r}")
