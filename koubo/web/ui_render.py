"""HTML for the browser UI's live panels: a job's progress, its result, the queue, history, batch and log.

Pure functions from JobService views to HTML strings (the markup in koubo/web/templates, the
stylesheet and page scripts in koubo/web/static), so the layout is testable without a browser.
Every name a user typed (file names are any Unicode) is escaped by the templates. Links are
relative ("api/...") so the UI keeps working when a proxy serves koubo under a sub-path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import segno
from markupsafe import Markup

from koubo.jobs.service import BatchView, JobStatus, JobView, WorkerView
from koubo.jobs.store import FINISHED, RETRYABLE
from koubo.links.signing import SignedLink
from koubo.media.probe import MediaInfo
from koubo.units import human_size
from koubo.web.i18n import Lang, error_text, stage_text, status_text, t
from koubo.web.markup import asset, render

# One stylesheet for every panel: gr.HTML scopes a css_template to its own component, and uses
# Gradio's theme variables so light and dark mode both read well.
PANEL_CSS = asset("panel.css")

# Row buttons of the tables: "copy" is done in the page; the others go to the server as one
# custom event ("job_action", {action, job}) that the UI's Python handler answers.
ACTIONS_JS = asset("actions.js")

# The Generate buttons' js (run in the page before the click is sent): the click's token, which
# the server honours (JobService.submit), in the first input. A second click within a moment of the
# first (a double click) is the same click and sends the same token, so it cannot make a second job.
CLICK_TOKEN_JS = asset("click_token.js")

# The open tab, kept in the browser when a person picks one, and read back (as the first input)
# on load. Only a click counts: Gradio also fires a tab's select event when it selects a tab
# itself (the first tab as the page mounts, the kept tab as the restore shows it), and the first
# tab's select, run before or after the load reads the kept tab, would make a reload forget it.
# A tab button names its tab (data-tab-id); a tab in the overflow menu of a narrow window only by
# its label (props.tab_ids: each tab's label in both languages).
TAB_MEMORY_JS = asset("tab_memory.js")
TAB_RECALL_JS = "(tab, ...rest) => [localStorage.getItem('koubo-tab') || '', ...rest]"

# The log view: with "follow" ticked it is re-rendered every second; each render scrolls the log
# box to its newest line (the last one), where new lines land.
LOG_FOLLOW_JS = asset("log_follow.js")

# Refuses a file over the upload limit as it is picked or dropped, before any byte is sent, and
# asks the server (custom event "file_too_large") to say so in the page's language. Registered in
# the capture phase on the document, so it runs before the upload components' own handlers.
SIZE_GUARD_JS = asset("size_guard.js")

# After a server restart the page reloads itself once /api/health answers again, so its restore
# (saved tab, job, batch) shows the live state; Gradio's own reconnect does not always reload.
RECONNECT_JS = asset("reconnect.js")

# Gradio's own strings (upload hints, toast titles, the footer) follow koubo's language switch: the
# page calls Gradio's changeLocale (what Gradio's own Settings panel calls) in the Gradio module the
# page has already loaded, found beside the page's entry script. %s: that module's file name.
GRADIO_LOCALE_JS = asset("gradio_locale.js")

# Gradio's upload components translate their hint once, as they appear: those on the page when the
# language is switched keep the old words. The page translates them itself, with this table of
# Gradio 6's own English and Chinese (zh-CN) wording, whenever they change (see GRADIO_TEXT_JS).
GRADIO_TEXT_ZH = {
    "Drop Audio Here": "将音频拖放到此处",
    "Drop Video Here": "将视频拖放到此处",
    "Drop File Here": "将文件拖放到此处",
    "- or -": "- 或 -",
    "Click to Upload": "点击上传",
}
GRADIO_TEXT_JS = asset("gradio_text.js")

# A template the browser cannot preview (a damaged file, or an AVI or RMVB koubo reads well) made
# Gradio's player raise "Video not playable", an English toast whatever the language. Koubo's own
# check beside the input (upload_checks_panel) says whether the file is usable, so the player's
# error is stopped in the capture phase, before the player's own listener sees it.
UNPLAYABLE_GUARD_JS = asset("unplayable_guard.js")

ACTIVE = frozenset({JobStatus.queued, JobStatus.running})


def download_url(job_id: str, *, inline: bool = False) -> str:
    return f"api/jobs/{job_id}/download" + ("?inline=1" if inline else "")


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def local_time(moment: datetime | None) -> str:
    # Stored times are UTC; the operator reads the server's local clock (the log uses it too).
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def _elapsed(job: JobView) -> float | None:
    if job.started_at is None:
        return None
    end = job.finished_at or datetime.now(job.started_at.tzinfo)
    return max(0.0, (end - job.started_at).total_seconds())


def _panel(template: str, lang: Lang, **context: Any) -> str:
    """`template` filled in, with the helpers every panel template may use."""
    return render(
        template,
        lang=lang,
        JobStatus=JobStatus,
        ACTIVE=ACTIVE,
        RETRYABLE=RETRYABLE,
        status_text=status_text,
        stage_text=stage_text,
        error_text=error_text,
        local_time=local_time,
        download_url=download_url,
        poster_url=poster_url,
        state_text=_state_text,
        clip=_clip,
        output_facts=_output_facts,
        **context,
    )


def _running_text(job: JobView, lang: Lang) -> str:
    """The stage a running job is in and how long it has run ("Starting: loading models · 4.2 s"),
    with its percent once the pipeline has reported one."""
    if job.cancel_requested:
        return t("job.stopping", lang)
    parts = [stage_text(job.stage or "starting", lang)]
    if job.progress > 0:
        parts.append(f"{job.progress * 100:.0f}%")
    elapsed = _elapsed(job)
    if elapsed is not None:
        parts.append(human_duration(elapsed))
    return " · ".join(parts)


def progress_panel(job: JobView, lang: Lang) -> str:
    """The single tab's live card: status, stage, percent bar, queue position, elapsed time, error."""
    meta = [t("job.id", lang, id=job.id[:8])]
    if job.status is JobStatus.queued and job.queue_position:
        meta.append(t("job.position", lang, position=job.queue_position))
    elapsed = _elapsed(job)
    if elapsed is not None:
        meta.append(t("job.took" if job.status in FINISHED else "job.elapsed", lang, elapsed=human_duration(elapsed)))
    if job.attempts > 1:
        meta.append(t("job.attempt", lang, attempt=job.attempts))
    return _panel("progress.html", lang, job=job, meta=meta)


def message_panel(text: str, *, error: bool = False) -> str:
    return render("message.html", text=text, error=error)


@dataclass(frozen=True)
class UploadCheck:
    """What koubo's content probe said of one uploaded file: what it holds, or why it cannot be used."""

    name: str
    size: int
    error: dict[str, str] | None = None  # KouboError.to_dict()
    duration: float | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    sample_rate: int | None = None

    @classmethod
    def of(cls, name: str, size: int, info: MediaInfo) -> UploadCheck:
        video, audio = info.video, info.audio
        return cls(
            name,
            size,
            duration=info.duration,
            fps=float(video.fps) if video else None,
            width=video.width if video else None,
            height=video.height if video else None,
            # A template's soundtrack is not what koubo uses: its rate is not worth a word.
            sample_rate=audio.sample_rate if audio and not video else None,
        )

    def facts(self) -> str:
        facts = [human_duration(self.duration), human_size(self.size)]
        if self.width and self.height:
            facts.append(f"{self.width}×{self.height}")
        if self.fps:
            facts.append(f"{round(self.fps, 2):g} fps")
        if self.sample_rate:
            facts.append(f"{self.sample_rate} Hz")
        return " · ".join(fact for fact in facts if fact)


def upload_checks_panel(checks: Sequence[UploadCheck], lang: Lang) -> str:
    """Beside an upload input: one line per file, its facts when usable, else koubo's reason why not."""
    return render("upload_checks.html", checks=checks, lang=lang, error_text=error_text)


def _report_line(report: dict[str, Any] | None, lang: Lang) -> str:
    if not report:
        return ""
    offset = report.get("sync_offset")
    if offset is None:
        return t("report.sync_unknown", lang)
    return t(
        "report.sync",
        lang,
        offset=f"{int(offset):+d}",
        confidence=f"{float(report.get('sync_confidence', 0.0)):.2f}",
        coverage=f"{100 * float(report.get('face_coverage', 0.0)):.0f}%",
    )


SYNC_WIDTH, SYNC_HEIGHT = 600, 90


def sync_picture(report: dict[str, Any] | None, lang: Lang) -> str:
    """The quality report's sync trace as a small inline SVG: the mouth opening measured on the
    output against the speech loudness over time, silences shaded. In sync, the two rise together."""
    trace = (report or {}).get("trace")
    if not trace or len(trace.get("seconds", [])) < 2:
        return ""
    seconds, silence = trace["seconds"], float(trace["silence_db"])
    end = seconds[-1] or 1.0
    peak = max(trace["loudness_db"])
    loud = [max(0.0, min(1.0, (db - silence) / max(peak - silence, 1e-6))) for db in trace["loudness_db"]]
    opened = [value for value in trace["aperture"] if value is not None]
    widest = max(opened, default=0.0) or 1.0

    def x(second: float) -> float:
        return SYNC_WIDTH * second / end

    def y(level: float) -> float:
        return SYNC_HEIGHT - 4 - (SYNC_HEIGHT - 8) * level

    shades, start = [], None  # (x, width) of each silence
    for index, db in enumerate([*trace["loudness_db"], peak]):  # the sentinel closes a final silence
        if db < silence and start is None:
            start = index
        elif db >= silence and start is not None:
            right = seconds[min(index, len(seconds) - 1)]
            shades.append((x(seconds[start]), max(1.0, x(right) - x(seconds[start]))))
            start = None
    mouth_runs: list[list[str]] = [[]]
    for second, value in zip(seconds, trace["aperture"], strict=True):
        if value is None:  # no face here: the line breaks
            mouth_runs.append([])
        else:
            mouth_runs[-1].append(f"{x(second):.1f},{y(value / widest):.1f}")
    return _panel(
        "sync.html",
        lang,
        width=SYNC_WIDTH,
        height=SYNC_HEIGHT,
        shades=shades,
        loudness=" ".join(f"{x(s):.1f},{y(level):.1f}" for s, level in zip(seconds, loud, strict=True)),
        mouth=[" ".join(run) for run in mouth_runs if len(run) > 1],
    )


def direct_link(link: SignedLink, lang: Lang, title_key: str = "link.title", local_base: str | None = None) -> str:
    """A signed link to hand out: the URL, a copy button and a QR code for phones.

    `local_base`: the link server's address when links_base_url is unset; the link is then said to
    work on this machine only (and how to change that), not offered as one to forward."""
    local = local_base is not None and link.kind == "direct"
    if link.kind == "bucket":
        title_key = "link.bucket_title"
    elif local and title_key == "link.title":
        title_key = "link.local_title"
    qr = segno.make(link.url, error="m").svg_data_uri(scale=4, border=4)
    return _panel("link.html", lang, link=link, qr=qr, title_key=title_key, local=local, local_base=local_base)


def result_panel(job: JobView, lang: Lang, link: SignedLink | None = None, local_base: str | None = None) -> str:
    """The finished video in an HTML5 player (streamed with Range requests), its download link and,
    given one, its signed direct link with a QR code."""
    if job.status is not JobStatus.done:
        return ""
    report = job.report or {}
    facts = [
        human_duration(report.get("video_duration") or report.get("audio_duration")),
        f"{report['fps']:.2f} fps" if report.get("fps") else "",
        human_size(job.output_size),
    ]
    return _panel(
        "result.html",
        lang,
        job=job,
        name=job.output_name or f"{job.id}.mp4",
        facts=facts,
        report_line=_report_line(job.report, lang),
        sync=Markup(sync_picture(job.report, lang)),
        link=Markup(direct_link(link, lang, local_base=local_base) if link else ""),
    )


ERROR_CHARS_IN_ROWS = 40


def _state_text(job: JobView, lang: Lang) -> tuple[str, str]:
    """What a row says beside its badge, and its CSS class: the queue position, the running stage,
    or the error (a cancellation muted: it is what someone asked for)."""
    if job.status is JobStatus.queued and job.queue_position:
        return t("job.position", lang, position=job.queue_position), "koubo-muted"
    if job.status is JobStatus.running:
        return _running_text(job, lang), "koubo-muted"
    if job.error:
        return error_text(job.error, lang), "koubo-muted" if job.status is JobStatus.cancelled else "koubo-error"
    return "", ""


def _clip(text: str) -> str:
    """A row's text on one line; all of it is in the tooltip and the details."""
    return text if len(text) <= ERROR_CHARS_IN_ROWS else text[: ERROR_CHARS_IN_ROWS - 1] + "…"


def poster_url(job: JobView) -> str:
    # The output's frame once done, the template's before: the URL names which, so caches stay right.
    return f"api/jobs/{job.id}/poster.jpg?v={'output' if job.status is JobStatus.done else 'template'}"


def _output_facts(job: JobView) -> str:
    if job.status is not JobStatus.done:
        return ""
    duration = (job.report or {}).get("video_duration")
    facts = [human_duration(duration) if duration else "", human_size(job.output_size)]
    return " · ".join(fact for fact in facts if fact)


def job_table(
    jobs: Sequence[JobView], lang: Lang, *, actions: Iterable[str], empty_key: str, show_created: bool = True
) -> str:
    """One row per job with its names, status (with live progress) and row buttons."""
    head = ["", t("col.job", lang), t("col.template", lang), t("col.audio", lang), t("col.status", lang)]
    head += [t("col.worker", lang), t("col.output", lang), t("col.actions", lang)]
    if show_created:
        head.insert(2, t("col.created", lang))
    return _panel(
        "job_table.html", lang, jobs=jobs, actions=tuple(actions), empty_key=empty_key, show_created=show_created, head=head
    )


def page_label(page: int, pages: int, total: int, lang: Lang) -> str:
    return render("page_label.html", lang=lang, page=page, pages=pages, total=total)


def queue_panel(summary: dict[str, int], jobs: Sequence[JobView], lang: Lang) -> str:
    """Counts by status, then the running jobs and the queued ones in the order they will start."""
    counts = {key: summary.get(key, 0) for key in ("queued", "running", "done", "failed", "workers")}
    ordered = sorted(
        jobs, key=lambda job: (job.status is not JobStatus.running, job.queue_position or 0, job.created_at)
    )
    head = [t("col.position", lang), "", t("col.job", lang), t("col.created", lang), t("col.template", lang)]
    head += [t("col.audio", lang), t("col.progress", lang), ""]
    return _panel("queue.html", lang, counts=counts, jobs=ordered, head=head)


def workers_panel(workers: Sequence[WorkerView], lang: Lang) -> str:
    """One row per worker: alive or gone, jobs running of its concurrency, device, engines, last heartbeat."""
    return render("workers.html", workers=workers, lang=lang, local_time=local_time)


def egress_panel(egress: dict[str, Any], lang: Lang) -> str:
    """The link servers' live egress and the busiest links (koubo/links/egress.py)."""
    summary = ""
    if egress["servers"]:
        summary = t(
            "egress.summary",
            lang,
            rate=f"{egress['rate'] * 8 / 1e6:.1f}",
            active=egress["active"],
            sent=human_size(egress["bytes_sent"]),
            downloads=egress["downloads_total"],
        )
    return render("egress.html", lang=lang, egress=egress, summary=summary)


def batch_panel(
    batch: BatchView,
    lang: Lang,
    *,
    zip_url: str | None,
    zip_link: SignedLink | None = None,
    local_base: str | None = None,
) -> str:
    """A batch's counts by status, its ZIP links once every item has finished, and a row per item."""
    finished = bool(batch.jobs) and all(job.status in FINISHED for job in batch.jobs)
    done = sum(1.0 if job.status in FINISHED else job.progress for job in batch.jobs)
    table = job_table(
        batch.jobs,
        lang,
        actions=("preview", "download", "copy", "retry"),
        empty_key="history.empty",
        show_created=False,
    )
    return _panel(
        "batch.html",
        lang,
        batch=batch,
        counts=" · ".join(f"{status_text(status, lang)} {count}" for status, count in batch.counts.items() if count),
        finished=finished,
        zip_url=zip_url,
        zip_link=Markup(direct_link(zip_link, lang, "link.zip_title", local_base) if zip_link and finished else ""),
        done=done / len(batch.jobs) if batch.jobs else 0.0,
        table=Markup(table),
    )


def preview_panel(job: JobView, lang: Lang, link: SignedLink | None = None, local_base: str | None = None) -> str:
    """A chosen job from the history or a batch: its player and download link when done, else why not."""
    if job.status is JobStatus.done:
        body = result_panel(job, lang, link, local_base)
    else:
        body = message_panel(t("preview.not_done", lang, status=status_text(job.status.value, lang)))
    params = job.params or {}
    details = [
        (t("detail.id", lang), job.id),
        (t("col.status", lang), status_text(job.status.value, lang)),
        (t("col.template", lang), job.video.name),
        (t("col.audio", lang), job.audio.name),
        (t("col.created", lang), local_time(job.created_at)),
        (t("detail.params", lang), ", ".join(f"{key} {value}" for key, value in params.items())),
    ]
    if job.error:
        details.append((t("detail.error", lang), error_text(job.error, lang)))
    return render("preview.html", lang=lang, job=job, body=Markup(body), details=details)


def log_panel(lines: Sequence[str], lang: Lang) -> str:
    levelled = [
        (next((name for name in ("CRITICAL", "ERROR", "WARNING") if f" {name} " in line), ""), line) for line in lines
    ]
    return render("log.html", lang=lang, lines=levelled)
