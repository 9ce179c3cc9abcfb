"""The browser UI: Gradio Blocks mounted at "/" by koubo.web.app, on top of JobService.

Four tabs (single, batch, queue & history, logs) in Chinese or English. Nothing is rendered in
this process's memory that another process would need: every panel is re-read from JobService,
which the workers update through the database, so a page shows the same state after a restart.
Long work never holds a Gradio worker: a click submits the job and returns; a gr.Timer polls it.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import gradio as gr
from gradio import __file__ as gradio_init

from koubo import errors
from koubo.config import Settings
from koubo.engines import ENGINES
from koubo.engines.checkpoint import checkpoint_path
from koubo.errors import KouboError
from koubo.jobs.service import AssetView, BatchView, JobService, JobStatus, JobView, Lane
from koubo.links.egress import combined, read_snapshots
from koubo.links.handout import LinkMaker
from koubo.links.signing import SignedLink, signed_batch_link
from koubo.links.zipstream import batch_zip_name
from koubo.logs import tail_log
from koubo.options import CRF_MIN, EXPRESSIVENESS_MAX, EXPRESSIVENESS_MIN, GenerateOptions, batch_pairs
from koubo.units import human_size
from koubo.web.i18n import (
    DEFAULT_LANG,
    LANGUAGE_CHOICES,
    STATUS_FILTERS,
    Lang,
    choose_language,
    error_text,
    language_from_header,
    t,
)
from koubo.web.ui_render import (
    ACTIONS_JS,
    ACTIVE,
    CLICK_TOKEN_JS,
    FINISHED,
    GRADIO_LOCALE_JS,
    GRADIO_TEXT_JS,
    GRADIO_TEXT_ZH,
    LOG_FOLLOW_JS,
    PANEL_CSS,
    RECONNECT_JS,
    SIZE_GUARD_JS,
    TAB_MEMORY_JS,
    TAB_RECALL_JS,
    UNPLAYABLE_GUARD_JS,
    UploadCheck,
    batch_panel,
    egress_panel,
    job_table,
    log_panel,
    message_panel,
    page_label,
    preview_panel,
    progress_panel,
    queue_panel,
    result_panel,
    upload_checks_panel,
    workers_panel,
)

log = logging.getLogger(__name__)

PAGE_SIZE = 20
# The page's tabs, by the id each gr.Tab is given (and the page keeps to come back to).
TAB_IDS = ("single", "batch", "queue", "logs")
JOB_POLL_SECONDS = 1.0
QUEUE_POLL_SECONDS = 2.0
LOG_POLL_SECONDS = 1.0
LOG_LINE_CHOICES = [100, 200, 500, 1000]
QUEUE_LIST_LIMIT = 200
# "High" quality lowers x264's CRF by this much: about 1.8x the bitrate, visibly sharper faces.
HIGH_QUALITY_CRF_STEP = 5
# The page's file pickers offer these (the browser's accept= list); the server decides by content.
AUDIO_FILE_TYPES = ["audio", ".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus", ".wma", ".amr", ".mp4", ".mov"]
VIDEO_FILE_TYPES = [
    "video", ".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".flv", ".ts", ".mts", ".rmvb", ".rm", ".wmv", ".mpg",
    ".mpeg", ".3gp",
]  # fmt: skip
# Gradio's footer keeps only its credit. Its "Use via API" page lists the UI's internal events, not
# koubo's API (/docs); its run history page offers to save runs to a Hugging Face bucket; its settings
# hold a second language switch (Gradio's strings only) and notes for the app's developer.
FOOTER_LINKS: list[Literal["api", "gradio", "settings", "runs"]] = ["gradio"]
# The single tab's two drop zones stand side by side. Gradio's audio input has no height setting, so
# the page's CSS makes its empty drop zone as tall as the video input's (the block adds its 1 px border).
# With one link left in the footer, Gradio still draws the dots that would part it from the others.
UPLOAD_HEIGHT = 300
PAGE_CSS = f"""
#single-audio button.upload-container {{ min-height: {UPLOAD_HEIGHT - 2}px; }}
footer .divider {{ display: none; }}
"""

Kind = Literal["audio", "video"]


Component = TypeVar("Component", bound=gr.blocks.Block)
# What a handler answers: a new value (or gr.update) for each component it changes, the others left as they are.
Outputs = dict[gr.blocks.Block, Any]
Texts = Callable[[Lang], dict[str, Any]]


class Labels:
    """Components whose visible text depends on the language. Each is made here, with its text key
    given once: the same function gives its first text (in DEFAULT_LANG) and its text after a switch."""

    def __init__(self) -> None:
        self.components: list[gr.blocks.Block] = []
        self._texts: list[Texts] = []

    def _make(self, make: Callable[..., Component], texts: Texts, **kwargs: Any) -> Component:
        component = make(**texts(DEFAULT_LANG), **kwargs)
        self.components.append(component)
        self._texts.append(texts)
        return component

    def label(
        self,
        make: Callable[..., Component],
        key: str,
        *,
        info: str | None = None,
        info_values: dict[str, object] | None = None,
        **kwargs: Any,
    ) -> Component:
        """Inputs, tabs and accordions: their label, and the line of help under it."""

        def texts(lang: Lang) -> dict[str, Any]:
            return {"label": t(key, lang)} | ({"info": t(info, lang, **(info_values or {}))} if info else {})

        return self._make(make, texts, **kwargs)

    def text(
        self,
        make: Callable[..., Component],
        key: str,
        *,
        values: dict[str, object] | None = None,
        markdown_prefix: str = "",
        **kwargs: Any,
    ) -> Component:
        """Buttons and Markdown: their value is their text (a heading's text after its "### ")."""
        return self._make(make, lambda lang: {"value": markdown_prefix + t(key, lang, **(values or {}))}, **kwargs)

    def html(self, make: Callable[..., Component], render: Callable[[Lang], str], **kwargs: Any) -> Component:
        """HTML panels: their markup, drawn in the language."""
        return self._make(make, lambda lang: {"value": render(lang)}, **kwargs)

    def choices(
        self,
        make: Callable[..., Component],
        key: str,
        options: list[tuple[str, str]],
        *,
        info: str | None = None,
        **kwargs: Any,
    ) -> Component:
        """Radios: the label and each choice's text (choice values stay the same)."""

        def texts(lang: Lang) -> dict[str, Any]:
            extra = {"info": t(info, lang)} if info else {}
            return {"label": t(key, lang), "choices": [(t(text, lang), value) for text, value in options]} | extra

        return self._make(make, texts, **kwargs)

    def updates(self, lang: Lang) -> list[dict[str, Any]]:
        return [gr.update(**texts(lang)) for texts in self._texts]


@dataclass
class OptionWidgets:
    """The options panel's widgets; `Handlers.options` turns their values into koubo.options.GenerateOptions."""

    engine: gr.Dropdown
    expressiveness: gr.Slider
    quality: gr.Radio
    denoise: gr.Radio

    @property
    def inputs(self) -> list[gr.components.Component]:
        return [self.engine, self.expressiveness, self.quality, self.denoise]


@dataclass
class Handlers:
    """What the UI's events do: each method reads or changes jobs through JobService only."""

    service: JobService
    settings: Settings
    links: LinkMaker
    # The page's parts, once built: handlers answer with {component: value}, never a tuple whose
    # order must match an output list written elsewhere.
    tabs: gr.Tabs = field(init=False)
    single: SingleTab = field(init=False)
    batch: BatchTab = field(init=False)
    queue: QueueTab = field(init=False)
    logs: LogsTab = field(init=False)

    # --- uploads and options ---------------------------------------------------------------------------

    def _received(self, upload: str) -> Path:
        """Only a file Gradio itself received from this page: never a path a caller named (Gradio checks
        this too; this is the rule in koubo's own words). Whether such a path exists is not said."""
        source = Path(upload)
        if not source.resolve().is_relative_to(self.settings.gradio_dir.resolve()) or not source.is_file():
            raise errors.not_an_upload()
        return source

    def check_uploads(self, lang: Lang, uploads: str | list[str] | None, kind: Kind) -> tuple[str, list[UploadCheck]]:
        """As files arrive in an input: koubo's content probe on each (the one add_asset runs), shown
        beside the input. Returns (the panel, the checks, kept to redraw the panel in another language)."""
        paths = [] if not uploads else [uploads] if isinstance(uploads, str) else list(uploads)
        checks = [self._check_upload(path, kind) for path in paths]
        return upload_checks_panel(checks, lang), checks

    def _check_upload(self, upload: str, kind: Kind) -> UploadCheck:
        # Gradio keeps the browser's file name as the temp file's name: the name the message uses.
        name = Path(upload).name
        try:
            source = self._received(upload)
            size = source.stat().st_size
            return UploadCheck.of(name, size, self.service.check_upload(source, name, kind))
        except KouboError as error:
            return UploadCheck(name, 0, error=error.to_dict())

    @staticmethod
    def render_checks(lang: Lang, checks: list[UploadCheck] | None) -> str:
        return upload_checks_panel(checks or [], lang)

    def stage_upload(self, upload: str, kind: Kind) -> AssetView:
        """Hand a file Gradio saved in its temp folder to JobService as an asset (probed by content).

        add_asset consumes its source (moves or deletes it), so it gets its own name in the
        service's upload staging folder: a hard link where possible (templates can be gigabytes),
        else a copy.
        """
        source = self._received(upload)
        staged = self.service.upload_tmp_dir / f"ui-{uuid.uuid4().hex}"
        try:
            os.link(source, staged)
        except OSError:
            shutil.copyfile(source, staged)
        # Gradio keeps the browser's file name as the temp file's name: the display name.
        return self.service.add_asset(staged, source.name, kind)

    def options(self, engine: str, expressiveness: float, quality: str, denoise: str) -> GenerateOptions:
        """The options panel's values as the options asked for; "standard" quality is the configured CRF."""
        crf = max(CRF_MIN, self.settings.video_crf - HIGH_QUALITY_CRF_STEP) if quality == "high" else None
        return GenerateOptions(engine=engine, expressiveness=float(expressiveness), crf=crf, denoise=denoise)

    # --- single ------------------------------------------------------------------------------------------

    def _following(self, job: JobView | None) -> Outputs:
        """The single tab's timer and buttons: polling, with Cancel shown and Generate disabled, while
        its job is queued or running ("cancelling…" shows in the card once a cancel is asked)."""
        tab = self.single
        active = job is not None and job.status in ACTIVE
        return {
            tab.timer: gr.Timer(active=active),
            tab.cancel: gr.update(visible=active and not job.cancel_requested),
            tab.generate: gr.update(interactive=not active),
        }

    def submit_single(
        self,
        lang: Lang,
        audio: str | None,
        video: str | None,
        engine: str,
        expressiveness: float,
        quality: str,
        denoise: str,
        client_token: str,
    ) -> Outputs:
        """The job, its card and the tab's state. `client_token` is the click's (see CLICK_TOKEN_JS):
        a double click submits one job."""
        tab = self.single
        if not audio or not video:
            message = message_panel(t("error.need_audio" if not audio else "error.need_video", lang), error=True)
            return {tab.job: None, tab.progress: message, tab.result: ""} | self._following(None)
        try:
            audio_asset = self.stage_upload(audio, "audio")
            video_asset = self.stage_upload(video, "video")
            params = self.options(engine, expressiveness, quality, denoise)
            # A person waits for this one: it passes queued batch items (koubo/jobs/store.py run_order).
            job = self.service.submit(
                audio_asset.id, video_asset.id, params, Lane.high, client_token=client_token or None
            )
        except KouboError as error:
            message = message_panel(error_text(error, lang), error=True)
            return {tab.job: None, tab.progress: message, tab.result: ""} | self._following(None)
        # Followed from now on, whatever the next tick finds.
        busy = {
            tab.timer: gr.Timer(active=True),
            tab.cancel: gr.update(visible=True),
            tab.generate: gr.update(interactive=False),
        }
        return {tab.job: job.id, tab.progress: progress_panel(job, lang), tab.result: ""} | busy

    def poll_single(self, lang: Lang, job_id: str | None) -> Outputs:
        """One timer tick: the card and the tab's state. The result is written once, on the tick that
        sees the job finish, so a playing video is never reloaded."""
        tab = self.single
        if not job_id:
            return self._following(None)
        try:
            job = self.service.get(job_id)
        except KouboError as error:
            return {tab.progress: message_panel(error_text(error, lang), error=True), tab.result: ""} | self._following(
                None
            )
        shown = {tab.progress: progress_panel(job, lang)}
        if job.status not in ACTIVE:
            shown[tab.result] = result_panel(job, lang, self._link(job), self._local_base)
        return shown | self._following(job)

    def render_single(self, lang: Lang, job_id: str | None) -> Outputs:
        """The card and the result in `lang`, after a language switch."""
        tab = self.single
        if not job_id:
            return gr.skip()  # every output as it is (an empty dict would not say so to Gradio)
        try:
            job = self.service.get(job_id)
        except KouboError as error:
            return {tab.progress: message_panel(error_text(error, lang), error=True), tab.result: ""}
        return {
            tab.progress: progress_panel(job, lang),
            tab.result: result_panel(job, lang, self._link(job), self._local_base),
        }

    def cancel_single(self, lang: Lang, job_id: str | None) -> Outputs:
        tab = self.single
        if not job_id:
            return {tab.cancel: gr.update(visible=False)}
        try:
            job = self.service.cancel(job_id)
        except KouboError as error:
            return {
                tab.progress: message_panel(error_text(error, lang), error=True),
                tab.cancel: gr.update(visible=False),
            }
        return {
            tab.progress: progress_panel(job, lang),
            tab.cancel: gr.update(visible=job.status in ACTIVE and not job.cancel_requested),
        }

    # --- batch -------------------------------------------------------------------------------------------

    def submit_batch(
        self,
        lang: Lang,
        audios: list[str] | None,
        videos: list[str] | None,
        engine: str,
        expressiveness: float,
        quality: str,
        denoise: str,
        client_token: str,
    ) -> Outputs:
        """The batch, its panel, an emptied preview and the timer; a double click submits one batch."""
        tab = self.batch
        audios, videos = audios or [], videos or []

        def refused(text: str) -> Outputs:
            message = message_panel(text, error=True)
            return {tab.batch: None, tab.view: message, tab.preview: "", tab.timer: gr.Timer(active=False)}

        try:
            batch_pairs(audios, videos)
        except KouboError:  # said in the upload's words
            return refused(t("error.batch_shape", lang))
        try:
            audio_ids = [self.stage_upload(path, "audio").id for path in audios]
            video_ids = [self.stage_upload(path, "video").id for path in videos]
            batch = self.service.submit_batch(
                audio_ids,
                video_ids,
                self.options(engine, expressiveness, quality, denoise),
                client_token=client_token or None,
            )
        except KouboError as error:
            return refused(error_text(error, lang))
        return {tab.batch: batch.id, tab.view: self._batch_panel(batch, lang), tab.preview: ""} | {
            tab.timer: gr.Timer(active=True)
        }

    def _batch_panel(self, batch: BatchView, lang: Lang) -> str:
        zip_link = signed_batch_link(self.settings, batch.id, batch_zip_name(batch.id))
        return batch_panel(
            batch, lang, zip_url=f"api/batches/{batch.id}/zip", zip_link=zip_link, local_base=self._local_base
        )

    @property
    def _local_base(self) -> str | None:
        """The link server's address while links_base_url is unset: links then work on this machine only."""
        return None if self.settings.links_base_url else self.settings.links_base

    def _link(self, job: JobView) -> SignedLink | None:
        """The link of a finished job to hand out (a bucket link once uploaded); None before it is done."""
        if job.status is not JobStatus.done or not job.output_name:
            return None
        return self.links.job_link(job.id, job.output_name, job.storage_key)

    def poll_batch(self, lang: Lang, batch_id: str | None) -> Outputs:
        """The batch panel and its timer, which polls until every item has finished."""
        tab = self.batch
        if not batch_id:
            return {tab.timer: gr.Timer(active=False)}
        try:
            batch = self.service.get_batch(batch_id)
        except KouboError as error:
            return {tab.view: message_panel(error_text(error, lang), error=True), tab.timer: gr.Timer(active=False)}
        running = any(job.status not in FINISHED for job in batch.jobs)
        return {tab.view: self._batch_panel(batch, lang), tab.timer: gr.Timer(active=running)}

    def batch_action(self, lang: Lang, batch_id: str | None, event: gr.EventData) -> Outputs:
        """A batch row's button: what it did to the preview, then the batch panel again."""
        return self._job_action(lang, event, self.batch.preview, self.batch.preview_job) | self.poll_batch(
            lang, batch_id
        )

    def render_preview(self, lang: Lang, job_id: str | None) -> Any:
        """The open preview again in `lang`, after a language switch."""
        if not job_id:
            return gr.skip()
        try:
            job = self.service.get(job_id)
        except KouboError:
            return ""
        return preview_panel(job, lang, self._link(job), self._local_base)

    # --- queue and history --------------------------------------------------------------------------------

    def refresh_queue(self, lang: Lang, status_filter: str, page: int) -> Outputs:
        """The queue, workers and history panels, and the page, clamped to what exists."""
        tab = self.queue
        active, _ = self.service.list_jobs(status=JobStatus.running, limit=QUEUE_LIST_LIMIT)
        queued, _ = self.service.list_jobs(status=JobStatus.queued, limit=QUEUE_LIST_LIMIT)
        status = None if status_filter == "all" else JobStatus(status_filter)
        jobs, total = self.service.list_jobs(status=status, offset=page * PAGE_SIZE, limit=PAGE_SIZE)
        pages = max(1, -(-total // PAGE_SIZE))
        if page >= pages:
            page = pages - 1
            jobs, total = self.service.list_jobs(status=status, offset=page * PAGE_SIZE, limit=PAGE_SIZE)
        history = job_table(
            jobs, lang, actions=("preview", "download", "copy", "retry", "cancel", "delete"), empty_key="history.empty"
        )
        return {
            tab.queue: queue_panel(self.service.queue_summary(), [*active, *queued], lang),
            tab.workers: workers_panel(self.service.workers(), lang)
            + egress_panel(combined(read_snapshots(self.settings.data_dir)), lang),
            tab.history: history,
            tab.page_info: page_label(page, pages, total, lang),
            tab.page: page,
        }

    def previous_page(self, lang: Lang, status_filter: str, page: int) -> Outputs:
        return self.refresh_queue(lang, status_filter, max(0, page - 1))

    def next_page(self, lang: Lang, status_filter: str, page: int) -> Outputs:
        # refresh_queue brings a page past the last one back to the last.
        return self.refresh_queue(lang, status_filter, page + 1)

    def history_action(self, lang: Lang, status_filter: str, page: int, event: gr.EventData) -> Outputs:
        """A queue or history row's button: what it did to the preview, then the tab's panels again."""
        preview = self._job_action(lang, event, self.queue.preview, self.queue.preview_job)
        return preview | self.refresh_queue(lang, status_filter, page)

    def _job_action(self, lang: Lang, event: gr.EventData, preview: gr.HTML, previewed: gr.State) -> Outputs:
        """Do what a row's button asks and say how it went in a toast; returns the new content of the
        tab's preview panel and the job it shows, where they change."""
        action, job_id = str(getattr(event, "action", "")), str(getattr(event, "job", ""))
        try:
            if action == "preview":
                job = self.service.get(job_id)
                return {preview: preview_panel(job, lang, self._link(job), self._local_base), previewed: job.id}
            title = t("toast.info", lang)
            if action == "retry":
                self.service.retry(job_id)
                gr.Info(t("job.retried", lang, id=job_id[:8]), title=title)
            elif action == "cancel":
                # A queued job is cancelled at once; a running one stops within seconds.
                cancelled = self.service.cancel(job_id).status is JobStatus.cancelled
                gr.Info(t("job.cancelled" if cancelled else "job.cancelling", lang, id=job_id[:8]), title=title)
            elif action == "delete":
                self.service.delete(job_id)
                gr.Info(t("job.deleted", lang, id=job_id[:8]), title=title)
                # The preview may be showing the video that is now gone.
                return {preview: "", previewed: None}
        except KouboError as error:
            gr.Warning(error_text(error, lang), title=t("error.action_failed", lang))
        return {}

    def restore(self, tab: str | None, job_id: str | None, batch_id: str | None, follow: bool) -> Outputs:
        """What a reloaded page shows, from what the browser kept: the tab, the single job and the
        batch it followed, and their timers. A job or batch deleted since is not followed."""
        job_id = job_id if job_id and self._exists(lambda: self.service.get(job_id)) else None
        batch_id = batch_id if batch_id and self._exists(lambda: self.service.get_batch(batch_id)) else None
        followed = {
            self.single.job: job_id,
            self.batch.batch: batch_id,
            self.single.timer: gr.Timer(active=job_id is not None),
            self.batch.timer: gr.Timer(active=batch_id is not None),
        }
        # Nothing kept: the tab and its polling are left alone (someone may have clicked a tab while
        # the page loaded).
        if tab not in TAB_IDS:
            return followed
        return followed | {self.tabs: gr.Tabs(selected=tab)} | self.polling_for(tab)(follow)

    def polling_for(self, tab: str) -> Callable[[bool], Outputs]:
        """The queue's and the log's timers when `tab` is opened: polling costs database reads."""

        def timers(follow: bool) -> Outputs:
            return {
                self.queue.timer: gr.Timer(active=tab == "queue"),
                self.logs.timer: gr.Timer(active=tab == "logs" and follow),
            }

        return timers

    @staticmethod
    def _exists(read: Callable[[], object]) -> bool:
        try:
            read()
        except KouboError:
            return False
        return True

    def refuse_large_file(self, lang: Lang, event: gr.EventData) -> None:
        """The page stopped a file over the upload limit before sending it; say so as a toast."""
        name = str(getattr(event, "name", ""))
        limit = human_size(self.settings.upload_max_bytes)
        gr.Warning(t("error.too_large", lang, name=name, limit=limit), title=t("error.upload_refused", lang))

    # --- logs ---------------------------------------------------------------------------------------------

    def read_log(self, lang: Lang, lines: int, job_filter: str | None) -> str:
        wanted = (job_filter or "").strip()
        # A filter looks further back, so a job's lines are found among other jobs' lines.
        tail = tail_log(self.settings.log_path, int(lines) * (10 if wanted else 1))
        if wanted:
            tail = [line for line in tail if wanted in line][-int(lines) :]
        return log_panel(tail, lang)


def _options_panel(labels: Labels, settings: Settings) -> OptionWidgets:
    # wav2lip without its checkpoint would queue, run and fail: it is not offered, and the menu says why.
    checkpoint = checkpoint_path(settings)
    engines = [name for name in ENGINES if name != "wav2lip" or checkpoint.is_file()]
    missing = None if "wav2lip" in engines else "option.engine.missing"
    qualities = [("quality.standard", "standard"), ("quality.high", "high")]
    cleanings = [("denoise.off", "off"), ("denoise.mouth", "mouth"), ("denoise.all", "all")]
    with labels.label(gr.Accordion, "options", open=True), gr.Row():
        engine = labels.label(
            gr.Dropdown,
            "option.engine",
            info=missing,
            info_values={"path": checkpoint},
            choices=engines,
            value=settings.engine if settings.engine in engines else engines[0],
            elem_classes=["koubo-engine"],
        )
        expressiveness = labels.label(
            gr.Slider,
            "option.expressiveness",
            info="option.expressiveness.info",
            minimum=EXPRESSIVENESS_MIN,
            maximum=EXPRESSIVENESS_MAX,
            value=settings.expressiveness,
            step=0.1,
        )
        quality = labels.choices(gr.Radio, "option.quality", qualities, info="option.quality.info", value="standard")
        denoise = labels.choices(
            gr.Radio, "option.denoise", cleanings, info="option.denoise.info", value=settings.denoise
        )
    return OptionWidgets(engine, expressiveness, quality, denoise)


def _panel(value: str = "", **kwargs: Any) -> gr.HTML:
    return gr.HTML(value, css_template=PANEL_CSS, js_on_load=None, **kwargs)


def _actions_panel(value: str = "", **kwargs: Any) -> gr.HTML:
    """A panel whose row buttons send the custom "job_action" event (see ACTIONS_JS)."""
    return gr.HTML(value, css_template=PANEL_CSS, js_on_load=ACTIONS_JS, **kwargs)


def _preview_panel(elem_id: str) -> gr.HTML:
    """A panel that shows a job chosen in a table, brought into view when it opens (see ACTIONS_JS)."""
    return gr.HTML("", css_template=PANEL_CSS, js_on_load=ACTIONS_JS, elem_id=elem_id, elem_classes=["koubo-preview"])


def _kept(outputs: Outputs, page: gr.State, browser: gr.BrowserState) -> Outputs:
    """A submit's outputs with the job or batch id, shown in the page, kept in the browser too."""
    return outputs | {browser: outputs[page]}


def gradio_locale_module() -> str | None:
    """The file name of the Gradio front-end module that exports changeLocale (named by a hash that
    changes with each Gradio release), or None if this Gradio has none: then its strings follow the
    browser's language only."""
    assets = Path(gradio_init).parent / "templates" / "frontend" / "assets"
    for path in sorted(assets.glob("core-*.js")):
        if "changeLocale" in path.read_text(encoding="utf-8", errors="replace"):
            return path.name
    log.warning("this Gradio has no changeLocale: its own strings follow the browser's language, not koubo's")
    return None


# --- the page, one builder per part ---------------------------------------------------------------------


@dataclass
class Header:
    title: gr.HTML
    lang: gr.Radio
    saved_lang: gr.BrowserState


def _header(labels: Labels, settings: Settings) -> Header:
    with gr.Row(equal_height=True):
        with gr.Column(scale=4):
            title = gr.HTML(
                "<h1 style='margin: 0'>koubo 口播</h1>",
                js_on_load=SIZE_GUARD_JS + UNPLAYABLE_GUARD_JS + GRADIO_TEXT_JS + RECONNECT_JS + TAB_MEMORY_JS,
                max_bytes=settings.upload_max_bytes,
                tab_ids={t(f"tab.{tab}", lang): tab for tab in TAB_IDS for _, lang in LANGUAGE_CHOICES},
                gradio_text=GRADIO_TEXT_ZH,
            )
            labels.text(gr.Markdown, "app.subtitle")
        with gr.Column(scale=1, min_width=200):
            lang = labels.label(
                gr.Radio, "language", choices=LANGUAGE_CHOICES, value=DEFAULT_LANG, elem_id="koubo-lang"
            )
    # The language someone picked, kept in the browser; unset: the browser's own preference.
    # A fixed secret: the choice is not confidential, and it should survive a server restart.
    saved_lang = gr.BrowserState(None, storage_key="koubo-language", secret="koubo-ui-language")
    return Header(title, lang, saved_lang)


def _upload_hint(labels: Labels, settings: Settings) -> None:
    values = {
        "max_size": human_size(settings.upload_max_bytes),
        "max_minutes": f"{max(settings.max_audio_seconds, settings.max_video_seconds) / 60:.0f}",
    }
    labels.text(gr.Markdown, "input.hint", values=values)


@dataclass
class SingleTab:
    tab: gr.Tab
    audio: gr.Audio
    audio_check: gr.HTML
    video: gr.Video
    video_check: gr.HTML
    options: OptionWidgets
    generate: gr.Button
    cancel: gr.Button
    progress: gr.HTML
    result: gr.HTML
    job: gr.State
    token: gr.Textbox  # the click's token, set in the page
    timer: gr.Timer

    @property
    def poll_outputs(self) -> list[gr.blocks.Block]:
        """What Handlers.poll_single returns, in its order."""
        return [self.progress, self.result, self.timer, self.cancel, self.generate]


def _single_tab(labels: Labels, settings: Settings) -> SingleTab:
    with labels.label(gr.Tab, "tab.single", id="single") as tab:
        if not settings.links_base_url:
            # Said on the first page, not only beside each link handed out (and not above every
            # tab: the log view needs the height).
            def local_note(lang: Lang, base: str = settings.links_base) -> str:
                return message_panel(t("link.local_note", lang, base=base), error=True)

            labels.html(_panel, local_note, elem_id="links-local-note")
        # Each input with koubo's check of its file right under it.
        with gr.Row():
            with gr.Column():
                audio = labels.label(
                    gr.Audio, "input.audio", sources=["upload"], type="filepath", elem_id="single-audio",
                    elem_classes=["koubo-upload"],
                )  # fmt: skip
                audio_check = _panel(elem_id="single-audio-check")
            with gr.Column():
                video = labels.label(
                    gr.Video, "input.video", sources=["upload"], elem_id="single-video", elem_classes=["koubo-upload"],
                    height=UPLOAD_HEIGHT,
                )  # fmt: skip
                video_check = _panel(elem_id="single-video-check")
        _upload_hint(labels, settings)
        options = _options_panel(labels, settings)
        with gr.Row():
            generate = labels.text(gr.Button, "button.generate", variant="primary", elem_id="generate")
            cancel = labels.text(gr.Button, "button.cancel", variant="stop", visible=False, elem_id="cancel")
        progress = _panel(elem_id="single-progress")
        result = _actions_panel(elem_id="single-result")  # its copy-link button
        return SingleTab(
            tab, audio, audio_check, video, video_check, options, generate, cancel, progress, result,
            job=gr.State(None), token=gr.Textbox(visible=False), timer=gr.Timer(JOB_POLL_SECONDS, active=False),
        )  # fmt: skip


@dataclass
class BatchTab:
    tab: gr.Tab
    audios: gr.File
    audios_check: gr.HTML
    videos: gr.File
    videos_check: gr.HTML
    options: OptionWidgets
    generate: gr.Button
    view: gr.HTML
    preview: gr.HTML
    batch: gr.State
    preview_job: gr.State
    token: gr.Textbox
    timer: gr.Timer


def _batch_tab(labels: Labels, settings: Settings) -> BatchTab:
    with labels.label(gr.Tab, "tab.batch", id="batch") as tab:
        labels.text(gr.Markdown, "batch.hint")
        with gr.Row():
            with gr.Column():
                audios = labels.label(
                    gr.File, "input.audios", file_count="multiple", file_types=AUDIO_FILE_TYPES,
                    elem_id="batch-audios", elem_classes=["koubo-upload"],
                )  # fmt: skip
                audios_check = _panel(elem_id="batch-audios-check")
            with gr.Column():
                videos = labels.label(
                    gr.File, "input.videos", file_count="multiple", file_types=VIDEO_FILE_TYPES,
                    elem_id="batch-videos", elem_classes=["koubo-upload"],
                )  # fmt: skip
                videos_check = _panel(elem_id="batch-videos-check")
        _upload_hint(labels, settings)
        options = _options_panel(labels, settings)
        generate = labels.text(gr.Button, "button.generate_batch", variant="primary", elem_id="generate-batch")
        view = _actions_panel(elem_id="batch-panel")
        preview = _preview_panel("batch-preview")  # its copy-link button
        return BatchTab(
            tab, audios, audios_check, videos, videos_check, options, generate, view, preview,
            batch=gr.State(None), preview_job=gr.State(None), token=gr.Textbox(visible=False),
            timer=gr.Timer(JOB_POLL_SECONDS, active=False),
        )  # fmt: skip


@dataclass
class QueueTab:
    tab: gr.Tab
    queue: gr.HTML
    workers: gr.HTML
    status_filter: gr.Radio
    history: gr.HTML
    previous_page: gr.Button
    page_info: gr.HTML
    next_page: gr.Button
    refresh: gr.Button
    preview: gr.HTML
    page: gr.State
    preview_job: gr.State
    timer: gr.Timer

    @property
    def inputs(self) -> list[gr.blocks.Block]:
        """What Handlers.refresh_queue reads (after the language)."""
        return [self.status_filter, self.page]

    @property
    def outputs(self) -> list[gr.blocks.Block]:
        """What Handlers.refresh_queue returns, in its order."""
        return [self.queue, self.workers, self.history, self.page_info, self.page]


def _queue_tab(labels: Labels) -> QueueTab:
    status_options = [(f"status.{status}", status) for status in STATUS_FILTERS]
    with labels.label(gr.Tab, "tab.queue", id="queue") as tab:
        labels.text(gr.Markdown, "queue.title", markdown_prefix="### ")
        queue = _actions_panel(elem_id="queue-table")
        labels.text(gr.Markdown, "workers.title", markdown_prefix="### ")
        workers = _panel(elem_id="workers-panel")
        labels.text(gr.Markdown, "history.title", markdown_prefix="### ")
        status_filter = labels.choices(gr.Radio, "history.filter", status_options, value="all", elem_id="status-filter")
        history = _actions_panel(elem_id="history-table")
        with gr.Row(equal_height=True):
            previous_page = labels.text(gr.Button, "button.previous", size="sm", scale=0, min_width=100)
            page_info = _panel(elem_id="page-info")
            next_page = labels.text(gr.Button, "button.next", size="sm", scale=0, min_width=100)
            refresh = labels.text(gr.Button, "button.refresh", size="sm", scale=0, min_width=100)
        preview = _preview_panel("history-preview")  # its copy-link button
        return QueueTab(
            tab, queue, workers, status_filter, history, previous_page, page_info, next_page, refresh, preview,
            page=gr.State(0), preview_job=gr.State(None), timer=gr.Timer(QUEUE_POLL_SECONDS, active=False),
        )  # fmt: skip


@dataclass
class LogsTab:
    tab: gr.Tab
    lines: gr.Dropdown
    filter: gr.Textbox
    follow: gr.Checkbox
    view: gr.HTML
    timer: gr.Timer

    @property
    def inputs(self) -> list[gr.blocks.Block]:
        """What Handlers.read_log reads (after the language)."""
        return [self.lines, self.filter]


def _logs_tab(labels: Labels, settings: Settings) -> LogsTab:
    with labels.label(gr.Tab, "tab.logs", id="logs") as tab:
        with gr.Row(equal_height=True):
            lines = labels.label(gr.Dropdown, "logs.lines", choices=LOG_LINE_CHOICES, value=200, scale=1)
            job_filter = labels.label(gr.Textbox, "logs.filter", max_lines=1, scale=3)
            follow = labels.label(gr.Checkbox, "logs.follow", value=True, scale=1)
        labels.text(gr.Markdown, "logs.path", values={"path": settings.log_path})
        view = gr.HTML("", css_template=PANEL_CSS, js_on_load=LOG_FOLLOW_JS, elem_id="log-view")
        return LogsTab(tab, lines, job_filter, follow, view, gr.Timer(LOG_POLL_SECONDS, active=False))


def _wire_single(single: SingleTab, handlers: Handlers, lang: gr.Radio, saved_job: gr.BrowserState) -> None:
    # The job is kept in the browser by the same answer that shows it: a reload right after still has it.
    single.generate.click(
        lambda token, *values: _kept(handlers.submit_single(*values, token), single.job, saved_job),
        [single.token, lang, single.audio, single.video, *single.options.inputs],
        [single.job, saved_job, *single.poll_outputs],
        js=CLICK_TOKEN_JS % "single",
        concurrency_limit=None,
        api_name="submit_single",
    )
    single.timer.tick(
        handlers.poll_single,
        [lang, single.job],
        single.poll_outputs,
        show_progress="hidden",
        concurrency_limit=None,
    )
    single.cancel.click(handlers.cancel_single, [lang, single.job], [single.progress, single.cancel])


def _wire_batch(batch: BatchTab, handlers: Handlers, lang: gr.Radio, saved_batch: gr.BrowserState) -> None:
    # As in the single tab, the batch is kept in the browser by the answer that shows it.
    batch.generate.click(
        lambda token, *values: _kept(handlers.submit_batch(*values, token), batch.batch, saved_batch),
        [batch.token, lang, batch.audios, batch.videos, *batch.options.inputs],
        [batch.batch, saved_batch, batch.view, batch.preview, batch.timer],
        js=CLICK_TOKEN_JS % "batch",
        concurrency_limit=None,
        api_name="submit_batch",
    )
    batch.timer.tick(
        handlers.poll_batch,
        [lang, batch.batch],
        [batch.view, batch.timer],
        show_progress="hidden",
        concurrency_limit=None,
    )
    batch.view.job_action(
        handlers.batch_action,
        [lang, batch.batch],
        [batch.view, batch.preview, batch.preview_job, batch.timer],
        show_progress="hidden",
    )


def _wire_queue(queue: QueueTab, handlers: Handlers, lang: gr.Radio) -> None:
    """Its events; its tables are polled only while the tab is open (see Handlers.polling_for)."""
    queue_inputs, queue_outputs = [lang, *queue.inputs], queue.outputs
    history_action_outputs = [queue.preview, queue.preview_job, *queue_outputs]
    for table in (queue.queue, queue.history):
        table.job_action(handlers.history_action, queue_inputs, history_action_outputs, show_progress="hidden")
    queue.timer.tick(
        handlers.refresh_queue, queue_inputs, queue_outputs, show_progress="hidden", concurrency_limit=None
    )
    queue.refresh.click(handlers.refresh_queue, queue_inputs, queue_outputs, show_progress="hidden")
    queue.status_filter.change(lambda: 0, None, [queue.page], show_progress="hidden").then(
        handlers.refresh_queue, queue_inputs, queue_outputs, show_progress="hidden"
    )
    queue.previous_page.click(handlers.previous_page, queue_inputs, queue_outputs, show_progress="hidden")
    queue.next_page.click(handlers.next_page, queue_inputs, queue_outputs, show_progress="hidden")


def _wire_logs(logs: LogsTab, handlers: Handlers, lang: gr.Radio) -> None:
    logs.timer.tick(
        handlers.read_log, [lang, *logs.inputs], [logs.view], show_progress="hidden", concurrency_limit=None
    )
    for control in (logs.lines, logs.filter):
        control.change(handlers.read_log, [lang, *logs.inputs], [logs.view], show_progress="hidden")
    logs.follow.change(lambda follow: gr.Timer(active=follow), [logs.follow], [logs.timer])


def build_ui(service: JobService, settings: Settings) -> gr.Blocks:
    handlers = Handlers(service, settings, LinkMaker(settings))
    labels = Labels()

    with gr.Blocks(title="koubo 口播", analytics_enabled=False) as blocks:
        header = _header(labels, settings)
        lang = header.lang
        # What the page was showing, so a reload (or Gradio's own reload after a server restart)
        # comes back to the same tab, following the same job and batch.
        # The tab is kept by the page itself as a person clicks it (TAB_MEMORY_JS): a reload a
        # moment later must not race a round trip to the server.
        saved_tab = gr.Textbox("single", visible=False)
        saved_job = gr.BrowserState(None, storage_key="koubo-job", secret="koubo-ui-following")
        saved_batch = gr.BrowserState(None, storage_key="koubo-batch", secret="koubo-ui-following")

        with gr.Tabs(selected="single", elem_id="koubo-tabs") as tabs:
            single = handlers.single = _single_tab(labels, settings)
            batch = handlers.batch = _batch_tab(labels, settings)
            queue = handlers.queue = _queue_tab(labels)
            logs = handlers.logs = _logs_tab(labels, settings)
        handlers.tabs = tabs

        # --- events: language ---
        def initial_language(saved: str | None, request: gr.Request) -> Lang:
            if saved:
                return choose_language(saved)
            return language_from_header(request.headers.get("accept-language"))

        queue_inputs = [lang, *queue.inputs]
        queue_outputs = queue.outputs
        locale_module = gradio_locale_module()
        gradio_locale_js = GRADIO_LOCALE_JS % locale_module if locale_module else None
        # Gradio's own strings switch with koubo's, also when the page starts in the default language.
        blocks.load(initial_language, [header.saved_lang], [lang], show_progress="hidden").then(
            None, [lang], None, js=gradio_locale_js
        )
        lang.input(lambda choice: choice, [lang], [header.saved_lang], show_progress="hidden")
        lang.change(None, [lang], None, js=gradio_locale_js)
        (
            lang.change(labels.updates, [lang], labels.components, show_progress="hidden")
            .then(handlers.render_single, [lang, single.job], [single.progress, single.result], show_progress="hidden")
            .then(handlers.poll_batch, [lang, batch.batch], [batch.view, batch.timer], show_progress="hidden")
            .then(handlers.refresh_queue, queue_inputs, queue_outputs, show_progress="hidden")
            .then(handlers.render_preview, [lang, batch.preview_job], [batch.preview], show_progress="hidden")
            .then(handlers.render_preview, [lang, queue.preview_job], [queue.preview], show_progress="hidden")
        )

        # --- events: each file is checked as it arrives, and its check shown beside its input ---
        for upload, kind, check_view in (
            (single.audio, "audio", single.audio_check),
            (single.video, "video", single.video_check),
            (batch.audios, "audio", batch.audios_check),
            (batch.videos, "video", batch.videos_check),
        ):
            checks = gr.State([])
            upload.change(
                partial(handlers.check_uploads, kind=kind), [lang, upload], [check_view, checks], show_progress="hidden"
            )
            lang.change(handlers.render_checks, [lang, checks], [check_view], show_progress="hidden")

        header.title.file_too_large(handlers.refuse_large_file, [lang], None, show_progress="hidden")

        _wire_single(single, handlers, lang, saved_job)
        _wire_batch(batch, handlers, lang, saved_batch)
        _wire_queue(queue, handlers, lang)
        _wire_logs(logs, handlers, lang)

        # --- tabs: only the open tab's table and log are polled ---
        for tab, name in ((single.tab, "single"), (batch.tab, "batch"), (queue.tab, "queue"), (logs.tab, "logs")):
            tab.select(handlers.polling_for(name), [logs.follow], [queue.timer, logs.timer], show_progress="hidden")

        # --- a reload: back to the tab, the job and the batch the page was showing ---
        (
            blocks.load(
                handlers.restore,
                [saved_tab, saved_job, saved_batch, logs.follow],
                [tabs, single.job, batch.batch, single.timer, batch.timer, queue.timer, logs.timer],
                js=TAB_RECALL_JS,
                show_progress="hidden",
            )
            .then(handlers.poll_single, [lang, single.job], single.poll_outputs, show_progress="hidden")
            .then(handlers.poll_batch, [lang, batch.batch], [batch.view, batch.timer], show_progress="hidden")
            .then(handlers.refresh_queue, queue_inputs, queue_outputs, show_progress="hidden")
            .then(handlers.read_log, [lang, *logs.inputs], [logs.view], show_progress="hidden")
        )
        queue.tab.select(handlers.refresh_queue, queue_inputs, queue_outputs, show_progress="hidden")
        logs.tab.select(handlers.read_log, [lang, *logs.inputs], [logs.view], show_progress="hidden")

    return blocks
