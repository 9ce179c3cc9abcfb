"""HTML for the browser UI's live panels: a job's progress, its result, the queue, history, batch and log.

Pure functions from JobService views to HTML strings, so the layout is testable without a browser.
Every name a user typed (file names are any Unicode) is escaped. Links are relative ("api/...")
so the UI keeps working when a proxy serves koubo under a sub-path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any

import segno

from koubo.jobs.service import BatchView, JobStatus, JobView, WorkerView
from koubo.jobs.store import FINISHED, RETRYABLE
from koubo.links.signing import SignedLink
from koubo.media.probe import MediaInfo
from koubo.units import human_size
from koubo.web.i18n import Lang, error_text, stage_text, status_text, t
from koubo.web.markup import render

# One stylesheet for every panel: gr.HTML scopes a css_template to its own component, and uses
# Gradio's theme variables so light and dark mode both read well.
PANEL_CSS = """
.koubo-card { border: 1px solid var(--border-color-primary); border-radius: var(--radius-lg);
  padding: 12px 14px; background: var(--background-fill-secondary); }
.koubo-row { display: flex; flex-wrap: wrap; align-items: center; gap: 8px 12px; }
.koubo-muted { color: var(--body-text-color-subdued); font-size: 0.9em; }
.koubo-badge { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 0.85em;
  font-weight: 600; white-space: nowrap; background: var(--neutral-200); color: var(--neutral-800); }
.koubo-badge.st-running { background: var(--primary-100); color: var(--primary-800); }
.koubo-badge.st-done { background: #d1fadf; color: #05603a; }
.koubo-badge.st-failed, .koubo-badge.st-timed_out { background: #fee4e2; color: #912018; }
.koubo-bar { height: 8px; border-radius: 4px; background: var(--neutral-200); overflow: hidden;
  margin: 8px 0 4px; min-width: 80px; }
.koubo-bar > span { display: block; height: 100%; background: var(--color-accent); transition: width 0.4s; }
.koubo-error { color: var(--error-text-color, #b42318); margin-top: 6px; white-space: pre-wrap; }
.koubo-check { font-size: 0.9em; margin: 2px 2px 0; }
.koubo-check .koubo-error { margin-top: 0; }
.koubo-check .koubo-ok { color: #067647; font-weight: 600; }
.koubo-empty { color: var(--body-text-color-subdued); padding: 8px 0; }
.koubo-video { width: 100%; max-height: 420px; background: #000; border-radius: var(--radius-lg); display: block; }
.koubo-table { width: 100%; border-collapse: collapse; font-size: 0.92em; border: none; margin: 6px 0 0; }
.koubo-table tr { border: none; }
.koubo-table th, .koubo-table td { text-align: left; padding: 6px 8px; vertical-align: top; border: none;
  border-bottom: 1px solid var(--border-color-primary); }
.koubo-table th { color: var(--body-text-color-subdued); font-weight: 600; white-space: nowrap; }
.koubo-table td.name { max-width: 220px; overflow-wrap: anywhere; }
/* Lists of jobs: one line per row however long a name or an error; the full text is in the title and
   in the job's details. */
.koubo-table.jobs td { white-space: nowrap; vertical-align: middle; }
.koubo-table.jobs td.name, .koubo-table.jobs .koubo-clip { max-width: 140px; overflow: hidden;
  text-overflow: ellipsis; overflow-wrap: normal; }
.koubo-table.jobs .koubo-clip { display: inline-block; vertical-align: middle; max-width: 180px; }
.koubo-scroll { overflow-x: auto; }
.koubo-table.jobs .koubo-actions { flex-wrap: nowrap; }
.koubo-table.jobs .koubo-bar { display: inline-block; width: 60px; min-width: 60px; margin: 0 6px;
  vertical-align: middle; }
.koubo-table.jobs .koubo-state { display: inline; margin-left: 6px; }
.koubo-table.jobs .koubo-state.koubo-error { margin-top: 0; white-space: nowrap; }
.koubo-thumb { height: 36px; width: auto; max-width: 64px; border-radius: 4px; background: #000; display: block;
  object-fit: cover; }
.koubo-id { font-family: var(--font-mono); font-size: 0.9em; }
.koubo-sync { margin-top: 8px; }
.koubo-sync svg { width: 100%; height: 90px; display: block; background: var(--background-fill-primary);
  border: 1px solid var(--border-color-primary); border-radius: var(--radius-md); }
.koubo-actions { display: flex; flex-wrap: wrap; gap: 4px; }
.koubo-actions button, .koubo-actions a, a.koubo-button { font: inherit; font-size: 0.9em; padding: 2px 8px;
  border-radius: var(--radius-md); border: 1px solid var(--border-color-primary);
  background: var(--background-fill-primary); color: var(--body-text-color); cursor: pointer;
  text-decoration: none; white-space: nowrap; }
.koubo-actions button:hover, .koubo-actions a:hover, a.koubo-button:hover { border-color: var(--color-accent); }
.koubo-actions button[data-action=delete] { color: #b42318; }
a.koubo-button.primary { background: var(--button-primary-background-fill);
  color: var(--button-primary-text-color); border-color: transparent; padding: 6px 14px; font-size: 1em; }
.koubo-log { font-family: var(--font-mono); font-size: 12px; line-height: 1.45; margin: 0; padding: 8px 10px;
  max-height: 560px; overflow-y: auto;
  white-space: pre-wrap; overflow-wrap: anywhere; background: var(--background-fill-secondary);
  border-radius: var(--radius-lg); border: 1px solid var(--border-color-primary); }
.koubo-log .lvl-ERROR, .koubo-log .lvl-CRITICAL { color: #d92d20; }
.koubo-log .lvl-WARNING { color: #b54708; }
dl.koubo-details { display: grid; grid-template-columns: max-content 1fr; gap: 4px 12px; margin: 8px 0 0; }
dl.koubo-details dt { color: var(--body-text-color-subdued); }
dl.koubo-details dd { margin: 0; overflow-wrap: anywhere; }
.koubo-link { display: flex; gap: 12px; align-items: center; margin-top: 10px; }
.koubo-link img { width: 200px; height: 200px; background: #fff; flex: none; }
.koubo-link .koubo-actions { margin: 4px 0; }
.koubo-link input { width: 100%; font: inherit; font-size: 0.85em; padding: 3px 6px;
  border: 1px solid var(--border-color-primary); border-radius: var(--radius-md);
  background: var(--background-fill-secondary); color: var(--body-text-color); }
"""

# Row buttons of the tables: "copy" is done in the page; the others go to the server as one
# custom event ("job_action", {action, job}) that the UI's Python handler answers.
ACTIONS_JS = """
async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try { await navigator.clipboard.writeText(text); return true; } catch (error) { /* fall through */ }
  }
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.style.position = 'fixed';
  area.style.opacity = '0';
  document.body.appendChild(area);
  area.select();
  const copied = document.execCommand('copy');
  area.remove();
  return copied;
}
element.addEventListener('click', async (event) => {
  const button = event.target.closest('button[data-action]');
  if (!button || !element.contains(button)) return;
  const action = button.dataset.action;
  if (action === 'copy') {
    const url = new URL(button.dataset.href, document.baseURI).href;
    if (await copyText(url)) {
      const label = button.textContent;
      button.textContent = button.dataset.copied;
      setTimeout(() => { button.textContent = label; }, 1500);
    } else {
      window.prompt(button.textContent, url);
    }
    return;
  }
  if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
  // The preview it opens may land far below (after a long table): bring it into view when it comes.
  if (action === 'preview') window.kouboRevealPreview = true;
  trigger('job_action', {action: action, job: button.dataset.job});
});
if (element.closest('.koubo-preview')) {
  new MutationObserver(() => {
    const preview = element.querySelector('[data-testid=preview], [data-testid=job-result]');
    if (!window.kouboRevealPreview || !preview) return;
    window.kouboRevealPreview = false;
    preview.scrollIntoView({block: 'start', behavior: 'instant'});
  }).observe(element, {childList: true, subtree: true});
}
"""

# The Generate buttons' js (run in the page before the click is sent): the click's token, which
# the server honours (JobService.submit), in the first input. A second click within a moment of the
# first (a double click) is the same click and sends the same token, so it cannot make a second job.
CLICK_TOKEN_JS = """
(...values) => {
  const clicks = window.kouboClicks || (window.kouboClicks = {});
  const button = '%s';
  const now = Date.now();
  if (!clicks[button] || now - clicks[button].at > 3000) {
    // crypto.randomUUID needs a secure context; the page is often served over plain http on a LAN.
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    clicks[button] = {at: now, token: Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')};
  }
  values[0] = clicks[button].token;
  return values;
}
"""

# The open tab, kept in the browser when a person picks one, and read back (as the first input)
# on load. Only a click counts: Gradio also fires a tab's select event when it selects a tab
# itself (the first tab as the page mounts, the kept tab as the restore shows it), and the first
# tab's select, run before or after the load reads the kept tab, would make a reload forget it.
# A tab button names its tab (data-tab-id); a tab in the overflow menu of a narrow window only by
# its label (props.tab_ids: each tab's label in both languages).
TAB_MEMORY_JS = """
if (!window.kouboTabMemory) {
  window.kouboTabMemory = true;
  document.addEventListener('click', (event) => {
    const button = event.target instanceof Element ? event.target.closest('#koubo-tabs button') : null;
    const tab = button && (button.dataset.tabId || props.tab_ids[button.textContent.trim()]);
    if (tab) localStorage.setItem('koubo-tab', tab);
  }, true);
}
"""
TAB_RECALL_JS = "(tab, ...rest) => [localStorage.getItem('koubo-tab') || '', ...rest]"

# The log view: with "follow" ticked it is re-rendered every second; each render scrolls the log
# box to its newest line (the last one), where new lines land.
LOG_FOLLOW_JS = """
new MutationObserver(() => {
  const log = element.querySelector('.koubo-log');
  if (log) log.scrollTop = log.scrollHeight;
}).observe(element, {childList: true, subtree: true});
"""

# Refuses a file over the upload limit as it is picked or dropped, before any byte is sent, and
# asks the server (custom event "file_too_large") to say so in the page's language. Registered in
# the capture phase on the document, so it runs before the upload components' own handlers.
SIZE_GUARD_JS = """
if (!window.kouboSizeGuard) {
  window.kouboSizeGuard = true;
  const refuse = (files, event) => {
    const big = Array.from(files || []).find((file) => file.size > props.max_bytes);
    if (!big) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    if (event.target instanceof HTMLInputElement) event.target.value = '';
    trigger('file_too_large', {name: big.name, size: big.size});
  };
  document.addEventListener('change', (event) => {
    const input = event.target;
    if (input instanceof HTMLInputElement && input.type === 'file') refuse(input.files, event);
  }, true);
  document.addEventListener('drop', (event) => refuse(event.dataTransfer && event.dataTransfer.files, event), true);
}
"""

# After a server restart the page reloads itself once /api/health answers again, so its restore
# (saved tab, job, batch) shows the live state; Gradio's own reconnect does not always reload.
RECONNECT_JS = """
if (!window.kouboReconnect) {
  window.kouboReconnect = true;
  let lost = false;
  setInterval(async () => {
    try {
      const response = await fetch(new URL('api/health', document.baseURI), {cache: 'no-store'});
      if (response.ok && lost) window.location.reload();
      lost = !response.ok;
    } catch (error) {
      lost = true;
    }
  }, 3000);
}
"""

# Gradio's own strings (upload hints, toast titles, the footer) follow koubo's language switch: the
# page calls Gradio's changeLocale (what Gradio's own Settings panel calls) in the Gradio module the
# page has already loaded, found beside the page's entry script. %s: that module's file name.
GRADIO_LOCALE_JS = """
(lang) => {
  window.kouboLang = lang;
  if (window.kouboTranslateGradio) window.kouboTranslateGradio();
  const entry = document.querySelector('script[type=module][src*="/assets/index-"]');
  if (entry) {
    import(new URL('%s', entry.src).href)
      .then((core) => core.changeLocale(lang === 'zh' ? 'zh-CN' : 'en'))
      .catch((error) => console.warn('koubo: Gradio language not switched', error));
  }
}
"""

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
GRADIO_TEXT_JS = """
if (!window.kouboTranslateGradio) {
  const toZh = props.gradio_text;
  const toEn = Object.fromEntries(Object.entries(toZh).map(([en, zh]) => [zh, en]));
  window.kouboTranslateGradio = () => {
    const table = {zh: toZh, en: toEn}[window.kouboLang];
    if (!table) return;
    for (const upload of document.querySelectorAll('.koubo-upload')) {
      const walker = document.createTreeWalker(upload, NodeFilter.SHOW_TEXT);
      for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const text = node.nodeValue.trim();
        if (table[text]) node.nodeValue = node.nodeValue.replace(text, table[text]);
      }
    }
  };
  new MutationObserver(window.kouboTranslateGradio)
    .observe(document.body, {childList: true, subtree: true, characterData: true});
}
"""

# A template the browser cannot preview (a damaged file, or an AVI or RMVB koubo reads well) made
# Gradio's player raise "Video not playable", an English toast whatever the language. Koubo's own
# check beside the input (upload_checks_panel) says whether the file is usable, so the player's
# error is stopped in the capture phase, before the player's own listener sees it.
UNPLAYABLE_GUARD_JS = """
if (!window.kouboUnplayableGuard) {
  window.kouboUnplayableGuard = true;
  document.addEventListener('error', (event) => {
    const media = event.target;
    if (media instanceof HTMLMediaElement && media.closest('.koubo-upload')) event.stopImmediatePropagation();
  }, true);
}
"""

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


def _badge(job: JobView, lang: Lang) -> str:
    status = job.status.value
    return f'<span class="koubo-badge st-{status}">{escape(status_text(status, lang))}</span>'


def _bar(fraction: float) -> str:
    percent = max(0.0, min(1.0, fraction)) * 100
    return f'<div class="koubo-bar"><span style="width: {percent:.1f}%"></span></div>'


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


def _error_line(job: JobView, lang: Lang) -> str:
    if not job.error:
        return ""
    # A cancellation is what someone asked for, not a failure to look into.
    css = "koubo-muted" if job.status is JobStatus.cancelled else "koubo-error"
    return f'<div class="{css}">{escape(error_text(job.error, lang))}</div>'


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
    fraction = 1.0 if job.status is JobStatus.done else job.progress
    parts = [
        '<div class="koubo-card" data-testid="job-progress" data-status="' + job.status.value + '">',
        '<div class="koubo-row">',
        _badge(job, lang),
    ]
    if job.status is JobStatus.running:
        stage = t("job.stopping", lang) if job.cancel_requested else stage_text(job.stage or "starting", lang)
        parts.append(f'<span data-testid="stage">{escape(stage)}</span>')
    if job.status is JobStatus.done or (job.status is JobStatus.running and job.progress > 0):
        parts.append(f"<strong>{fraction * 100:.0f}%</strong>")
    parts.append("</div>")
    if job.status in (JobStatus.running, JobStatus.done, JobStatus.queued):
        parts.append(_bar(fraction))
    parts.append(f'<div class="koubo-muted">{escape(" · ".join(meta))}</div>')
    parts.append(_error_line(job, lang))
    parts.append("</div>")
    return "".join(parts)


def message_panel(text: str, *, error: bool = False) -> str:
    css = "koubo-error" if error else "koubo-muted"
    return f'<div class="koubo-card"><div class="{css}" role="status">{escape(text)}</div></div>'


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

    shades, start = [], None
    for index, db in enumerate([*trace["loudness_db"], peak]):  # the sentinel closes a final silence
        if db < silence and start is None:
            start = index
        elif db >= silence and start is not None:
            right = seconds[min(index, len(seconds) - 1)]
            shades.append(
                f'<rect x="{x(seconds[start]):.1f}" y="0" width="{max(1.0, x(right) - x(seconds[start])):.1f}" '
                f'height="{SYNC_HEIGHT}" fill="#98a2b3" fill-opacity="0.25" data-testid="silence"/>'
            )
            start = None
    loud_line = " ".join(f"{x(s):.1f},{y(level):.1f}" for s, level in zip(seconds, loud, strict=True))
    mouth_runs: list[list[str]] = [[]]
    for second, value in zip(seconds, trace["aperture"], strict=True):
        if value is None:  # no face here: the line breaks
            mouth_runs.append([])
        else:
            mouth_runs[-1].append(f"{x(second):.1f},{y(value / widest):.1f}")
    mouth_lines = "".join(
        f'<polyline points="{" ".join(run)}" fill="none" stroke="#d92d20" stroke-width="1.6"/>'
        for run in mouth_runs
        if len(run) > 1
    )
    legend = (
        f'<span style="color: #d92d20">━ {escape(t("sync.mouth", lang))}</span> '
        f'<span style="color: #2e90fa">━ {escape(t("sync.loudness", lang))}</span> '
        f'<span style="color: #667085">▮ {escape(t("sync.silence", lang))}</span>'
    )
    return (
        f'<div class="koubo-sync" data-testid="sync-picture"><div class="koubo-muted">{escape(t("sync.title", lang))}'
        f" · {legend}</div>"
        f'<svg viewBox="0 0 {SYNC_WIDTH} {SYNC_HEIGHT}" preserveAspectRatio="none" role="img" '
        f'aria-label="{escape(t("sync.title", lang))}">{"".join(shades)}'
        f'<polyline points="{loud_line}" fill="none" stroke="#2e90fa" stroke-width="1.2"/>{mouth_lines}</svg></div>'
    )


def direct_link(link: SignedLink, lang: Lang, title_key: str = "link.title", local_base: str | None = None) -> str:
    """A signed link to hand out: the URL, a copy button and a QR code for phones.

    `local_base`: the link server's address when links_base_url is unset; the link is then said to
    work on this machine only (and how to change that), not offered as one to forward."""
    qr = segno.make(link.url, error="m").svg_data_uri(scale=4, border=4)
    local = local_base is not None and link.kind == "direct"
    if link.kind == "bucket":
        title_key = "link.bucket_title"
    elif local and title_key == "link.title":
        title_key = "link.local_title"
    if link.expires_at is None:
        expiry = t("link.never", lang)
    else:
        expiry = t("link.expires", lang, when=local_time(link.expires_at))
    copied = escape(t("action.copied", lang))
    return (
        f'<div class="koubo-link" data-testid="direct-link" data-kind="{link.kind}">'
        f'<img alt="QR" src="{escape(qr)}" data-testid="link-qr">'
        f'<div style="flex: 1; min-width: 0"><div>{escape(t(title_key, lang))}</div>'
        f'<input readonly value="{escape(link.url)}" data-testid="link-url" onfocus="this.select()">'
        '<div class="koubo-actions">'
        f'<button type="button" data-action="copy" data-href="{escape(link.url)}" data-copied="{copied}">'
        f"{escape(t('link.copy', lang))}</button></div>"
        f'<div class="koubo-muted">{escape(expiry)}</div>'
        + (
            f'<div class="koubo-error" data-testid="link-local">'
            f"{escape(t('link.local_only', lang, base=local_base))}</div>"
            if local
            else ""
        )
        + "</div></div>"
    )


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
    name = job.output_name or f"{job.id}.mp4"
    return "".join(
        [
            '<div class="koubo-card" data-testid="job-result">',
            (
                f'<video class="koubo-video" controls playsinline preload="metadata" '
                f'src="{escape(download_url(job.id, inline=True))}"></video>'
            ),
            '<div class="koubo-row" style="margin-top: 10px">',
            (
                f'<a class="koubo-button primary" href="{escape(download_url(job.id))}" download="{escape(name)}" '
                f'data-testid="download-link">{escape(t("result.download", lang))}</a>'
            ),
            f"<span>{escape(name)}</span>",
            f'<span class="koubo-muted">{escape(" · ".join(fact for fact in facts if fact))}</span>',
            "</div>",
            f'<div class="koubo-muted" style="margin-top: 6px">{escape(_report_line(job.report, lang))}</div>',
            sync_picture(job.report, lang),
            direct_link(link, lang, local_base=local_base) if link else "",
            "</div>",
        ]
    )


def _action_buttons(job: JobView, lang: Lang, *, allow: Iterable[str]) -> str:
    allowed = set(allow)
    buttons: list[str] = []

    def button(action: str, extra: str = "", label_key: str | None = None) -> None:
        if action in allowed:
            label = escape(t(label_key or f"action.{action}", lang))
            buttons.append(f'<button type="button" data-action="{action}" data-job="{job.id}"{extra}>{label}</button>')

    # A finished video can be watched; any other job shows its details (settings, error).
    button("preview", label_key="action.preview" if job.status is JobStatus.done else "action.details")
    if job.status is JobStatus.done:
        link = escape(download_url(job.id))
        if "download" in allowed:
            buttons.append(f'<a href="{link}" download>{escape(t("action.download", lang))}</a>')
        button("copy", f' data-href="{link}" data-copied="{escape(t("action.copied", lang))}"')
    if job.status in RETRYABLE:
        button("retry")
    if job.status in ACTIVE and not job.cancel_requested:
        # A running job loses its work so far: asked first, like Delete.
        confirm = escape(t("action.cancel_confirm", lang)) if job.status is JobStatus.running else ""
        button("cancel", f' data-confirm="{confirm}"' if confirm else "")
    button("delete", f' data-confirm="{escape(t("action.delete_confirm", lang))}"')
    return f'<div class="koubo-actions">{"".join(buttons)}</div>'


ERROR_CHARS_IN_ROWS = 40


def _status_cell(job: JobView, lang: Lang) -> str:
    """A row's status on one line: badge, then the queue position, the running stage, or the error
    shortened (all of it in the tooltip and the details)."""
    bar = _bar(job.progress) if job.status is JobStatus.running else ""
    if job.status is JobStatus.queued and job.queue_position:
        text, css = t("job.position", lang, position=job.queue_position), "koubo-muted"
    elif job.status is JobStatus.running:
        text, css = _running_text(job, lang), "koubo-muted"
    elif job.error:
        text = error_text(job.error, lang)
        css = "koubo-muted" if job.status is JobStatus.cancelled else "koubo-error"
    else:
        text, css = "", ""
    short = text if len(text) <= ERROR_CHARS_IN_ROWS else text[: ERROR_CHARS_IN_ROWS - 1] + "…"
    state = f'<span class="koubo-state koubo-clip {css}" title="{escape(text)}">{escape(short)}</span>' if text else ""
    return _badge(job, lang) + bar + state


def poster_url(job: JobView) -> str:
    # The output's frame once done, the template's before: the URL names which, so caches stay right.
    return f"api/jobs/{job.id}/poster.jpg?v={'output' if job.status is JobStatus.done else 'template'}"


def _identity_cells(job: JobView) -> str:
    """What tells rows apart at a glance: a poster frame, the job's short id and its engine."""
    engine = escape(str((job.params or {}).get("engine", "")))
    return (
        f'<td><img class="koubo-thumb" alt="" loading="lazy" src="{escape(poster_url(job))}" data-testid="thumb"></td>'
        f'<td><span class="koubo-id" title="{job.id}">{job.id[:8]}</span>'
        f' <span class="koubo-muted" data-testid="engine">{engine}</span></td>'
    )


def _name_cell(name: str) -> str:
    return f'<td class="name" title="{escape(name)}">{escape(name)}</td>'


def _output_cell(job: JobView) -> str:
    if job.status is not JobStatus.done:
        return ""
    duration = (job.report or {}).get("video_duration")
    facts = [human_duration(duration) if duration else "", human_size(job.output_size)]
    return escape(" · ".join(fact for fact in facts if fact))


def job_table(
    jobs: Sequence[JobView], lang: Lang, *, actions: Iterable[str], empty_key: str, show_created: bool = True
) -> str:
    """One row per job with its names, status (with live progress) and row buttons."""
    if not jobs:
        return f'<div class="koubo-empty">{escape(t(empty_key, lang))}</div>'
    allowed = tuple(actions)
    head = [
        "",
        t("col.job", lang),
        t("col.template", lang),
        t("col.audio", lang),
        t("col.status", lang),
        t("col.worker", lang),
        t("col.output", lang),
    ]
    if show_created:
        head.insert(2, t("col.created", lang))
    head.append(t("col.actions", lang))
    rows = []
    for job in jobs:
        cells = [
            _name_cell(job.video.name),
            _name_cell(job.audio.name),
            f"<td>{_status_cell(job, lang)}</td>",
            f'<td class="koubo-muted" data-testid="worker">{escape(job.worker_name or "")}</td>',
            f"<td>{_output_cell(job)}</td>",
        ]
        if show_created:
            cells.insert(0, f'<td class="koubo-muted">{escape(local_time(job.created_at))}</td>')
        cells.insert(0, _identity_cells(job))
        cells.append(f"<td>{_action_buttons(job, lang, allow=allowed)}</td>")
        rows.append(f'<tr data-job="{job.id}" data-status="{job.status.value}">{"".join(cells)}</tr>')
    header = "".join(f"<th>{escape(name)}</th>" for name in head)
    # On a narrow window the table scrolls sideways rather than wrapping its rows.
    return (
        f'<div class="koubo-scroll"><table class="koubo-table jobs"><thead><tr>{header}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def page_label(page: int, pages: int, total: int, lang: Lang) -> str:
    text = t("history.page", lang, page=page + 1, pages=pages, total=total)
    return f'<div class="koubo-muted" data-testid="page-label">{escape(text)}</div>'


def queue_panel(summary: dict[str, int], jobs: Sequence[JobView], lang: Lang) -> str:
    """Counts by status, then the running jobs and the queued ones in the order they will start."""
    counts = {key: summary.get(key, 0) for key in ("queued", "running", "done", "failed", "workers")}
    line = f'<div class="koubo-muted" data-testid="queue-summary">{escape(t("queue.summary", lang, **counts))}</div>'
    if not jobs:
        return f'{line}<div class="koubo-empty">{escape(t("queue.empty", lang))}</div>'
    ordered = sorted(
        jobs, key=lambda job: (job.status is not JobStatus.running, job.queue_position or 0, job.created_at)
    )
    head = [
        t("col.position", lang),
        "",
        t("col.job", lang),
        t("col.created", lang),
        t("col.template", lang),
        t("col.audio", lang),
        t("col.progress", lang),
        "",
    ]
    rows = []
    for job in ordered:
        position = str(job.queue_position) if job.queue_position else "▶"
        rows.append(
            f'<tr data-job="{job.id}" data-status="{job.status.value}">'
            f"<td><strong>{position}</strong></td>"
            f"{_identity_cells(job)}"
            f'<td class="koubo-muted">{escape(local_time(job.created_at))}</td>'
            f"{_name_cell(job.video.name)}{_name_cell(job.audio.name)}"
            f"<td>{_status_cell(job, lang)}</td>"
            f"<td>{_action_buttons(job, lang, allow=('cancel',))}</td></tr>"
        )
    header = "".join(f"<th>{escape(name)}</th>" for name in head)
    table = f'<table class="koubo-table jobs"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    return f'{line}<div class="koubo-scroll">{table}</div>'


def workers_panel(workers: Sequence[WorkerView], lang: Lang) -> str:
    """One row per worker: alive or gone, jobs running of its concurrency, device, engines, last heartbeat."""
    return render("workers.html", workers=workers, lang=lang, local_time=local_time)


def egress_panel(egress: dict[str, Any], lang: Lang) -> str:
    """The link servers' live egress and the busiest links (koubo/links/egress.py)."""
    if not egress["servers"]:
        return f'<div class="koubo-muted" data-testid="egress">{escape(t("egress.none", lang))}</div>'
    line = t(
        "egress.summary",
        lang,
        rate=f"{egress['rate'] * 8 / 1e6:.1f}",
        active=egress["active"],
        sent=human_size(egress["bytes_sent"]),
        downloads=egress["downloads_total"],
    )
    rows = "".join(
        f'<tr><td class="name">{escape(link.split("/", 1)[-1])}</td>'
        f'<td class="koubo-muted">{escape(link.split("/", 1)[0][:8])}</td><td>{count}</td></tr>'
        for link, count in egress["busiest"]
    )
    head = "".join(f"<th>{escape(t(key, lang))}</th>" for key in ("egress.link", "egress.job", "egress.downloads"))
    table = f'<table class="koubo-table"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>' if rows else ""
    return f'<div data-testid="egress"><div class="koubo-muted">{escape(line)}</div>{table}</div>'


def batch_panel(
    batch: BatchView,
    lang: Lang,
    *,
    zip_url: str | None,
    zip_link: SignedLink | None = None,
    local_base: str | None = None,
) -> str:
    """A batch's counts by status, its ZIP links once every item has finished, and a row per item."""
    counts = " · ".join(f"{status_text(status, lang)} {count}" for status, count in batch.counts.items() if count)
    head = [
        '<div class="koubo-card" data-testid="batch">',
        '<div class="koubo-row">',
        f"<strong>{escape(t('batch.summary', lang, id=batch.id[:8], total=len(batch.jobs)))}</strong>",
        f'<span class="koubo-muted">{escape(counts)}</span>',
    ]
    if zip_url and batch.jobs and all(job.status in FINISHED for job in batch.jobs):
        head.append(f'<a class="koubo-button" href="{escape(zip_url)}" download>{escape(t("batch.zip", lang))}</a>')
    head.append("</div>")
    if zip_link and batch.jobs and all(job.status in FINISHED for job in batch.jobs):
        head.append(direct_link(zip_link, lang, "link.zip_title", local_base))
    done = sum(1.0 if job.status in FINISHED else job.progress for job in batch.jobs)
    head.append(_bar(done / len(batch.jobs) if batch.jobs else 0.0))
    table = job_table(
        batch.jobs,
        lang,
        actions=("preview", "download", "copy", "retry"),
        empty_key="history.empty",
        show_created=False,
    )
    return "".join(head) + table + "</div>"


def _details(job: JobView, lang: Lang) -> str:
    params = job.params or {}
    rows = [
        (t("detail.id", lang), job.id),
        (t("col.status", lang), status_text(job.status.value, lang)),
        (t("col.template", lang), job.video.name),
        (t("col.audio", lang), job.audio.name),
        (t("col.created", lang), local_time(job.created_at)),
        (t("detail.params", lang), ", ".join(f"{key} {value}" for key, value in params.items())),
    ]
    if job.error:
        rows.append((t("detail.error", lang), error_text(job.error, lang)))
    body = "".join(f"<dt>{escape(name)}</dt><dd>{escape(str(value))}</dd>" for name, value in rows if value)
    return f'<dl class="koubo-details">{body}</dl>'


def preview_panel(job: JobView, lang: Lang, link: SignedLink | None = None, local_base: str | None = None) -> str:
    """A chosen job from the history or a batch: its player and download link when done, else why not."""
    title = (
        f"<h3 style='margin: 0 0 8px'>{escape(t('preview.title', lang, name=job.output_name or job.video.name))}</h3>"
    )
    if job.status is JobStatus.done:
        body = result_panel(job, lang, link, local_base)
    else:
        body = message_panel(t("preview.not_done", lang, status=status_text(job.status.value, lang)))
    return f'<div data-testid="preview" data-job="{job.id}">{title}{body}{_details(job, lang)}</div>'


def log_panel(lines: Sequence[str], lang: Lang) -> str:
    if not lines:
        return f'<div class="koubo-empty">{escape(t("logs.empty", lang))}</div>'
    rendered = []
    for line in lines:
        level = next((name for name in ("CRITICAL", "ERROR", "WARNING") if f" {name} " in line), "")
        css = f' class="lvl-{level}"' if level else ""
        rendered.append(f"<span{css}>{escape(line)}</span>")
    return f'<pre class="koubo-log" data-testid="log">{chr(10).join(rendered)}</pre>'
