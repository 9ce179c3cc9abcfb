"""Generation options: what a person asks for, its value ranges, and the form the pipeline runs with.

`GenerateOptions` is what the API, the web UI and the command line build from their input; a field
left None means "use the setting". `resolve(requested, settings)` fills those in once, at the edge,
giving `ResolvedOptions`, where every field is concrete: the pipeline and a job's stored parameters
take only that. The ranges are written here once; `koubo.config.Settings` and the mouth model refer
to them. The batch rule (one audio × many videos, or many audios × one video) lives here too.

This module sits in the lowest layer (it imports neither the settings nor the engines), so that
the settings themselves can use its ranges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal, Protocol, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from koubo import errors

# --- the ranges, once ------------------------------------------------------------------------------

EXPRESSIVENESS_MIN, EXPRESSIVENESS_MAX = 0.0, 2.0  # scale of mouth movement; 1 = as measured
CRF_MIN, CRF_MAX = 0, 51  # x264's constant rate factor: lower is better and bigger
ENGINE_NAME_MAX = 64  # characters; which names exist is koubo.engines' to say

Expressiveness = Annotated[float, Field(ge=EXPRESSIVENESS_MIN, le=EXPRESSIVENESS_MAX)]
Crf = Annotated[int, Field(ge=CRF_MIN, le=CRF_MAX)]
Preset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"]
PRESETS: tuple[str, ...] = get_args(Preset)
# Background noise out of the speech: off, for the mouth only, or for the output's sound track too.
DenoiseMode = Literal["off", "mouth", "all"]
# Where a job must run (a worker offering this device); None: any worker.
JobDevice = Literal["cpu", "cuda"]


class OptionDefaults(Protocol):
    """The settings an option left None falls back to (koubo.config.Settings has them)."""

    engine: str
    expressiveness: float
    video_crf: int
    video_preset: str
    denoise: str


# --- what is asked for ------------------------------------------------------------------------------


class GenerateOptions(BaseModel):
    """The generation options asked for; a field left None takes its setting (see `resolve`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: str | None = Field(None, min_length=1, max_length=ENGINE_NAME_MAX)
    expressiveness: Expressiveness | None = None
    crf: Crf | None = None
    # A plain string checked below, so that OpenAPI lists the presets in the description, not an enum.
    preset: str | None = Field(None, description=f"x264 preset: {', '.join(PRESETS)}")
    denoise: DenoiseMode | None = Field(
        None, description="background noise out of the speech: off, for the mouth only, or for the sound track too"
    )
    device: JobDevice | None = Field(None, description="only a worker on this device runs it")
    # Measure the quality report on the encoded output. A job always does (the API neither shows
    # nor takes it); the command line and the benchmarks may skip it.
    check: bool = True

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        if value is not None and value not in PRESETS:
            raise PydanticCustomError("literal_error", "must be one of {expected}", {"expected": ", ".join(PRESETS)})
        return value


# --- what is run ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedOptions:
    """Every option concrete: what the pipeline runs with and what a job stores."""

    engine: str
    expressiveness: float
    crf: int
    preset: str
    denoise: DenoiseMode
    device: JobDevice | None = None
    check: bool = True

    def job_params(self) -> dict[str, Any]:
        """A job's stored parameters (JSON in the database): `check` is not one, `device` only when set."""
        params = {key: value for key, value in asdict(self).items() if key != "check"}
        return params if self.device is not None else {k: v for k, v in params.items() if k != "device"}

    @classmethod
    def from_job_params(cls, params: dict[str, Any]) -> ResolvedOptions:
        """A job's stored parameters back; jobs stored before denoising existed have no "denoise"."""
        return cls(
            engine=params["engine"],
            expressiveness=params["expressiveness"],
            crf=params["crf"],
            preset=params["preset"],
            denoise=params.get("denoise", "off"),
            device=params.get("device"),
        )


def resolve(requested: GenerateOptions | ResolvedOptions | None, settings: OptionDefaults) -> ResolvedOptions:
    """The one place an option left None takes its setting; resolved options pass through as they are."""
    if isinstance(requested, ResolvedOptions):
        return requested
    asked = requested or GenerateOptions()
    return ResolvedOptions(
        engine=asked.engine or settings.engine,
        expressiveness=settings.expressiveness if asked.expressiveness is None else asked.expressiveness,
        crf=settings.video_crf if asked.crf is None else asked.crf,
        preset=asked.preset or settings.video_preset,
        denoise=asked.denoise or settings.denoise,  # type: ignore[arg-type]  # Settings' is the same Literal
        device=asked.device,
        check=asked.check,
    )


# --- the batch rule --------------------------------------------------------------------------------------

A = TypeVar("A")
V = TypeVar("V")


def batch_pairs(audios: Sequence[A], videos: Sequence[V]) -> list[tuple[A, V]]:
    """The (audio, video) pairs of a batch, in output order: one audio × many videos, or many audios ×
    one video. Raises the bilingual `batch_shape` error for anything else (none of one side, or many
    of both)."""
    if not audios or not videos or (len(audios) > 1 and len(videos) > 1):
        raise errors.batch_shape(len(audios), len(videos))
    return [(audio, video) for audio in audios for video in videos]
