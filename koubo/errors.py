"""koubo's error types. Each carries a stable code and a message in English and Chinese.

A function that can fail on user input raises one of these; the CLI prints it on one line,
a job records it, the API returns it as JSON.
"""

from __future__ import annotations


class KouboError(Exception):
    """Base error: `code` is stable (API clients switch on it), `en`/`zh` are for people."""

    code: str = "error"

    def __init__(self, code: str, en: str, zh: str) -> None:
        super().__init__(f"{en} / {zh}")
        self.code = code
        self.en = en
        self.zh = zh

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
        super().__init__("cancelled", "The job was cancelled.", "任务已取消。")


# Errors that are only an HTTP status (unknown path, wrong method, missing credentials), as
# (code, en, zh): the web app and the link server answer them alike.
HTTP_STATUS_ERRORS: dict[int, tuple[str, str, str]] = {
    401: ("unauthorized", "Authentication required.", "需要登录。"),
    404: ("not_found", "Not found.", "未找到。"),
    405: ("method_not_allowed", "Method not allowed.", "不支持该请求方法。"),
}


def _describe(name: str) -> str:
    return f"“{name}”" if name else "the file"


def not_media(name: str) -> MediaError:
    return MediaError(
        "not_media",
        f"{_describe(name)} is not an audio or video file that koubo can read.",
        f"文件 {name} 不是可识别的音频或视频文件。",
    )


def no_audio_stream(name: str) -> MediaError:
    return MediaError(
        "no_audio",
        f"{_describe(name)} contains no audio track; please upload a speech recording.",
        f"文件 {name} 中没有音频轨道，请上传语音文件。",
    )


def no_video_stream(name: str) -> MediaError:
    return MediaError(
        "no_video",
        f"{_describe(name)} contains no video track; please upload a template video.",
        f"文件 {name} 中没有视频画面，请上传模板视频。",
    )


def empty_media(name: str) -> MediaError:
    return MediaError(
        "empty",
        f"{_describe(name)} is empty (zero length).",
        f"文件 {name} 为空（时长为零）。",
    )


def too_long(name: str, seconds: float, limit: float) -> MediaError:
    return MediaError(
        "too_long",
        f"{_describe(name)} lasts {seconds:.1f} s, longer than the allowed {limit:.0f} s.",
        f"文件 {name} 时长 {seconds:.1f} 秒，超过允许的 {limit:.0f} 秒。",
    )


def undecodable(name: str, codec: str) -> MediaError:
    return MediaError(
        "undecodable",
        f"{_describe(name)} uses a codec that cannot be decoded ({codec}).",
        f"文件 {name} 的编码格式（{codec}）无法解码。",
    )


def truncated(name: str) -> MediaError:
    return MediaError(
        "truncated",
        f"{_describe(name)} is damaged or incomplete (truncated); please upload it again.",
        f"文件 {name} 已损坏或不完整（被截断），请重新上传。",
    )


def no_face(name: str) -> FaceError:
    return FaceError(
        "no_face",
        f"No face was found in {_describe(name)}; the template must show a person facing the camera.",
        f"模板视频 {name} 中未检测到人脸，请使用正面人像视频。",
    )


# --- jobs and the queue ------------------------------------------------------------------------------


class NotFound(KouboError):
    """An id (job, batch, asset) that does not exist, or no longer does."""


class JobNotFound(NotFound):
    def __init__(self, job_id: str) -> None:
        super().__init__("not_found", f"There is no job {job_id}.", f"任务 {job_id} 不存在。")


def asset_not_found(asset_id: str) -> NotFound:
    return NotFound("not_found", f"There is no uploaded file {asset_id}.", f"上传的文件 {asset_id} 不存在。")


def batch_not_found(batch_id: str) -> NotFound:
    return NotFound("not_found", f"There is no batch {batch_id}.", f"批量任务 {batch_id} 不存在。")


def invalid_params(en: str, zh: str) -> KouboError:
    return KouboError("invalid_params", f"Invalid request: {en}", f"请求参数无效：{zh}")


def wrong_asset_kind(name: str, expected: str) -> KouboError:
    en_kind, zh_kind = ("an audio file", "音频") if expected == "audio" else ("a template video", "模板视频")
    return KouboError(
        "wrong_kind",
        f"{_describe(name)} was uploaded as another kind of file; {en_kind} is needed here.",
        f"文件 {name} 的上传类型不对，此处需要{zh_kind}。",
    )


def too_large(name: str, size: int, limit: int) -> MediaError:
    mib, limit_mib = size / 2**20, limit / 2**20
    return MediaError(
        "too_large",
        f"{_describe(name)} is {mib:.0f} MiB, larger than the allowed {limit_mib:.0f} MiB.",
        f"文件 {name} 大小为 {mib:.0f} MiB，超过允许的 {limit_mib:.0f} MiB。",
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
        "not_retryable",
        f"Only a failed, cancelled or timed-out job can be retried; this one is {status}.",
        f"只有失败、已取消或超时的任务可以重试；此任务状态为“{_STATUS_ZH.get(status, status)}”。",
    )


def no_output(job_id: str) -> KouboError:
    return KouboError(
        "no_output",
        f"Job {job_id} has no finished video to download.",
        f"任务 {job_id} 没有可下载的成品视频。",
    )


def batch_has_no_output() -> KouboError:
    return KouboError("no_output", "No video of this batch has finished yet.", "该批次还没有完成的视频。")


def output_expired(job_id: str) -> KouboError:
    return KouboError(
        "output_expired",
        f"The video of job {job_id} was deleted by the retention policy; generate it again if needed.",
        f"任务 {job_id} 的视频已按保留策略删除；如需要请重新生成。",
    )


def disk_full(free: int, needed: int) -> KouboError:
    free_gib, needed_gib = free / 2**30, needed / 2**30
    return KouboError(
        "disk_full",
        f"The server's disk is almost full ({free_gib:.1f} GiB free, {needed_gib:.1f} GiB needed); "
        "no new uploads or jobs are accepted until space is freed.",
        f"服务器磁盘空间不足（剩余 {free_gib:.1f} GiB，至少需要 {needed_gib:.1f} GiB），释放空间前不接受新的上传或任务。",
    )


def job_timed_out(limit: float) -> KouboError:
    return KouboError(
        "timed_out",
        f"The job ran longer than the allowed {limit:.0f} s and was stopped.",
        f"任务运行超过允许的 {limit:.0f} 秒，已被停止。",
    )


def worker_crashed(returncode: int) -> KouboError:
    if returncode < 0:
        en_how, zh_how = f"killed by signal {-returncode}", f"被信号 {-returncode} 终止"
    else:
        en_how, zh_how = f"exit code {returncode}", f"退出码 {returncode}"
    return KouboError(
        "worker_crashed",
        f"The generation process ended unexpectedly ({en_how}) without a result.",
        f"生成进程意外结束（{zh_how}），没有产生结果。",
    )


def worker_lost(worker: str | None) -> KouboError:
    name = worker or "?"
    return KouboError(
        "worker_lost",
        f"The worker {name} stopped responding while running this job (its process or machine is gone), "
        "and so did the one before; retry the job to run it again.",
        f"运行此任务的工作节点 {name} 失去响应（进程或机器已不在），此前一次也是如此；请重试该任务。",
    )


def internal_error() -> KouboError:
    return KouboError(
        "internal",
        "koubo ran into an internal error while generating this video; the details are in the log.",
        "生成视频时发生内部错误，详细信息见日志。",
    )


def bad_queue_url(url: str) -> KouboError:
    # Only the scheme: the rest of a queue URL may hold a password.
    scheme = url.partition(":")[0]
    return KouboError(
        "bad_config",
        f"Queue URLs of the kind {scheme!r} are not supported: use sqlite:///path or redis://host.",
        f"不支持 {scheme!r} 类型的队列地址：请使用 sqlite:///路径 或 redis://主机。",
    )
