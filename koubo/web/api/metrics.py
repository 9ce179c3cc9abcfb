"""GET /metrics in the Prometheus text exposition format (version 0.0.4), written by hand.

Every number is read from the job database at scrape time, so any web process reports the same
figures, whichever machine the workers run on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from koubo.jobs.service import JobService, JobStatus
from koubo.links.egress import combined, read_snapshots
from koubo.web.api.deps import ServiceDep, SettingsDep

router = APIRouter(tags=["system"])

# Rendering takes seconds for a short clip and many minutes for a long one.
DURATION_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, math.inf)
_PAGE = 500


def _finished_durations(service: JobService) -> list[float]:
    """Seconds from start to finish of every job that finished with a video."""
    durations: list[float] = []
    offset = 0
    while True:
        views, total = service.list_jobs(status=JobStatus.done, offset=offset, limit=_PAGE)
        durations += [
            (view.finished_at - view.started_at).total_seconds()
            for view in views
            if view.started_at is not None and view.finished_at is not None
        ]
        offset += len(views)
        if not views or offset >= total:
            return durations


def _number(value: float) -> str:
    return "+Inf" if math.isinf(value) else str(value)


def _family(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float]]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *(f"{s} {_number(v)}" for s, v in samples)]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def egress_families(egress: dict[str, Any]) -> list[str]:
    """The link servers' figures (koubo/links/egress.py), summed over every fresh snapshot."""
    return [
        *_family(
            "koubo_links_sent_bytes_total",
            "counter",
            "Bytes the link servers sent since they started.",
            [("koubo_links_sent_bytes_total", egress["bytes_sent"])],
        ),
        *_family(
            "koubo_links_active_downloads",
            "gauge",
            "Downloads in progress.",
            [("koubo_links_active_downloads", egress["active"])],
        ),
        *_family(
            "koubo_links_egress_bytes_per_second",
            "gauge",
            "Bytes per second sent over the last seconds.",
            [("koubo_links_egress_bytes_per_second", egress["rate"])],
        ),
        *_family(
            "koubo_link_downloads_total",
            "counter",
            "Downloads started from byte 0, for the busiest links.",
            [(f'koubo_link_downloads_total{{link="{_label(link)}"}}', n) for link, n in egress["busiest"]],
        ),
    ]


def exposition(summary: dict[str, int], durations: list[float], egress: dict[str, Any] | None = None) -> str:
    counts = {status.value: int(summary.get(status.value, 0)) for status in JobStatus}
    buckets = [(bound, sum(1 for d in durations if d <= bound)) for bound in DURATION_BUCKETS]
    lines = [
        *_family(
            "koubo_queue_length", "gauge", "Jobs waiting for a worker.", [("koubo_queue_length", counts["queued"])]
        ),
        *_family(
            "koubo_jobs",
            "gauge",
            "Jobs in the database by status.",
            [(f'koubo_jobs{{status="{status}"}}', n) for status, n in counts.items()],
        ),
        *_family(
            "koubo_workers",
            "gauge",
            "Jobs that may render at the same time.",
            [("koubo_workers", int(summary.get("workers", 0)))],
        ),
        *_family(
            "koubo_job_duration_seconds",
            "histogram",
            "Seconds from start to finish of jobs that produced a video.",
            [
                *((f'koubo_job_duration_seconds_bucket{{le="{_number(b)}"}}', n) for b, n in buckets),
                ("koubo_job_duration_seconds_sum", sum(durations)),
                ("koubo_job_duration_seconds_count", len(durations)),
            ],
        ),
    ]
    if egress is not None:
        lines += egress_families(egress)
    return "\n".join(lines) + "\n"


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
def metrics(service: ServiceDep, settings: SettingsDep) -> PlainTextResponse:
    egress = combined(read_snapshots(settings.data_dir))
    text = exposition(service.queue_summary(), _finished_durations(service), egress)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")
