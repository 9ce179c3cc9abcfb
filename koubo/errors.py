"""koubo's error types and the one table of error codes, each with its HTTP status.

Each error carries a stable code and a message in English and Chinese. A function that can fail
on user input raises one of these; the CLI prints it on one line, a job records it, the web app
and the link server answer it as JSON with the status its code has here.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Every code koubo's errors carry, and the HTTP status both servers answer it with.

    API clients switch on the value (stable: never rename one). A code without a status of its own
    is a 400: the request (its file, its parameters) is what has to change. Job outcomes (timed_out,
    worker_crashed...) are recorded on the job and seldom answer a request; they keep the 400.
    """

    status: int

    def __new__(cls, code: str, status: int = 400) -> ErrorCode:
        member = str.__new__(cls, code)
        member._value_ = code
        member.status = status
        return member

    # Input files that cannot be used.
    NOT_MEDIA = "not_media"
    NO_AUDIO = "no_audio"
    NO_VIDEO = "no_video"
    EMPTY = "empty"
    TOO_LONG = "too_long"
    UNDECODABLE = "undecodable"
    TRUNCATED = "truncated"
    FRAME_TOO_LARGE = "frame_too_large"
    TOO_MANY_PIXELS = "too_many_pixels"
    NO_FACE = "no_face"
    WRONG_KIND = "wrong_kind"
    NOT_AN_UPLOAD = "not_an_upload"
    NOT_A_FILE = "not_a_file"  # a folder or a device named where a file is meant (the command line)
    TOO_LARGE = "too_large", 413

    # Requests: their shape, what they name, the state of what they name.
    INVALID_REQUEST = "invalid_request", 422
    INVALID_PARAMS = "invalid_params", 422
    INVALID_PARAMETER = "invalid_parameter"  # a link server's query parameter (?page=)
    REQUEST_TIMEOUT = "request_timeout", 408
    NOT_FOUND = "not_found", 404
    # A conflict with the job's current state, not a malformed request (RFC 9110 §15.5.10): the job
    # exists, and retrying it later or waiting for its video resolves it.
    NOT_RETRYABLE = "not_retryable", 409
    NO_OUTPUT = "no_output", 409
    # The job is kept in the history, its video deleted by retention for good.
    OUTPUT_EXPIRED = "output_expired", 410
    DISK_FULL = "disk_full", 507
    TOO_MANY_ATTEMPTS = "too_many_attempts", 429
    # Errors that are only an HTTP status (HTTP_STATUS_ERRORS below).
    UNAUTHORIZED = "unauthorized", 401
    METHOD_NOT_ALLOWED = "method_not_allowed", 405
    INTERNAL_ERROR = "internal_error", 500
    HTTP_ERROR = "http_error"  # any other status a framework answers; sent with that status

    # Engines.
    UNKNOWN_ENGINE = "unknown_engine"
    ENGINE_UNAVAILABLE = "engine_unavailable"
    CHECKPOINT_MISSING = "checkpoint_missing"
    CHECKPOINT_INVALID = "checkpoint_invalid"
    OUT_OF_MEMORY = "out_of_memory"
    NO_CUDA = "no_cuda"

    # How a job ended when it did not finish.
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    WORKER_CRASHED = "worker_crashed"
    WORKER_LOST = "worker_lost"
    INTERNAL = "internal"

    # Direct links and the link server.
    LINK_INVALID = "link_invalid"
    LINK_TAMPERED = "link_tampered", 403
    LINK_EXPIRED = "link_expired", 410
    LINK_EXHAUSTED = "link_exhausted", 410
    LINK_NAME_INVALID = "link_name_invalid"
    LINK_LIFETIME_INVALID = "link_lifetime_invalid"
    LINK_TOO_LONG = "link_too_long"
    TOO_MANY_DOWNLOADS = "too_many_downloads", 429
    LISTING_NEEDS_AUTH = "listing_needs_auth"
    UNKNOWN_KEY = "unknown_key"
    LAST_KEY = "last_key"

    # Configuration and the service's own processes.
    BAD_CONFIG = "bad_config"
    AUTH_CONFIG = "auth_config"
    # Object storage is configured wrongly: the server's fault, not the request's.
    STORAGE_CONFIG = "storage_config", 503
    STORAGE_MISMATCH = "storage_mismatch"
    WORKER_EXITED = "worker_exited"
    LINKS_EXITED = "links_exited"


class KouboError(Exception):
    """Base error: `code` is stable (API clients switch on it), `en`/`zh` are for people."""

    def __init__(self, code: ErrorCode, en: str, zh: str) -> None:
        super().__init__(f"{en} / {zh}")
        # A plain str, as jobs store it and JSON carries it; an unknown code fails here, at once.
        self.code: str = ErrorCode(code).value
        self.en = en
        self.zh = zh

    @property
    def status(self) -> int:
        """The HTTP status this error is answered with (ErrorCode's table)."""
        return ErrorCode(self.code).status

    def message(self, lang: str = "en") -> str:
        return self.zh if lang.lower().startswith("zh") else self.en

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message_en": self.en, "message_zh": self.zh}


class MediaError(KouboError):
    """An input file that cannot be used: not media, wrong streams, too long, damaged."""


class FaceError(KouboError):
    """A template in which no usable face can be found."""


class EngineError(KouboError):
    """An engine that cannot run: missing or malformed checkpoint, unknown engine name."""


class Cancelled(KouboError):
    """Work stopped because someone asked for it; not a failure of the input."""

    def __init__(self) -> None:
        super().__init__(ErrorCode.CANCELLED, "The job was cancelled.", "任务已取消。")


# Errors that are only an HTTP status (unknown path, wrong method, missing credentials), as
# (code, en, zh): the web app and the link server answer them alike.
HTTP_STATUS_ERRORS: dict[int, tuple[ErrorCode, str, str]] = {
    401: (ErrorCode.UNAUTHORIZED, "Authentication required.", "需要登录。"),
    404: (ErrorCode.NOT_FOUND, "Not found.", "未找到。"),
    405: (ErrorCode.METHOD_NOT_ALLOWED, "Method not allowed.", "不支持该请求方法。"),
    500: (ErrorCode.INTERNAL_ERROR, "Internal server error; the log has the details.", "服务器内部错误，详情见日志。"),
}


def _describe(name: str) -> str:
    return f"“{name}”" if name else "the file"


def not_media(name: str) -> MediaError:
    return MediaError(
        ErrorCode.NOT_MEDIA,
        f"{_describe(name)} is not an audio or video file that koubo can read.",
        f"文件 {name} 不是可识别的音频或视频文件。",
    )


def no_audio_stream(name: str) -> MediaError:
    return MediaError(
        ErrorCode.NO_AUDIO,
        f"{_describe(name)} contains no audio track; please upload a speech recording.",
        f"文件 {name} 中没有音频轨道，请上传语音文件。",
    )


def no_video_stream(name: str) -> MediaError:
    return MediaError(
        ErrorCode.NO_VIDEO,
        f"{_describe(name)} contains no video track; please upload a template video.",
        f"文件 {name} 中没有视频画面，请上传模板视频。",
    )


def empty_media(name: str) -> MediaError:
    return MediaError(
        ErrorCode.EMPTY,
        f"{_describe(name)} is empty (zero length).",
        f"文件 {name} 为空（时长为零）。",
    )


def too_long(name: str, seconds: float, limit: float) -> MediaError:
    return MediaError(
        ErrorCode.TOO_LONG,
        f"{_describe(name)} lasts {seconds:.1f} s, longer than the allowed {limit:.0f} s.",
        f"文件 {name} 时长 {seconds:.1f} 秒，超过允许的 {limit:.0f} 秒。",
    )


def undecodable(name: str, codec: str) -> MediaError:
    return MediaError(
        ErrorCode.UNDECODABLE,
        f"{_describe(name)} uses a codec that cannot be decoded ({codec}).",
        f"文件 {name} 的编码格式（{codec}）无法解码。",
    )


def truncated(name: str) -> MediaError:
    return MediaError(
        ErrorCode.TRUNCATED,
        f"{_describe(name)} is damaged or incomplete (truncated); please upload it again.",
        f"文件 {name} 已损坏或不完整（被截断），请重新上传。",
    )


def no_face(name: str) -> FaceError:
    return FaceError(
        ErrorCode.NO_FACE,
        f"No face was found in {_describe(name)}; the template must show a person facing the camera.",
        f"模板视频 {name} 中未检测到人脸，请使用正面人像视频。",
    )


# --- paths named on the command line --------------------------------------------------------------------


def no_such_file(path: str) -> KouboError:
    return KouboError(ErrorCode.NOT_FOUND, f"There is no file {_describe(path)}.", f"文件 {path} 不存在。")


def not_a_file(path: str) -> KouboError:
    return KouboError(
        ErrorCode.NOT_A_FILE,
        f"{_describe(path)} is a folder or a device, not a file.",
        f"{path} 是文件夹或设备，不是文件。",
    )


def output_is_folder(path: str, example: str) -> KouboError:
    return KouboError(
        ErrorCode.NOT_A_FILE,
        f"The output {_describe(path)} is a folder; name the video in it, for example {example}.",
        f"输出 {path} 是文件夹，请写明视频的文件名，例如 {example}。",
    )


def output_folder_is_file(path: str) -> KouboError:
    return KouboError(
        ErrorCode.NOT_A_FILE,
        f"{_describe(path)} is a file, so no output can be written in it; name a folder.",
        f"{path} 是文件，输出无法写入其中，请指定文件夹。",
    )


# --- jobs and the queue ------------------------------------------------------------------------------


class NotFound(KouboError):
    """An id (job, batch, asset) that does not exist, or no longer does."""


class JobNotFound(NotFound):
    def __init__(self, job_id: str) -> None:
        super().__init__(ErrorCode.NOT_FOUND, f"There is no job {job_id}.", f"任务 {job_id} 不存在。")


def asset_not_found(asset_id: str) -> NotFound:
    return NotFound(ErrorCode.NOT_FOUND, f"There is no uploaded file {asset_id}.", f"上传的文件 {asset_id} 不存在。")


def batch_not_found(batch_id: str) -> NotFound:
    return NotFound(ErrorCode.NOT_FOUND, f"There is no batch {batch_id}.", f"批量任务 {batch_id} 不存在。")


def invalid_params(en: str, zh: str) -> KouboError:
    return KouboError(ErrorCode.INVALID_PARAMS, f"Invalid request: {en}", f"请求参数无效：{zh}")


# The batch rule (koubo.options.batch_pairs) in words; the API's validation message says the same.
BATCH_SHAPE = (
    "A batch is one audio with many videos, or many audios with one video.",
    "批量任务须为一个音频配多个视频，或多个音频配一个视频。",
)


def batch_shape(audios: int, videos: int) -> KouboError:
    """A batch of `audios` × `videos` files that is not 1 × N or N × 1."""
    if not audios or not videos:
        return invalid_params("a batch needs at least one audio and one video", "批量任务至少需要一个音频和一个视频")
    return invalid_params(*BATCH_SHAPE)


def invalid_request(en: str, zh: str) -> KouboError:
    """A request without the shape the endpoint expects; `en` and `zh` are whole sentences."""
    return KouboError(ErrorCode.INVALID_REQUEST, f"Invalid request. {en}", f"请求无效。{zh}")


def wrong_asset_kind(name: str, expected: str) -> KouboError:
    en_kind, zh_kind = ("an audio file", "音频") if expected == "audio" else ("a template video", "模板视频")
    return KouboError(
        ErrorCode.WRONG_KIND,
        f"{_describe(name)} was uploaded as another kind of file; {en_kind} is needed here.",
        f"文件 {name} 的上传类型不对，此处需要{zh_kind}。",
    )


def too_large(name: str, size: int, limit: int) -> MediaError:
    mib, limit_mib = size / 2**20, limit / 2**20
    return MediaError(
        ErrorCode.TOO_LARGE,
        f"{_describe(name)} is {mib:.0f} MiB, larger than the allowed {limit_mib:.0f} MiB.",
        f"文件 {name} 大小为 {mib:.0f} MiB，超过允许的 {limit_mib:.0f} MiB。",
    )


def not_an_upload() -> KouboError:
    """A file parameter that is not a file uploaded through the page; deliberately silent about why."""
    return KouboError(
        ErrorCode.NOT_AN_UPLOAD,
        "This file was not uploaded through this page; please upload it again.",
        "该文件不是通过本页面上传的，请重新上传。",
    )


def too_many_attempts(seconds: int) -> KouboError:
    """An address in its back-off after wrong passwords (koubo.auth.throttle)."""
    return KouboError(
        ErrorCode.TOO_MANY_ATTEMPTS,
        f"Too many wrong passwords from your address; try again in {seconds} s.",
        f"来自您地址的错误密码次数过多，请 {seconds} 秒后再试。",
    )


# A job's status as the Chinese messages name it (the English ones use the status itself).
_STATUS_ZH = {
    "queued": "排队中",
    "running": "生成中",
    "done": "已完成",
    "failed": "失败",
    "cancelled": "已取消",
    "timed_out": "超时",
    "expired": "已过期",
}


def not_retryable(status: str) -> KouboError:
    return KouboError(
        ErrorCode.NOT_RETRYABLE,
        f"Only a failed, cancelled or timed-out job can be retried; this one is {status}.",
        f"只有失败、已取消或超时的任务可以重试；此任务状态为“{_STATUS_ZH.get(status, status)}”。",
    )


def no_output(job_id: str) -> KouboError:
    return KouboError(
        ErrorCode.NO_OUTPUT,
        f"Job {job_id} has no finished video to download.",
        f"任务 {job_id} 没有可下载的成品视频。",
    )


def batch_has_no_output() -> KouboError:
    return KouboError(ErrorCode.NO_OUTPUT, "No video of this batch has finished yet.", "该批次还没有完成的视频。")


def output_expired(job_id: str) -> KouboError:
    return KouboError(
        ErrorCode.OUTPUT_EXPIRED,
        f"The video of job {job_id} was deleted by the retention policy; generate it again if needed.",
        f"任务 {job_id} 的视频已按保留策略删除；如需要请重新生成。",
    )


def disk_full(free: int, needed: int) -> KouboError:
    free_gib, needed_gib = free / 2**30, needed / 2**30
    return KouboError(
        ErrorCode.DISK_FULL,
        f"The server's disk is almost full ({free_gib:.1f} GiB free, {needed_gib:.1f} GiB needed); "
        "no new uploads or jobs are accepted until space is freed.",
        f"服务器磁盘空间不足（剩余 {free_gib:.1f} GiB，至少需要 {needed_gib:.1f} GiB），释放空间前不接受新的上传或任务。",
    )


def disk_low_while_writing(free: int, needed: int) -> KouboError:
    free_mib, needed_mib = free / 2**20, needed / 2**20
    return KouboError(
        ErrorCode.DISK_FULL,
        f"The server's disk ran low while this job was writing ({free_mib:.0f} MiB free, {needed_mib:.0f} MiB "
        "needed); the job was stopped and its files removed.",
        f"任务写入时服务器磁盘空间不足（剩余 {free_mib:.0f} MiB，至少需要 {needed_mib:.0f} MiB），任务已停止并删除了其文件。",
    )


def frame_too_large(name: str, width: int, height: int, max_width: int, max_height: int) -> MediaError:
    return MediaError(
        ErrorCode.FRAME_TOO_LARGE,
        f"{_describe(name)} is {width}x{height}, larger than the allowed {max_width}x{max_height}.",
        f"文件 {name} 的画面为 {width}x{height}，超过允许的 {max_width}x{max_height}。",
    )


def too_many_pixels(name: str, what_en: str, what_zh: str, pixels: int, limit: int) -> MediaError:
    return MediaError(
        ErrorCode.TOO_MANY_PIXELS,
        f"{_describe(name)} would need {pixels / 1e9:.1f} billion pixels for {what_en}, more than the allowed "
        f"{limit / 1e9:.1f} billion; use a shorter or smaller video.",
        f"文件 {name} 的{what_zh}需要 {pixels / 1e8:.0f} 亿像素，超过允许的 {limit / 1e8:.0f} 亿像素；"
        "请使用更短或分辨率更低的视频。",
    )


def job_timed_out(limit: float) -> KouboError:
    return KouboError(
        ErrorCode.TIMED_OUT,
        f"The job ran longer than the allowed {limit:.0f} s and was stopped.",
        f"任务运行超过允许的 {limit:.0f} 秒，已被停止。",
    )


def worker_crashed(returncode: int) -> KouboError:
    if returncode < 0:
        en_how, zh_how = f"killed by signal {-returncode}", f"被信号 {-returncode} 终止"
    else:
        en_how, zh_how = f"exit code {returncode}", f"退出码 {returncode}"
    return KouboError(
        ErrorCode.WORKER_CRASHED,
        f"The generation process ended unexpectedly ({en_how}) without a result.",
        f"生成进程意外结束（{zh_how}），没有产生结果。",
    )


def worker_lost(worker: str | None) -> KouboError:
    name = worker or "?"
    return KouboError(
        ErrorCode.WORKER_LOST,
        f"The worker {name} stopped responding while running this job (its process or machine is gone), "
        "and so did the one before; retry the job to run it again.",
        f"运行此任务的工作节点 {name} 失去响应（进程或机器已不在），此前一次也是如此；请重试该任务。",
    )


def internal_error() -> KouboError:
    return KouboError(
        ErrorCode.INTERNAL,
        "koubo ran into an internal error while generating this video; the details are in the log.",
        "生成视频时发生内部错误，详细信息见日志。",
    )


def bad_settings(problems: list[dict]) -> KouboError:
    """Settings that do not pass their checks (pydantic's errors): each told as a whole sentence."""
    en, zh = validation_messages([{**problem, "loc": ("setting", *problem.get("loc", ()))} for problem in problems])
    return KouboError(
        ErrorCode.BAD_CONFIG,
        f"{en} Settings come from the command line, KOUBO_* environment variables and koubo.toml.",
        f"{zh}设置来自命令行、KOUBO_* 环境变量和 koubo.toml。",
    )


def bad_settings_file(path: str, problem: str) -> KouboError:
    return KouboError(
        ErrorCode.BAD_CONFIG,
        f"The settings file {path} is not valid TOML: {problem}.",
        f"设置文件 {path} 不是有效的 TOML：{problem}。",
    )


def bad_queue_url(url: str) -> KouboError:
    # Only the scheme: the rest of a queue URL may hold a password.
    scheme = url.partition(":")[0]
    return KouboError(
        ErrorCode.BAD_CONFIG,
        f"Queue URLs of the kind {scheme!r} are not supported: use sqlite:///path or redis://host.",
        f"不支持 {scheme!r} 类型的队列地址：请使用 sqlite:///路径 或 redis://主机。",
    )


# --- requests that do not have the expected shape -----------------------------------------------------

# Where a request's problem lies (FastAPI's first `loc` part), as (en, zh) nouns.
_PLACES = {
    "body": ("field", "字段"),
    "query": ("query parameter", "查询参数"),
    "path": ("path parameter", "路径参数"),
    "header": ("header", "请求头"),
    "setting": ("setting", "设置"),  # koubo's own (koubo.config), not a request's
}
# Pydantic's error types as whole sentences; {where}/{在} name the place, the rest come from `ctx`.
_PROBLEMS: dict[str, tuple[str, str]] = {
    "missing": ("The {where} is required.", "缺少必填的{在}。"),
    "extra_forbidden": ("The {where} is not allowed here.", "不允许提供{在}。"),
    "int_parsing": ("The {where} must be a whole number.", "{在}必须是整数。"),
    "int_type": ("The {where} must be a whole number.", "{在}必须是整数。"),
    "int_from_float": ("The {where} must be a whole number.", "{在}必须是整数。"),
    "float_parsing": ("The {where} must be a number.", "{在}必须是数字。"),
    "float_type": ("The {where} must be a number.", "{在}必须是数字。"),
    "finite_number": ("The {where} must be a finite number.", "{在}必须是有限的数字。"),
    "bool_parsing": ("The {where} must be true or false.", "{在}必须是 true 或 false。"),
    "bool_type": ("The {where} must be true or false.", "{在}必须是 true 或 false。"),
    "string_type": ("The {where} must be text.", "{在}必须是文本。"),
    "greater_than_equal": ("The {where} must be at least {ge}.", "{在}不能小于 {ge}。"),
    "greater_than": ("The {where} must be greater than {gt}.", "{在}必须大于 {gt}。"),
    "less_than_equal": ("The {where} must be at most {le}.", "{在}不能大于 {le}。"),
    "less_than": ("The {where} must be less than {lt}.", "{在}必须小于 {lt}。"),
    "string_too_short": (
        "The {where} must have at least {min_length} character(s).",
        "{在}至少需要 {min_length} 个字符。",
    ),
    "string_too_long": ("The {where} must have at most {max_length} characters.", "{在}最多 {max_length} 个字符。"),
    "too_short": ("The {where} must have at least {min_length} item(s).", "{在}至少需要 {min_length} 项。"),
    "too_long": ("The {where} must have at most {max_length} items.", "{在}最多 {max_length} 项。"),
    "literal_error": ("The {where} must be one of {expected}.", "{在}必须是以下之一：{expected}。"),
    "enum": ("The {where} must be one of {expected}.", "{在}必须是以下之一：{expected}。"),
    "list_type": ("The {where} must be a list.", "{在}必须是列表。"),
    "dict_type": ("The {where} must be an object.", "{在}必须是对象。"),
    "model_type": ("The {where} must be an object.", "{在}必须是对象。"),
    "model_attributes_type": ("The {where} must be an object.", "{在}必须是对象。"),
    "json_invalid": ("The request body is not valid JSON.", "请求体不是有效的 JSON。"),
    "batch_shape": BATCH_SHAPE,
}
_UNKNOWN_PROBLEM = ("The {where} is not valid.", "{在}无效。")


def _place(loc: tuple[str | int, ...]) -> tuple[str, str]:
    """("field "params.crf"", "字段“params.crf”") from FastAPI's loc ("body", "params", "crf")."""
    kind, *names = loc or ("body",)
    en, zh = _PLACES.get(str(kind), _PLACES["body"])
    if kind not in _PLACES:
        names = [kind, *names]
    name = ".".join(str(part) for part in names)
    if not name:
        return "request body", "请求体"
    return f'{en} "{name}"', f"{zh}“{name}”"


class _Context(dict[str, str]):
    # A value pydantic did not give (it always should) shows as "?", never as a KeyError, i.e. a 500.
    def __missing__(self, key: str) -> str:
        return "?"


def _sentence(template: str, where: str, ctx: dict[str, object]) -> str:
    values = _Context({key: str(value) for key, value in ctx.items()})
    values["where"] = values["在"] = where
    return template.format_map(values)


def validation_messages(problems: list[dict]) -> tuple[str, str]:
    """Pydantic's errors (type, loc, ctx) as whole English and Chinese sentences, one per problem.

    Pydantic's own `msg` is English only, so it is never shown: each problem is told from its
    type and location, with the numbers and choices from its context.
    """
    en_parts, zh_parts = [], []
    for problem in problems:
        en_where, zh_where = _place(tuple(problem.get("loc", ())))
        en, zh = _PROBLEMS.get(str(problem.get("type", "")), _UNKNOWN_PROBLEM)
        ctx = {key: value for key, value in (problem.get("ctx") or {}).items() if isinstance(value, str | int | float)}
        en_parts.append(_sentence(en, en_where, ctx))
        zh_parts.append(_sentence(zh, zh_where, ctx))
    return " ".join(dict.fromkeys(en_parts)), "".join(dict.fromkeys(zh_parts))
