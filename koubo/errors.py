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
