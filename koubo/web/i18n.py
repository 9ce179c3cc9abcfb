"""Every string the browser UI shows, in Chinese and English, and how a language is chosen.

One table, so a missing translation is a KeyError in the tests rather than a half-English page.
Errors from the core carry their own two messages (KouboError.en / .zh); `error_text` picks one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from koubo.errors import KouboError
from koubo.stages import Stage

Lang = Literal["zh", "en"]
DEFAULT_LANG: Lang = "zh"
# Shown in the language switch in their own language, whichever language the page is in.
LANGUAGE_CHOICES: list[tuple[str, Lang]] = [("中文", "zh"), ("English", "en")]

# Each pipeline stage's name as a job shows it; the "stage.<name>" keys of TEXT come from here.
STAGE_TEXT: dict[Stage, tuple[str, str]] = {
    Stage.starting: ("启动中：加载模型", "Starting: loading models"),
    Stage.features: ("分析语音", "Analysing speech"),
    Stage.decode: ("读取模板", "Reading template"),
    Stage.face: ("跟踪人脸", "Tracking the face"),
    Stage.render: ("合成画面", "Rendering"),
    Stage.check: ("检查口型同步", "Checking lip sync"),
    Stage.done: ("完成", "Done"),
}

# key -> (Chinese, English). Placeholders use str.format names.
TEXT: dict[str, tuple[str, str]] = {
    # Page
    "app.subtitle": (
        "上传一段语音和一段人物模板视频，生成口型同步的口播视频。全部在本机完成。",
        (
            "Upload a speech recording and a template video of a person; koubo renders an MP4 in which "
            "the person says the speech. Everything stays on this machine."
        ),
    ),
    "language": ("语言 / Language", "Language / 语言"),
    "tab.single": ("单个生成", "Single"),
    "tab.batch": ("批量生成", "Batch"),
    "tab.queue": ("队列与历史", "Queue & history"),
    "tab.logs": ("日志", "Logs"),
    # Inputs and options
    "input.audio": ("语音（音频文件）", "Speech (audio file)"),
    "input.video": ("人物模板视频", "Template video of a person"),
    "input.audios": ("语音文件（可多个）", "Speech files (one or more)"),
    "input.videos": ("模板视频（可多个）", "Template videos (one or more)"),
    "input.hint": (
        (
            "语音：wav、mp3、m4a、aac、flac、ogg、opus、wma、amr 或带声音的视频；模板：mp4、mov、avi、mkv、webm、flv、ts、"
            "rmvb 等，需拍到正脸。每个文件最大 {max_size}，时长不超过 {max_minutes} 分钟。文件在服务器上按内容再次检查。"
        ),
        (
            "Speech: wav, mp3, m4a, aac, flac, ogg, opus, wma, amr or a video with sound; template: mp4, mov, avi, "
            "mkv, webm, flv, ts, rmvb… showing a face. Each file up to {max_size} and {max_minutes} minutes. The "
            "server checks every file again by its content."
        ),
    ),
    "batch.hint": (
        "一段语音 × 多个模板视频，或多段语音 × 一个模板视频。每个组合生成一个视频；共享的一方只分析一次。",
        (
            "One speech × many templates, or many speeches × one template. Each pair becomes one video; the shared "
            "side is analysed once."
        ),
    ),
    "upload.ok": ("{name}：可以使用（{facts}）", "{name}: usable ({facts})"),
    "options": ("生成选项", "Options"),
    "option.engine": ("引擎", "Engine"),
    "option.expressiveness": ("表现力（口型幅度）", "Expressiveness (mouth movement)"),
    "option.expressiveness.info": ("0 = 嘴不动，1 = 自然，2 = 夸张", "0 = still, 1 = natural, 2 = exaggerated"),
    "option.quality": ("输出画质", "Output quality"),
    "option.quality.info": ("高画质更清晰，文件更大", "High is sharper and makes larger files"),
    "quality.standard": ("标准", "Standard"),
    "quality.high": ("高", "High"),
    "option.denoise": ("降噪", "Noise reduction"),
    "option.denoise.info": (
        "去除风扇、街道、电流声等背景噪声；可只用于口型，或同时用于输出的声音",
        "Removes fan, street and mains-hum noise: for the mouth only, or for the output's sound too",
    ),
    "denoise.off": ("关闭", "Off"),
    "denoise.mouth": ("仅口型", "Mouth only"),
    "denoise.all": ("口型和声音", "Mouth and sound"),
    # Buttons
    "button.generate": ("开始生成", "Generate"),
    "button.generate_batch": ("批量生成", "Generate all"),
    "button.cancel": ("取消任务", "Cancel job"),
    "button.refresh": ("刷新", "Refresh"),
    "button.previous": ("上一页", "Previous"),
    "button.next": ("下一页", "Next"),
    # Job state
    "status.queued": ("排队中", "Queued"),
    "status.running": ("生成中", "Running"),
    "status.done": ("完成", "Done"),
    "status.failed": ("失败", "Failed"),
    "status.cancelled": ("已取消", "Cancelled"),
    "status.timed_out": ("超时", "Timed out"),
    "status.expired": ("已过期", "Expired"),
    "status.all": ("全部", "All"),
    "job.position": ("排队第 {position} 位", "Position {position} in the queue"),
    "job.elapsed": ("已用时 {elapsed}", "{elapsed} elapsed"),
    "job.took": ("用时 {elapsed}", "took {elapsed}"),
    "job.id": ("任务 {id}", "Job {id}"),
    "job.attempt": ("第 {attempt} 次尝试", "attempt {attempt}"),
    "job.cancelled": ("任务 {id} 已取消。", "Job {id} was cancelled."),
    "job.retried": ("任务 {id} 已重新排队。", "Job {id} is queued again."),
    "job.deleted": ("任务 {id} 已删除。", "Job {id} was deleted."),
    "job.cancelling": ("任务 {id} 已请求取消。", "Job {id}: cancel requested."),
    "job.stopping": ("正在取消…", "Cancelling…"),
    "result.download": ("下载视频", "Download"),
    "report.sync": (
        "口型同步：偏移 {offset} 帧，置信度 {confidence}，{coverage} 的画面检测到人脸",
        "Lip sync: offset {offset} frames, confidence {confidence}, face in {coverage} of frames",
    ),
    "sync.title": ("口型同步图", "Lip-sync picture"),
    "sync.mouth": ("嘴的张开度（从输出视频测得）", "Mouth opening (measured on the output)"),
    "sync.loudness": ("语音响度", "Speech loudness"),
    "sync.silence": ("静音", "Silence"),
    "report.sync_unknown": (
        "口型同步：无法测量（画面中人脸太少）",
        "Lip sync: not measurable (too few frames with a face)",
    ),
    # Tables
    "col.created": ("提交时间", "Submitted"),
    "col.job": ("任务 · 引擎", "Job · engine"),
    "col.template": ("模板", "Template"),
    "col.audio": ("语音", "Speech"),
    "col.status": ("状态", "Status"),
    "col.progress": ("进度", "Progress"),
    "col.position": ("队列位置", "Position"),
    "col.worker": ("工作节点", "Worker"),
    "col.output": ("输出", "Output"),
    "col.actions": ("操作", "Actions"),
    "action.preview": ("预览", "Preview"),
    "action.details": ("详情", "Details"),
    "action.download": ("下载", "Download"),
    "action.copy": ("复制链接", "Copy link"),
    "action.copied": ("已复制", "Copied"),
    "action.retry": ("重试", "Retry"),
    "action.cancel": ("取消", "Cancel"),
    "action.delete": ("删除", "Delete"),
    "action.delete_confirm": ("删除这个任务和它的视频？", "Delete this job and its video?"),
    "action.cancel_confirm": (
        "取消这个正在生成的任务？已完成的部分会丢弃。",
        "Cancel this running job? The work done so far is discarded.",
    ),
    "queue.title": ("当前队列", "Queue"),
    "queue.summary": (
        "排队 {queued} · 生成中 {running} · 已完成 {done} · 失败 {failed} · 同时生成 {workers} 个",
        "{queued} queued · {running} running · {done} done · {failed} failed · {workers} at a time",
    ),
    "queue.empty": ("队列为空，没有等待或正在生成的任务。", "The queue is empty: nothing waiting or running."),
    "workers.title": ("工作节点", "Workers"),
    "egress.none": ("直链服务器没有在运行（或尚未报告流量）。", "No link server is running (or none has reported yet)."),
    "egress.summary": (
        "直链出口：当前 {rate} Mbit/s，{active} 个下载进行中，累计发送 {sent}，共 {downloads} 次下载",
        "Link egress: {rate} Mbit/s now, {active} downloads in progress, {sent} sent, {downloads} downloads",
    ),
    "egress.link": ("最常下载的视频", "Busiest links"),
    "egress.job": ("任务", "Job"),
    "egress.downloads": ("下载次数", "Downloads"),
    "workers.empty": ("还没有工作节点报到。", "No worker has reported in yet."),
    "workers.state": ("状态", "State"),
    "workers.alive": ("在线", "Alive"),
    "workers.gone": ("离线", "Gone"),
    "workers.busy": ("运行中 / 并发", "Running / at a time"),
    "workers.device": ("设备", "Device"),
    "workers.engines": ("引擎", "Engines"),
    "workers.heartbeat": ("最近心跳", "Last heartbeat"),
    "history.title": ("历史记录", "History"),
    "history.filter": ("按状态筛选", "Status"),
    "history.empty": ("没有任务。", "No jobs."),
    "history.page": ("第 {page} / {pages} 页 · 共 {total} 个任务", "Page {page} of {pages} · {total} in total"),
    "preview.title": ("预览：{name}", "Preview: {name}"),
    "preview.not_done": ("这个任务还没有可播放的视频（{status}）。", "This job has no video to play yet ({status})."),
    "detail.id": ("任务 ID", "Job id"),
    "detail.params": ("参数", "Settings"),
    "detail.error": ("错误", "Error"),
    "batch.summary": ("批次 {id}：{total} 个任务", "Batch {id}: {total} jobs"),
    "batch.zip": ("下载全部（ZIP）", "Download all (ZIP)"),
    "link.title": (
        "直链：可转发给任何人，手机扫码即可下载",
        "Direct link: share it with anyone, or scan it on a phone",
    ),
    "link.bucket_title": (
        "对象存储直链：可转发给任何人，由存储桶直接提供下载",
        "Object storage link: share it with anyone; the bucket serves the download",
    ),
    "link.zip_title": ("整批 ZIP 直链", "Direct link to the whole batch as a ZIP"),
    "link.local_title": ("直链（仅限本机）", "Direct link (this machine only)"),
    "link.local_only": (
        (
            "未设置 links_base_url，这个链接指向 {base}，只能在运行 koubo 的这台电脑上打开，转发给别人或用手机扫码都打不开。"
            "请在 koubo.toml 中设置 links_base_url（或环境变量 KOUBO_LINKS_BASE_URL）为别人能访问的地址，例如 "
            "http://192.168.1.20:7861。"
        ),
        (
            "links_base_url is not set, so this link points at {base} and only works on the machine running koubo; "
            "forwarded or scanned with a phone it will not open. Set links_base_url in koubo.toml (or "
            "KOUBO_LINKS_BASE_URL) to an address others can reach, for example http://192.168.1.20:7861."
        ),
    ),
    "option.engine.missing": (
        "wav2lip 不可用：没有找到模型文件 {path}。把 wav2lip_gan.pth 放到那里后重启即可使用。",
        "wav2lip is not available: no checkpoint at {path}. Put wav2lip_gan.pth there and restart to use it.",
    ),
    "link.local_note": (
        (
            "注意：未设置 links_base_url，直链和二维码指向 {base}，只能在运行 koubo 的这台电脑上打开。"
            "要转发给别人或用手机扫码，请在 koubo.toml 中设置 links_base_url（或环境变量 KOUBO_LINKS_BASE_URL）"
            "为别人能访问的地址，然后重启 koubo。"
        ),
        (
            "Note: links_base_url is not set, so direct links and QR codes point at {base} and only open on the "
            "machine running koubo. To forward them or scan them with a phone, set links_base_url in koubo.toml "
            "(or KOUBO_LINKS_BASE_URL) to an address others can reach, then restart koubo."
        ),
    ),
    "link.copy": ("复制直链", "Copy link"),
    "link.expires": ("有效期至 {when}", "Valid until {when}"),
    "link.never": ("永久有效", "Never expires"),
    # Logs
    "logs.lines": ("显示行数", "Lines"),
    "logs.filter": ("按任务 ID 筛选", "Filter by job id"),
    "logs.follow": ("自动刷新", "Follow"),
    "logs.empty": ("日志为空。", "The log is empty."),
    "logs.path": ("日志文件：{path}", "Log file: {path}"),
    # Messages
    "error.need_audio": ("请先上传语音文件。", "Please upload a speech recording first."),
    "error.need_video": ("请先上传模板视频。", "Please upload a template video first."),
    "error.batch_shape": (
        "请上传一段语音和多个模板视频，或多段语音和一个模板视频。",
        "Upload one speech and several templates, or several speeches and one template.",
    ),
    "error.upload_refused": ("无法上传", "Cannot upload"),
    "toast.info": ("提示", "Notice"),
    "error.too_large": (
        "文件 {name} 超过允许的大小（{limit}）。",
        "“{name}” is larger than the allowed {limit}.",
    ),
    "error.action_failed": ("操作未完成", "Not done"),
    **{f"stage.{stage}": text for stage, text in STAGE_TEXT.items()},
}

STATUS_FILTERS: tuple[str, ...] = ("all", "queued", "running", "done", "failed", "cancelled", "timed_out", "expired")


def t(key: str, lang: Lang, **values: object) -> str:
    zh, en = TEXT[key]
    text = zh if lang == "zh" else en
    return text.format(**values) if values else text


def choose_language(value: object) -> Lang:
    """A language the UI has, from a stored choice or a browser tag ("zh-CN", "en-US", ...)."""
    tag = str(value or "").strip().lower()
    if tag.startswith("zh"):
        return "zh"
    if tag.startswith("en"):
        return "en"
    return DEFAULT_LANG


def language_from_header(accept_language: str | None) -> Lang:
    """The first of zh/en in the browser's Accept-Language preference order (q-values honoured).

    A browser that asks for neither (de-DE, ja) gets the default, Chinese: koubo's home audience.
    """
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, number = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(number)
                except ValueError:
                    quality = 0.0
        ranked.append((-quality, index, tag.strip().lower()))
    for _, _, tag in sorted(ranked):
        if tag.startswith(("zh", "en")):
            return choose_language(tag)
    return DEFAULT_LANG


def status_text(status: str, lang: Lang) -> str:
    key = f"status.{status}"
    return t(key, lang) if key in TEXT else status


def stage_text(stage: str | None, lang: Lang) -> str:
    if not stage:
        return ""
    key = f"stage.{stage}"
    return t(key, lang) if key in TEXT else stage


def error_text(error: KouboError | Mapping[str, str] | None, lang: Lang) -> str:
    """A KouboError or a job's recorded error dict ({"code", "message_en", "message_zh"}) in `lang`."""
    if error is None:
        return ""
    if isinstance(error, KouboError):
        return error.zh if lang == "zh" else error.en
    text = error.get("message_zh" if lang == "zh" else "message_en") or error.get("message_en") or ""
    return text or str(error.get("code", ""))
