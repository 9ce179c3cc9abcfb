"""The engine protocol: what every lip-sync engine receives and returns.

An engine sees the template frames, the template's face track, the speech's features and the
timing of the output; it yields output frames in order. The built-in classic engine reads the
MouthTargets; a neural engine (Wav2Lip) reads the mel windows; both get the same RenderInput.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from koubo.engines import ENGINE_MODULES, ENGINES
from koubo.errors import EngineError, ErrorCode
from koubo.face.tracker import FaceTrack
from koubo.media.video import ArrayFrames, TemplateStream

if TYPE_CHECKING:
    from koubo.config import Settings
    from koubo.features import AudioFeatures
    from koubo.features.mouth import MouthTargets


@dataclass(frozen=True)
class RenderInput:
    # The N template frames, RGB uint8: a TemplateStream that decodes them as they are read (maybe
    # behind a ReadAhead thread), or an (N, H, W, 3) array (held as ArrayFrames). Engines read them
    # in output order (in_order) and borrow other frames' regions through crops(); never the whole
    # template at once.
    frames: TemplateStream | ArrayFrames
    fps: float
    track: FaceTrack  # over the N template frames
    audio: AudioFeatures
    targets: MouthTargets  # one entry per output frame
    source_index: np.ndarray  # (n_out,) template frame under each output frame (forwards-backwards loop)
    expressiveness: float = 1.0

    def __post_init__(self) -> None:
        if not hasattr(self.frames, "in_order"):
            object.__setattr__(self, "frames", ArrayFrames(np.asarray(self.frames)))

    @property
    def n_out(self) -> int:
        return len(self.source_index)


class Engine(Protocol):
    name: str

    def render(self, job: RenderInput, should_stop: Callable[[], bool] | None = None) -> Iterator[np.ndarray]:
        """Yield job.n_out RGB frames of the template's size, in output order."""
        ...


def unknown_engine(name: str) -> EngineError:
    return EngineError(
        ErrorCode.UNKNOWN_ENGINE,
        f"Unknown engine “{name}”; available: {', '.join(ENGINES)}.",
        f"未知的引擎“{name}”；可用：{'、'.join(ENGINES)}。",
    )


def get_engine(name: str, settings: Settings | None = None) -> Engine:
    """The engine `name`, ready to render; a neural engine loads its weights here (EngineError if it cannot)."""
    module = ENGINE_MODULES.get(name)
    if module is None:
        raise unknown_engine(name)
    # By module path: this protocol module never imports the engines that implement it.
    return importlib.import_module(module).make_engine(settings)
