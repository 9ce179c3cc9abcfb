"""ProgressWriter: what of the pipeline's progress reaches the job's row, and when (a fake clock)."""

from __future__ import annotations

from typing import Any

from koubo.jobs.child import PROGRESS_INTERVAL_S, ProgressWriter
from koubo.stages import Stage, overall_progress


class RecordingDatabase:
    """Stands in for Database.update_run: the values each write would have stored."""

    def __init__(self) -> None:
        self.writes: list[dict[str, Any]] = []

    def update_run(self, job_id: str, worker: str | None, /, **values: Any) -> bool:
        self.writes.append(values)
        return True


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def writer() -> tuple[ProgressWriter, RecordingDatabase, FakeClock]:
    db, clock = RecordingDatabase(), FakeClock()
    return ProgressWriter(db, "job", "worker", clock=clock), db, clock  # type: ignore[arg-type]


def test_each_stages_first_report_and_end_are_written_at_once() -> None:
    report, db, _clock = writer()  # the clock stands still: every write below is inside one interval
    report(Stage.features, 0.0)
    report(Stage.features, 1.0)
    report(Stage.decode, 1.0)
    report(Stage.face, 0.0)
    report(Stage.face, 1.0)
    assert db.writes == [
        {"stage": "features", "progress": 0.0},
        {"stage": "features", "progress": round(overall_progress(Stage.features, 1.0), 4)},
        {"stage": "decode", "progress": round(overall_progress(Stage.decode, 1.0), 4)},
        {"stage": "face", "progress": round(overall_progress(Stage.face, 0.0), 4)},
        {"stage": "face", "progress": round(overall_progress(Stage.face, 1.0), 4)},
    ]
    assert db.writes[1]["progress"] > 0  # a stage's end shows at once, within the interval


def test_reports_within_a_stage_are_written_at_most_once_per_interval() -> None:
    report, db, clock = writer()
    report(Stage.render, 0.1)
    clock.now += PROGRESS_INTERVAL_S / 2
    report(Stage.render, 0.2)  # held back
    report(Stage.render, 0.3)  # held back
    clock.now += PROGRESS_INTERVAL_S / 2
    report(Stage.render, 0.4)  # an interval after the last write
    clock.now += PROGRESS_INTERVAL_S / 10
    report(Stage.render, 0.5)  # held back
    assert [write["progress"] for write in db.writes] == [
        round(overall_progress(Stage.render, fraction), 4) for fraction in (0.1, 0.4)
    ]


def test_progress_never_goes_backwards() -> None:
    report, db, clock = writer()
    report(Stage.face, 0.8)
    clock.now += PROGRESS_INTERVAL_S
    report(Stage.face, 0.5)  # a second pass of the tracker, say
    assert [write["progress"] for write in db.writes] == [round(overall_progress(Stage.face, 0.8), 4)] * 2
