"""The stages of one generation, in the order they run, and each one's share of a job's progress.

The pipeline reports `(stage, fraction)`; the job's row stores the stage's name, the UI translates
it (`stage.<name>` in koubo/web/i18n.py, one entry per member). A `StrEnum`, so the stored and
reported names are the plain strings they always were.
"""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    starting = "starting"  # claimed; the generation process has not reported yet
    features = "features"
    decode = "decode"
    face = "face"
    render = "render"
    check = "check"
    done = "done"

    @property
    def weight(self) -> float:
        """This stage's share of the whole job's progress (0 for the markers before and after)."""
        return _WEIGHTS.get(self, 0.0)


# Measured shares of a job's time on a CPU machine; they add up to 1.
_WEIGHTS = {Stage.features: 0.05, Stage.decode: 0.05, Stage.face: 0.25, Stage.render: 0.35, Stage.check: 0.30}


def overall_progress(stage: str, fraction: float) -> float:
    """The share of the whole job done once `stage` is `fraction` done."""
    before = 0.0
    for member in Stage:
        if member == stage:
            if member is Stage.done:
                return 1.0
            return before + member.weight * min(max(fraction, 0.0), 1.0)
        before += member.weight
    return 0.0
