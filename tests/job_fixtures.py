"""Jobs as a worker leaves them, made without rendering: for tests and benchmarks of what comes after."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import update

from koubo.config import Settings
from koubo.jobs.service import JobService, JobStatus
from koubo.jobs.store import Database, Job

from media_fixtures import make_speech, make_talking_video


def finished_job(
    work: Path, data_dir: Path, audio_name: str = "问候.wav", batch: int = 0, speech_seconds: float = 1.0
) -> str:
    """A job (or, with batch=N, the first of a batch of N) as a worker leaves it when done: the row
    and the video under outputs/. The rendering itself is tested elsewhere; here only delivery is.
    Uploads of the same content are kept once, under their first name: another `speech_seconds`
    makes another audio asset, named `audio_name`, in the same data_dir."""
    speech = make_speech(work / "speech.wav", seconds=speech_seconds)
    video = make_talking_video(work / "face.mp4", seconds=1.0, size=(128, 128))
    service = JobService(Settings(data_dir=data_dir))
    try:
        ids = []
        for source, name, kind in ((speech, audio_name, "audio"), (video, "主播.mp4", "video")):
            temp = service.upload_tmp_dir / f"{kind}.part"
            shutil.copyfile(source, temp)
            ids.append(service.add_asset(temp, name, kind).id)  # type: ignore[arg-type]
        if batch:
            jobs = service.submit_batch([ids[0]], [ids[1]] * batch).jobs
        else:
            jobs = [service.submit(ids[0], ids[1])]
        database = Database(Settings(data_dir=data_dir).database_location)
        try:
            for job in jobs:
                target = data_dir / "outputs" / job.id / job.output_name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(video, target)
                with database.session() as session:
                    session.execute(
                        update(Job)
                        .where(Job.id == job.id)
                        .values(
                            status=JobStatus.done,
                            output_path=f"{job.id}/{job.output_name}",
                            output_size=target.stat().st_size,
                            finished_at=datetime.now(UTC),
                        )
                    )
        finally:
            database.close()
        return jobs[0].batch_id if batch else jobs[0].id
    finally:
        service.close()
