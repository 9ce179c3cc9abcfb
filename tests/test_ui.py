"""The browser UI, in a real browser against a real `koubo serve`.

Debian's chromium (/usr/bin/chromium) is driven by Playwright; nothing is downloaded. The server
runs in a subprocess with its own data folder and port: web app, UI and job consumer as an
operator starts them. Screenshots of each tab are written to /tmp/koubo-ui-*.png for a person to look at.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import io
import re
import string
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, Locator, Page, Request, expect, sync_playwright

from koubo.config import Settings
from koubo.errors import KouboError
from koubo.jobs.service import JobService
from koubo.media.probe import probe
from koubo.web.i18n import TEXT, language_from_header, t
from koubo.web.ui_render import LOG_FOLLOW_JS

from media_fixtures import make_speech, make_talking_video, write_random_bytes, write_text_file
from servers import launch, wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = Path("/tmp")
SPEECH_SECONDS = 1.5
# A tiny job renders in seconds here; the margin is for a 2-core machine shared with other work.
JOB_TIMEOUT_MS = 240_000
RELOAD_TIMEOUT_MS = 60_000
# An upload, its probe and the answer: a moment, or seconds on a busy 2-core machine.
UPLOAD_CHECK_TIMEOUT_MS = 30_000
# Every other expectation (a language switch, a panel redrawn): Playwright's 5 s default was missed once
# on a 2-core machine running a second server and browser; a bound, not a wait.
expect.set_options(timeout=20_000)
# Small enough to exceed with a generated file, far above every fixture (tens of KiB).
UPLOAD_LIMIT = 1024 * 1024

# Records each tab the page keeps (localStorage "koubo-tab"), from before the page's own scripts run.
KEPT_TAB_WRITES_JS = """
window.kouboKeptTabWrites = [];
const setItem = Storage.prototype.setItem;
Storage.prototype.setItem = function (key, value) {
  if (key === 'koubo-tab') window.kouboKeptTabWrites.push(value);
  return setItem.call(this, key, value);
};
"""

needs_browser = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (/usr/bin/chromium): apt-get install chromium"
)


# --- language table and header parsing (no browser) -------------------------------------------------


def test_every_ui_string_has_chinese_and_english() -> None:
    for key, (zh, en) in TEXT.items():
        assert zh.strip() and en.strip(), key
        # Placeholders must match, or one language would raise KeyError at run time.
        assert sorted(_placeholders(zh)) == sorted(_placeholders(en)), key


def _placeholders(text: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(text) if name]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        ("en-US,en;q=0.9", "en"),
        ("de-DE,de;q=0.9,en;q=0.8,zh;q=0.7", "en"),
        ("en;q=0.5,zh-TW;q=0.8", "zh"),
        ("fr-FR", "zh"),
        ("", "zh"),
        (None, "zh"),
    ],
)
def test_language_follows_the_browsers_preference_order(header: str | None, expected: str) -> None:
    assert language_from_header(header) == expected


# --- a real server and a real browser ---------------------------------------------------------------


@dataclass
class Server:
    url: str
    data_dir: Path
    links_port: int


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = launch(
        tmp_path_factory.mktemp("koubo-ui"),
        env={"GRADIO_ANALYTICS_ENABLED": "False", "KOUBO_UPLOAD_MAX_BYTES": str(UPLOAD_LIMIT)},
    )
    try:
        yield Server(running.url + "/", running.data_dir, running.links_port)
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("koubo-ui-media")
    return {
        "speech": make_speech(folder / "演讲 speech.wav", seconds=SPEECH_SECONDS),
        "template": make_talking_video(folder / "主播 template.mp4", seconds=1.0, size=(160, 160)),
        "template2": make_talking_video(folder / "second.mp4", seconds=1.0, size=(128, 128), fps=20),
        "faceless": _faceless_video(folder / "空镜头.mp4"),
        "not_audio": write_text_file(folder / "notes.wav"),
        "too_large": write_random_bytes(folder / "长录音.wav", size=UPLOAD_LIMIT + 1),
    }


def _faceless_video(path: Path) -> Path:
    """One second of an empty grey wall: a valid video in which no face can be found."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 128, 128, "yuv420p"
        for index in range(25):
            frame = av.VideoFrame.from_ndarray(np.full((128, 128, 3), 90 + index, dtype=np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


class Visit:
    """A page in its own browser context, and every request it made to anywhere but the server."""

    def __init__(self, browser: Browser, server: Server, locale: str) -> None:
        self.context = browser.new_context(locale=locale, viewport={"width": 1280, "height": 900})
        self.elsewhere: list[str] = []
        self.context.on("request", self._note)
        self.server = server
        self.page = self.context.new_page()
        self.page.goto(server.url)
        self.page.locator("#generate").wait_for()

    def _note(self, request: Request) -> None:
        if not request.url.startswith((self.server.url, "data:", "blob:")):
            self.elsewhere.append(request.url)

    def upload(self, selector: str, *files: Path) -> None:
        self.page.locator(f"{selector} input[type=file]").set_input_files([str(path) for path in files])

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser: Browser, server: Server) -> Iterator[Callable[[str], Visit]]:
    opened: list[Visit] = []

    def open_page(locale: str) -> Visit:
        opened.append(Visit(browser, server, locale))
        return opened[-1]

    yield open_page
    for page in opened:
        # koubo works offline: the page never reaches for a font, script or tracker elsewhere.
        assert page.elsewhere == []
        page.close()


def _api_jobs(server: Server) -> list[dict]:
    return httpx.get(server.url + "api/jobs", params={"limit": 200}, timeout=10).json()["items"]


def _loaded_duration(player: Locator) -> float:
    """The <video>'s duration once the browser has its first frame (so a screenshot shows a picture)."""
    return player.evaluate(
        """video => new Promise((resolve, reject) => {
             if (video.readyState >= 2) { resolve(video.duration); return; }
             video.addEventListener('loadeddata', () => resolve(video.duration), {once: true});
             video.addEventListener('error', () => reject(new Error('video error ' + video.error?.code)), {once: true});
           })"""
    )


def _wait_until_finished(page: Page) -> Locator:
    """The single tab's progress card once its job has left the queue and finished, however it ended."""
    card = page.locator("#single-progress [data-testid=job-progress]")
    card.and_(page.locator(":not([data-status=queued]):not([data-status=running])")).wait_for(timeout=JOB_TIMEOUT_MS)
    return card


@needs_browser
def test_single_job_plays_in_the_page_and_downloads_the_output_bytes(
    server: Server, visit: Callable[[str], Visit], media: dict[str, Path]
) -> None:
    session = visit("zh-CN")
    page = session.page
    # The browser asked for Chinese: the page speaks Chinese.
    expect(page.get_by_role("tab", name=t("tab.single", "zh"))).to_be_visible()
    expect(page.locator("#generate")).to_have_text(t("button.generate", "zh"))

    session.upload("#single-audio", media["speech"])
    session.upload("#single-video", media["template"])
    # Uploaded: each component shows its own player (the template's preview is a <video>).
    page.locator("#single-video video").wait_for()
    page.locator("#single-audio audio").first.wait_for(state="attached")
    page.locator("#generate").click()
    card = _wait_until_finished(page)
    assert card.get_attribute("data-status") == "done", card.inner_text()
    player = page.locator("#single-result video")
    player.wait_for()
    # The output lasts as long as the speech, and it plays.
    assert _loaded_duration(player) == pytest.approx(SPEECH_SECONDS, abs=0.15)
    played = player.evaluate(
        "video => video.play().then(() => new Promise(r => setTimeout(() => r(video.currentTime), 400)))"
    )
    assert played > 0
    # The sync picture: the mouth measured on the output against the loudness, silences shaded.
    expect(page.locator("#single-result [data-testid=sync-picture] svg polyline").first).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "koubo-ui-single.png"), full_page=True)

    # The download link serves exactly the output file the job wrote.
    (job,) = [job for job in _api_jobs(server) if job["video"]["name"] == media["template"].name]
    assert job["status"] == "done" and job["audio"]["name"] == media["speech"].name
    href = page.locator("#single-result [data-testid=download-link]").get_attribute("href")
    response = page.request.get(server.url + href)
    assert response.ok
    service = JobService(Settings(data_dir=server.data_dir))
    try:
        output, _ = service.output_file(job["id"])
    finally:
        service.close()
    assert hashlib.sha256(response.body()).hexdigest() == hashlib.sha256(output.read_bytes()).hexdigest()

    # The signed direct link, for people without an account: it downloads from the link server,
    # and its QR code, as the browser draws it, reads back as the same link.
    # links_base_url is unset here: the link says it only opens on this machine, and how to change that.
    expect(page.locator("#single-result [data-testid=link-local]")).to_have_text(
        t("link.local_only", "zh", base=f"http://127.0.0.1:{server.links_port}")
    )
    direct = page.locator("#single-result [data-testid=link-url]").input_value()
    assert direct.startswith(f"http://127.0.0.1:{server.links_port}/d/{job['id']}/")
    assert page.request.get(direct).body() == output.read_bytes()
    qr = page.locator("#single-result [data-testid=link-qr]")

    def qr_text() -> str | None:
        # The image may still be decoding when the panel appears: look again until it reads.
        png = qr.screenshot()
        drawn = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        # Also with a wide quiet zone at a whole-pixel scale: OpenCV's detectors miss a code now and
        # then (once in a full run on a loaded machine), and a phone reads either.
        padded = cv2.copyMakeBorder(drawn, 40, 40, 40, 40, cv2.BORDER_CONSTANT, value=(255, 255, 255))
        enlarged = cv2.resize(padded, None, fx=3, fy=3, interpolation=cv2.INTER_NEAREST)
        for detector in (cv2.QRCodeDetector(), cv2.QRCodeDetectorAruco()):
            for image in (drawn, enlarged):
                decoded, _, _ = detector.detectAndDecode(image)
                if decoded:
                    return decoded
        return None

    assert wait_until(qr_text, 30, "the QR code to be readable") == direct

    # The language switch relabels the page and the live panels.
    page.locator("#koubo-lang").get_by_text("English").click()
    expect(page.get_by_role("tab", name=t("tab.single", "en"))).to_be_visible()
    expect(page.locator("#generate")).to_have_text(t("button.generate", "en"))
    expect(page.locator("#single-result [data-testid=download-link]")).to_have_text(t("result.download", "en"))

    # Queue & history lists the job as done, with a player in its preview and a link to copy.
    page.get_by_role("tab", name=t("tab.queue", "en")).click()
    row = page.locator(f"#history-table tr[data-job='{job['id']}']")
    expect(row).to_have_attribute("data-status", "done")
    expect(row).to_contain_text(t("status.done", "en"))
    row.locator("button[data-action=preview]").click()
    assert _loaded_duration(page.locator(f"#history-preview [data-job='{job['id']}'] video")) > 0
    session.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url.rstrip("/"))
    row.locator("button[data-action=copy]").click()
    expect(row.locator("button[data-action=copy]")).to_have_text(t("action.copied", "en"))
    assert page.evaluate("navigator.clipboard.readText()") == f"{server.url}api/jobs/{job['id']}/download"
    page.screenshot(path=str(SCREENSHOTS / "koubo-ui-queue.png"), full_page=True)

    page.get_by_role("tab", name=t("tab.logs", "en")).click()
    page.locator("#log-view [data-testid=log]", has_text=job["id"]).wait_for()
    page.screenshot(path=str(SCREENSHOTS / "koubo-ui-logs.png"), full_page=True)


@needs_browser
def test_a_failed_job_shows_its_reason_in_the_chosen_language_and_can_be_retried(
    server: Server, visit: Callable[[str], Visit], media: dict[str, Path]
) -> None:
    session = visit("en-US")
    page = session.page
    # The browser asked for English: the page switches to English once it has loaded.
    expect(page.locator("#generate")).to_have_text(t("button.generate", "en"))
    page.locator("#koubo-lang").get_by_text("中文").click()
    expect(page.locator("#generate")).to_have_text(t("button.generate", "zh"))
    session.upload("#single-audio", media["speech"])
    session.upload("#single-video", media["faceless"])
    page.locator("#single-video video").wait_for()
    page.locator("#generate").click()
    card = _wait_until_finished(page)
    assert card.get_attribute("data-status") == "failed", card.inner_text()
    (job,) = [job for job in _api_jobs(server) if job["video"]["name"] == media["faceless"].name]
    assert job["error"]["code"] == "no_face"
    expect(card.locator(".koubo-error")).to_have_text(job["error"]["message_zh"])
    # Switching the language rewrites the reason too.
    page.locator("#koubo-lang").get_by_text("English").click()
    expect(card.locator(".koubo-error")).to_have_text(job["error"]["message_en"])
    page.screenshot(path=str(SCREENSHOTS / "koubo-ui-single-failed.png"), full_page=True)

    page.get_by_role("tab", name=t("tab.queue", "en")).click()
    row = page.locator(f"#history-table tr[data-job='{job['id']}']")
    expect(row).to_have_attribute("data-status", "failed")
    row.locator("button[data-action=retry]").click()
    expect(page.get_by_text(t("job.retried", "en", id=job["id"][:8]))).to_be_visible()
    # Queued again, it runs again and fails again for the same reason: a second attempt on record.
    def failed_again() -> dict | None:
        again = httpx.get(f"{server.url}api/jobs/{job['id']}", timeout=10).json()
        return again if again["status"] == "failed" and again["finished_at"] != job["finished_at"] else None

    again = wait_until(failed_again, JOB_TIMEOUT_MS / 1000, "the retried job to fail again", interval=0.5)
    assert again["attempts"] == job["attempts"] + 1 and again["error"]["code"] == "no_face"
    expect(row).to_have_attribute("data-status", "failed")


@needs_browser
def test_unusable_upload_is_refused_with_the_servers_reason(
    server: Server, visit: Callable[[str], Visit], media: dict[str, Path]
) -> None:
    session = visit("zh-CN")
    page = session.page
    jobs_before = len(_api_jobs(server))
    # A text file named .wav: the page lets it through (by name), the server refuses it by content.
    session.upload("#single-audio", media["not_audio"])
    session.upload("#single-video", media["template"])
    page.locator("#single-video video").wait_for()
    page.locator("#generate").click()
    # The same refusal the API gives for this file, in the language the page is in.
    with media["not_audio"].open("rb") as file:
        refused = httpx.post(
            server.url + "api/uploads", data={"kind": "audio"}, files={"file": ("notes.wav", file)}, timeout=60
        )
    assert refused.status_code == 400
    expect(page.locator("#single-progress .koubo-error")).to_have_text(refused.json()["error"]["message_zh"])
    assert len(_api_jobs(server)) == jobs_before


def _probe_refusal(path: Path, kind: str) -> KouboError:
    """What koubo's content probe (the one uploads and jobs go through) says of a bad file."""
    with pytest.raises(KouboError) as refused:
        probe(path, expect=kind)
    return refused.value


@needs_browser
def test_each_file_is_checked_as_it_arrives_and_the_reason_shown_beside_its_input_in_both_languages(
    server: Server, visit: Callable[[str], Visit], media: dict[str, Path], tmp_path: Path
) -> None:
    bad_template = write_text_file(tmp_path / "坏模板 broken.mp4")
    # An English browser switched to Chinese: Gradio's own strings must follow koubo's switch, not the browser.
    session = visit("en-US")
    page = session.page
    jobs_before = len(_api_jobs(server))
    expect(page.locator("#generate")).to_have_text(t("button.generate", "en"))
    expect(page.locator("#single-video")).to_contain_text("Click to Upload")
    # links_base_url is unset here: the first page says that links only open on this machine.
    local_base = f"http://127.0.0.1:{server.links_port}"
    expect(page.locator("#links-local-note")).to_have_text(t("link.local_note", "en", base=local_base))
    page.locator("#koubo-lang").get_by_text("中文").click()
    expect(page.locator("#single-video")).to_contain_text("点击上传")
    expect(page.locator("#links-local-note")).to_have_text(t("link.local_note", "zh", base=local_base))

    # A bad speech file: koubo's own reason, beside the audio input, before anyone clicks Generate.
    session.upload("#single-audio", media["not_audio"])
    audio_refusal = _probe_refusal(media["not_audio"], "audio")
    audio_check = page.locator("#single-audio-check [data-testid=upload-check]")
    expect(audio_check).to_have_text(audio_refusal.zh, timeout=UPLOAD_CHECK_TIMEOUT_MS)
    expect(audio_check).to_have_attribute("data-ok", "false")
    # A bad template: koubo's reason beside it, and not Gradio's English "Video not playable" toast.
    session.upload("#single-video", bad_template)
    video_refusal = _probe_refusal(bad_template, "video")
    video_check = page.locator("#single-video-check [data-testid=upload-check]")
    expect(video_check).to_have_text(video_refusal.zh, timeout=UPLOAD_CHECK_TIMEOUT_MS)
    page.screenshot(path=str(SCREENSHOTS / "koubo-ui-upload-checks-zh.png"), full_page=True)

    # The other language: every message switches.
    page.locator("#koubo-lang").get_by_text("English").click()
    expect(audio_check).to_have_text(audio_refusal.en, timeout=UPLOAD_CHECK_TIMEOUT_MS)
    expect(video_check).to_have_text(video_refusal.en)
    page.screenshot(path=str(SCREENSHOTS / "koubo-ui-upload-checks-en.png"), full_page=True)
    # The browser could not play the bad template, and no toast said so in English.
    expect(page.get_by_text("not playable")).to_have_count(0)

    # A good file replaces the reason with what koubo found in it.
    # (Its label is in the language Gradio had when the player appeared: not visible, only read aloud.)
    page.locator("#single-video").get_by_role("button", name=re.compile("Clear|清除")).click()
    expect(video_check).to_have_count(0)
    session.upload("#single-video", media["template"])
    expect(video_check).to_have_attribute("data-ok", "true", timeout=UPLOAD_CHECK_TIMEOUT_MS)
    expect(video_check).to_contain_text("160×160")
    expect(video_check).to_contain_text("25 fps")

    # The Batch tab's inputs are checked the same way, file by file.
    page.get_by_role("tab", name=t("tab.batch", "en")).click()
    session.upload("#batch-audios", media["speech"], media["not_audio"])
    checks = page.locator("#batch-audios-check [data-testid=upload-check]")
    expect(checks).to_have_count(2, timeout=UPLOAD_CHECK_TIMEOUT_MS)
    expect(checks.nth(0)).to_have_attribute("data-ok", "true")
    expect(checks.nth(0)).to_contain_text(f"{media['speech'].name}: usable")
    expect(checks.nth(1)).to_have_text(audio_refusal.en)
    expect(page.locator("#batch-videos")).to_contain_text("Click to Upload")
    page.locator("#koubo-lang").get_by_text("中文").click()
    expect(checks.nth(1)).to_have_text(audio_refusal.zh, timeout=UPLOAD_CHECK_TIMEOUT_MS)
    expect(page.locator("#batch-videos")).to_contain_text("点击上传")
    page.screenshot(path=str(SCREENSHOTS / "koubo-ui-upload-checks-batch-zh.png"), full_page=True)
    # Nothing was submitted.
    assert len(_api_jobs(server)) == jobs_before


@needs_browser
def test_file_over_the_size_limit_is_refused_in_the_page_before_upload(
    server: Server, visit: Callable[[str], Visit], media: dict[str, Path]
) -> None:
    session = visit("zh-CN")
    page = session.page
    posts: list[str] = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    session.upload("#single-audio", media["too_large"])
    message = t("error.too_large", "zh", name=media["too_large"].name, limit="1.0 MiB")
    expect(page.get_by_text(message)).to_be_visible()
    # Refused in the page: nothing was sent but the event that shows the message.
    assert [url for url in posts if "/upload" in url] == []
    # The audio field is still empty and takes the next file.
    session.upload("#single-audio", media["speech"])
    page.locator("#single-audio audio").first.wait_for(state="attached")


@needs_browser
def test_batch_of_one_speech_and_two_templates_finishes_every_item(
    server: Server, visit: Callable[[str], Visit], media: dict[str, Path]
) -> None:
    session = visit("en-US")
    page = session.page
    page.get_by_role("tab", name=t("tab.batch", "en")).click()
    session.upload("#batch-audios", media["speech"])
    session.upload("#batch-videos", media["template"], media["template2"])
    page.locator("#batch-videos", has_text=media["template2"].stem).wait_for()
    page.locator("#generate-batch").click()
    rows = page.locator("#batch-panel tr[data-job]")
    expect(rows).to_have_count(2)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#batch-panel tr[data-job]')].every(r => r.dataset.status === 'done')",
        timeout=JOB_TIMEOUT_MS,
    )
    assert set(rows.locator("td.name").all_inner_texts()) == {
        media["template"].name,
        media["template2"].name,
        media["speech"].name,
    }
    # Each item has its own download link, which serves an MP4 (with Range, as players ask).
    for href in rows.locator("a[download]").evaluate_all("links => links.map(a => a.getAttribute('href'))"):
        response = page.request.get(server.url + href, headers={"Range": "bytes=0-11"})
        assert response.status == 206 and response.body()[4:8] == b"ftyp"
    # The whole batch as one ZIP, one entry per item.
    zip_link = page.locator("#batch-panel a", has_text=t("batch.zip", "en"))
    archive = page.request.get(server.url + zip_link.get_attribute("href"))
    assert archive.ok
    with zipfile.ZipFile(io.BytesIO(archive.body())) as bundle:
        assert len(bundle.namelist()) == 2 and all(name.endswith(".mp4") for name in bundle.namelist())
    rows.first.locator("button[data-action=preview]").click()
    assert _loaded_duration(page.locator("#batch-preview video")) == pytest.approx(SPEECH_SECONDS, abs=0.15)
    page.screenshot(path=str(SCREENSHOTS / "koubo-ui-batch.png"), full_page=True)


def _submit_by_api(server: Server, audio: Path, video: Path) -> str:
    ids = {}
    for kind, path in (("audio", audio), ("video", video)):
        with path.open("rb") as file:
            response = httpx.post(
                server.url + "api/uploads", data={"kind": kind}, files={"file": (path.name, file)}, timeout=60
            )
        response.raise_for_status()
        ids[kind] = response.json()["id"]
    response = httpx.post(
        server.url + "api/jobs", json={"audio_id": ids["audio"], "video_id": ids["video"]}, timeout=30
    )
    response.raise_for_status()
    return response.json()["id"]


@needs_browser
def test_history_delete_button_removes_the_job_after_confirmation(
    server: Server, visit: Callable[[str], Visit], media: dict[str, Path]
) -> None:
    job_id = _submit_by_api(server, media["speech"], media["template2"])
    page = visit("zh-CN").page
    page.get_by_role("tab", name=t("tab.queue", "zh")).click()
    row = page.locator(f"#history-table tr[data-job='{job_id}']")
    row.wait_for()
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("button[data-action=delete]").click()
    expect(page.get_by_text(t("job.deleted", "zh", id=job_id[:8]))).to_be_visible()
    expect(row).to_have_count(0)
    assert job_id not in {job["id"] for job in _api_jobs(server)}


@needs_browser
def test_double_click_on_generate_makes_one_job_and_the_button_waits_for_it(
    server: Server, visit: Callable[[str], Visit], media: dict[str, Path], tmp_path: Path
) -> None:
    template = make_talking_video(tmp_path / "双击 double.mp4", seconds=1.0, size=(144, 144))
    session = visit("en-US")
    page = session.page
    session.upload("#single-audio", media["speech"])
    session.upload("#single-video", template)
    page.locator("#single-video video").wait_for()
    page.locator("#generate").dblclick()
    # Disabled while its job is queued or running, enabled again once it has finished.
    expect(page.locator("#generate")).to_be_disabled()
    card = _wait_until_finished(page)
    assert card.get_attribute("data-status") == "done", card.inner_text()
    expect(page.locator("#generate")).to_be_enabled()
    assert len([job for job in _api_jobs(server) if job["video"]["name"] == template.name]) == 1


@needs_browser
def test_reload_comes_back_to_the_tab_language_and_job_it_was_following(
    server: Server, visit: Callable[[str], Visit], media: dict[str, Path], tmp_path: Path
) -> None:
    # Its own bytes: an upload with the bytes of an earlier one is that asset, under its first name.
    template = make_talking_video(tmp_path / "reload.mp4", seconds=1.0, size=(152, 152))
    session = visit("en-US")
    page = session.page
    # Chosen against the browser's preference (once the page has applied that one).
    expect(page.locator("#generate")).to_have_text(t("button.generate", "en"))
    page.locator("#koubo-lang").get_by_text("中文").click()
    expect(page.locator("#generate")).to_have_text(t("button.generate", "zh"))
    session.upload("#single-audio", media["speech"])
    session.upload("#single-video", template)
    page.locator("#single-video video").wait_for()
    page.locator("#generate").click()
    page.locator("#single-progress [data-testid=job-progress]").wait_for()
    (job,) = [job for job in _api_jobs(server) if job["video"]["name"] == template.name]

    page.reload()
    # The same language, and the job's card again, live until the job has finished. (A reloaded
    # page runs its load events on a busy machine: the margin is for that.)
    expect(page.locator("#generate")).to_have_text(t("button.generate", "zh"), timeout=RELOAD_TIMEOUT_MS)
    expect(page.locator("#single-progress")).to_contain_text(
        t("job.id", "zh", id=job["id"][:8]), timeout=RELOAD_TIMEOUT_MS
    )
    card = _wait_until_finished(page)
    assert card.get_attribute("data-status") == "done"
    page.locator("#single-result video").wait_for()

    page.get_by_role("tab", name=t("tab.queue", "zh")).click()
    page.locator(f"#history-table tr[data-job='{job['id']}']").wait_for()
    page.context.add_init_script(KEPT_TAB_WRITES_JS)
    page.reload()
    expect(page.get_by_role("tab", name=t("tab.queue", "zh"))).to_have_attribute(
        "aria-selected", "true", timeout=RELOAD_TIMEOUT_MS
    )
    expect(page.locator(f"#history-table tr[data-job='{job['id']}']")).to_be_visible(timeout=RELOAD_TIMEOUT_MS)
    # Only a person's click keeps a tab. The tabs Gradio selects itself (the first as the page
    # mounts, the kept one as it is restored) write nothing: the first tab's select, run before the
    # load had read the kept tab, made a reload land on the Single tab now and then.
    assert page.evaluate("window.kouboKeptTabWrites") == []


@needs_browser
def test_the_log_view_follows_the_newest_line(server: Server, visit: Callable[[str], Visit]) -> None:
    log = server.data_dir / "logs" / "koubo.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as file:
        file.writelines(f"2026-01-01 00:00:00 INFO koubo.test: filler line {index}\n" for index in range(300))
    page = visit("en-US").page
    page.get_by_role("tab", name=t("tab.logs", "en")).click()
    page.locator("#log-view [data-testid=log]", has_text="filler line 299").wait_for()
    view = page.locator("#log-view .koubo-log")
    # Longer than its box (200 lines): it scrolls, and sits at the bottom, at the newest line.
    assert view.evaluate("box => box.scrollHeight > box.clientHeight + 100")
    # The box may reach below the window's edge, with the page's controls above it: brought into
    # the window as a person scrolls the page, its own scroll must show the newest line.
    view.scroll_into_view_if_needed()
    # Generous bounds: on a busy machine the page's scroll can trail the new text by seconds.
    expect(page.get_by_text("filler line 299")).to_be_in_viewport(timeout=30_000)
    with log.open("a", encoding="utf-8") as file:
        file.write("2026-01-01 00:00:01 INFO koubo.test: the newest line\n")
    expect(page.get_by_text("the newest line")).to_be_in_viewport(timeout=30_000)
    assert view.evaluate("box => box.scrollTop + box.clientHeight >= box.scrollHeight - 2")


@needs_browser
def test_a_log_already_read_when_its_tab_first_opens_shows_its_newest_line(browser: Browser) -> None:
    # Gradio mounts a tab's content on its first opening; the log the page read as it loaded is
    # there already, and no change follows. Which comes first is a race the page test above can't
    # choose, so the script meets that order here, in the same browser.
    lines = "\n".join(f"<span>line {index}</span>" for index in range(300))
    page = browser.new_page()
    try:
        page.set_content(f"<div id=view><pre class=koubo-log style='height:200px;overflow:auto'>{lines}</pre></div>")
        page.evaluate("source => new Function('element', source)(document.getElementById('view'))", LOG_FOLLOW_JS)
        assert page.locator(".koubo-log").evaluate("box => box.scrollTop + box.clientHeight >= box.scrollHeight - 2")
    finally:
        page.close()


@needs_browser
def test_history_details_open_in_view_below_a_full_page(
    server: Server, visit: Callable[[str], Visit], media: dict[str, Path]
) -> None:
    # A full page of history (cancelled at once, so nothing runs): the details land far below it.
    jobs = [_submit_by_api(server, media["speech"], media["template2"]) for _ in range(21)]
    for job_id in jobs:
        httpx.post(f"{server.url}api/jobs/{job_id}/cancel", timeout=30)
    page = visit("en-US").page
    page.get_by_role("tab", name=t("tab.queue", "en")).click()
    row = page.locator(f"#history-table tr[data-job='{jobs[-1]}']")
    row.locator("button[data-action=preview]").click()
    preview = page.locator(f"#history-preview [data-testid=preview][data-job='{jobs[-1]}']")
    expect(preview).to_be_in_viewport()
    expect(preview).to_contain_text(t("preview.not_done", "en", status=t("status.cancelled", "en")))
    # The open preview follows a language switch.
    page.locator("#koubo-lang").get_by_text("中文").click()
    expect(preview).to_contain_text(
        t("preview.not_done", "zh", status=t("status.cancelled", "zh")), timeout=RELOAD_TIMEOUT_MS
    )


@needs_browser
def test_wav2lip_without_its_checkpoint_cannot_be_chosen(server: Server, visit: Callable[[str], Visit]) -> None:
    page = visit("en-US").page
    engine = page.locator(".koubo-engine").first
    engine.locator("input").click()
    options = page.get_by_role("option")
    expect(options.first).to_be_visible()
    assert [text.strip("✓ \n") for text in options.all_inner_texts()] == ["classic"]
    page.keyboard.press("Escape")
    # The menu says why, and where the checkpoint belongs.
    expect(engine).to_contain_text(str(server.data_dir / "models" / "wav2lip_gan.pth"))


@needs_browser
def test_the_footer_leads_nowhere_but_gradios_credit_and_the_two_drop_zones_line_up(
    server: Server, visit: Callable[[str], Visit]
) -> None:
    page = visit("zh-CN").page
    # No run history (it offers to save runs to a Hugging Face bucket), no page of the UI's internal
    # events, no second language switch, and no stray dot beside the one link.
    expect(page.locator("footer")).to_have_text(re.compile(r"^\s*使用 Gradio 构建\s*$"), use_inner_text=True)
    assert httpx.get(server.url + "gradio_api/runs", timeout=10).status_code == 404
    audio, video = (page.locator(f"#single-{kind}") for kind in ("audio", "video"))
    expect(audio.locator("button.upload-container")).to_be_visible()
    assert audio.bounding_box()["height"] == pytest.approx(video.bounding_box()["height"], abs=1)


@needs_browser
def test_a_long_error_and_long_names_keep_history_rows_one_line(
    server: Server, visit: Callable[[str], Visit], media: dict[str, Path], tmp_path: Path
) -> None:
    long_name = tmp_path / ("一个非常长的模板文件名 with a long English tail to wrap " * 3 + ".mp4")
    long_name.write_bytes(media["faceless"].read_bytes())
    failed = _submit_by_api(server, media["speech"], long_name)
    done = _submit_by_api(server, media["speech"], media["template"])
    wait_until(
        lambda: [httpx.get(f"{server.url}api/jobs/{job}", timeout=10).json()["status"] for job in (failed, done)]
        == ["failed", "done"],
        2 * JOB_TIMEOUT_MS / 1000,
        "one job to fail and the other to finish",
        interval=0.5,
    )
    page = visit("zh-CN").page
    page.get_by_role("tab", name=t("tab.queue", "zh")).click()
    failed_row = page.locator(f"#history-table tr[data-job='{failed}']")
    done_row = page.locator(f"#history-table tr[data-job='{done}']")
    expect(failed_row).to_have_attribute("data-status", "failed")
    # Both rows as high as each other, one line each: the error is shortened, whole in its tooltip.
    failed_height, done_height = failed_row.bounding_box()["height"], done_row.bounding_box()["height"]
    assert abs(failed_height - done_height) <= 2, (failed_height, done_height)
    assert failed_height < 60
    error = httpx.get(f"{server.url}api/jobs/{failed}", timeout=10).json()["error"]["message_zh"]
    assert failed_row.locator(".koubo-error").get_attribute("title") == error
    # What tells rows apart: a poster frame (the output's, the template's for one without), id, engine.
    for row, job in ((failed_row, failed), (done_row, done)):
        expect(row).to_contain_text(job[:8])
        expect(row.get_by_test_id("engine")).to_have_text("classic")
        row.get_by_test_id("thumb").evaluate(
            "img => img.complete ? null : new Promise(r => img.addEventListener('load', r, {once: true}))"
        )
        assert row.get_by_test_id("thumb").evaluate("img => img.naturalHeight") > 0
    page.screenshot(path=str(SCREENSHOTS / "koubo-ui-history-long.png"), full_page=True)


def test_a_job_started_but_not_yet_reporting_shows_that_it_is_starting_not_0_percent() -> None:
    from datetime import UTC, datetime, timedelta

    from koubo.jobs.service import AssetView, JobStatus, JobView, Lane
    from koubo.web.ui_render import job_table, progress_panel

    now = datetime.now(UTC)
    asset = AssetView("a", "audio", "speech.wav", 1, 1.0, "0" * 64, now)
    job = JobView(
        "f" * 32, None, JobStatus.running, None, 0.0, None, Lane.high, asset, asset, {"engine": "classic"}, now,
        now - timedelta(seconds=4), None, None, None, None, None, None, 1, None, None, None, None, None, None,
    )  # fmt: skip
    for lang in ("zh", "en"):
        card = progress_panel(job, lang)
        assert t("stage.starting", lang) in card and ">0%<" not in card
        row = job_table([job], lang, actions=(), empty_key="history.empty")
        assert t("stage.starting", lang) in row and " 0%" not in row and "4." in row  # its time: 4.x s


@needs_browser
def test_after_a_server_restart_the_open_page_catches_up_by_itself(
    browser: Browser, media: dict[str, Path], tmp_path: Path
) -> None:
    env = {"GRADIO_ANALYTICS_ENABLED": "False"}
    first = launch(tmp_path, env=env)
    try:
        session = Visit(browser, Server(first.url + "/", first.data_dir, first.links_port), "en-US")
        page = session.page
        session.upload("#single-audio", media["speech"])
        session.upload("#single-video", media["template2"])
        page.locator("#single-video video").wait_for()
        page.locator("#generate").click()
        page.locator("#single-progress [data-testid=job-progress]").wait_for()
    finally:
        first.stop()
    # The same server again, same data and ports: the page reconnects, reloads and follows the job.
    second = launch(tmp_path, env=env, ports=(first.port, first.links_port))
    try:
        card = _wait_until_finished(page)
        assert card.get_attribute("data-status") == "done", card.inner_text()
        expect(page.locator("#generate")).to_have_text(t("button.generate", "en"))
        page.locator("#single-result video").wait_for()
        session.close()
    finally:
        second.stop()


def test_cancelling_a_running_job_from_a_row_asks_first() -> None:
    from datetime import UTC, datetime

    from koubo.jobs.service import AssetView, JobStatus, JobView, Lane
    from koubo.web.ui_render import job_table

    now = datetime.now(UTC)
    asset = AssetView("a", "audio", "speech.wav", 1, 1.0, "0" * 64, now)
    running = JobView(
        "e" * 32, None, JobStatus.running, "render", 0.5, None, Lane.high, asset, asset, {"engine": "classic"}, now,
        now, None, None, None, None, None, None, 1, None, None, None, None, None, None,
    )  # fmt: skip
    row = job_table([running], "en", actions=("cancel",), empty_key="history.empty")
    assert f'data-action="cancel" data-job="{running.id}" data-confirm="{t("action.cancel_confirm", "en")}"' in row


def test_a_running_job_asked_to_stop_says_cancelling_until_it_has() -> None:
    from dataclasses import replace
    from datetime import UTC, datetime

    from koubo.jobs.service import AssetView, JobStatus, JobView, Lane
    from koubo.web.ui_render import job_table, progress_panel

    now = datetime.now(UTC)
    asset = AssetView("a", "audio", "speech.wav", 1, 1.0, "0" * 64, now)
    running = JobView(
        "d" * 32, None, JobStatus.running, "render", 0.5, None, Lane.high, asset, asset, {"engine": "classic"}, now,
        now, None, None, None, None, None, None, 1, None, None, None, None, None, None,
    )  # fmt: skip
    stopping = replace(running, cancel_requested=True)
    for lang in ("zh", "en"):
        assert t("job.stopping", lang) in progress_panel(stopping, lang)
        row = job_table([stopping], lang, actions=("cancel",), empty_key="history.empty")
        assert t("job.stopping", lang) in row and 'data-action="cancel"' not in row
        assert t("job.stopping", lang) not in progress_panel(running, lang)


def test_the_sync_picture_draws_mouth_and_loudness_with_silences_marked() -> None:
    from koubo.quality import SyncTrace
    from koubo.web.ui_render import sync_picture

    fps, frames = 25.0, 100
    loudness = np.full(frames, -80.0)
    loudness[20:60] = -20.0  # speech from 0.8 s to 2.4 s, silence around it
    aperture = np.where(loudness > -50, 0.3, 0.02)
    present = np.ones(frames, dtype=bool)
    present[70:75] = False
    trace = SyncTrace.thin(aperture, present, loudness, fps)
    svg = sync_picture({"trace": dataclasses.asdict(trace)}, "zh")
    assert t("sync.mouth", "zh") in svg and t("sync.loudness", "zh") in svg
    # Two silences (before and after the speech), and the mouth line broken where no face was found.
    assert svg.count('data-testid="silence"') == 2
    assert svg.count("<polyline") == 3
    assert sync_picture({}, "en") == "" and sync_picture(None, "en") == ""


def test_the_chinese_not_retryable_message_names_the_status_in_chinese() -> None:
    from koubo import errors

    refused = errors.not_retryable("done")
    assert "已完成" in refused.zh and "done" not in refused.zh and "done" in refused.en


def test_the_ui_queue_looks_for_new_events_at_a_calm_pace_when_idle(tmp_path: Path) -> None:
    """Gradio's queue looks for events every 1 ms while it has none: ~7 % of a core on an idle
    server (bench/service.py --idle 30). koubo's pace is set on the loops Gradio really runs."""
    from koubo.web.app import UI_PROGRESS_IDLE_S, UI_QUEUE_IDLE_S, create_app

    queue = create_app(Settings(data_dir=tmp_path / "data")).state.gradio.get_blocks()._queue
    assert (queue.sleep_when_free, queue.progress_update_sleep_when_free) == (UI_QUEUE_IDLE_S, UI_PROGRESS_IDLE_S)
    # The names are Gradio's own and still drive its loops: an upgrade that renamed them fails here.
    assert "self.sleep_when_free" in inspect.getsource(type(queue).start_processing)
    assert "self.progress_update_sleep_when_free" in inspect.getsource(type(queue).start_progress_updates)
