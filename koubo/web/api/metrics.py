"""GET /metrics in the Prometheus text format, through prometheus-client's custom collectors.

Every number is read at scrape time with aggregate queries on the job database (counts per status,
the run-time histogram's buckets, the workers alive), so any web process reports the same figures,
whichever machine the workers run on, and a scrape costs the same with ten jobs or a million. Each
scrape uses its own CollectorRegistry: nothing is kept in prometheus-client's global registry.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from koubo.jobs.service import JobService, JobStatus
from koubo.links.egress import combined, read_snapshots
from koubo.web.api.deps import ServiceDep, SettingsDep

router = APIRouter(tags=["system"])

# Rendering takes seconds for a short clip and many minutes for a long one.
DURATION_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0)


class JobCollector(Collector):
    """The queue, the jobs per status, the workers alive and the done jobs' run times."""

    def __init__(self, service: JobService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        counts = self.service.queue_summary()
        alive, slots = self.service.worker_capacity()
        histogram = self.service.duration_histogram(DURATION_BUCKETS)
        yield GaugeMetricFamily("koubo_queue_length", "Jobs waiting for a worker.", value=counts[JobStatus.queued])
        jobs = GaugeMetricFamily("koubo_jobs", "Jobs in the database by status.", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], counts[status.value])
        yield jobs
        yield GaugeMetricFamily(
            "koubo_workers", "Jobs that may render at the same time, on the workers alive.", value=slots
        )
        yield GaugeMetricFamily("koubo_workers_alive", "Workers heard from within worker_timeout.", value=alive)
        buckets = [(floatToGoString(b), n) for b, n in zip(histogram.bounds, histogram.cumulative, strict=True)]
        yield HistogramMetricFamily(
            "koubo_job_duration_seconds",
            "Seconds from start to finish of jobs that produced a video.",
            buckets=[*buckets, (floatToGoString(math.inf), histogram.count)],
            sum_value=histogram.total,
        )


class EgressCollector(Collector):
    """The link servers' figures (koubo/links/egress.py), summed over every fresh snapshot."""

    def __init__(self, figures: Callable[[], dict[str, Any]]) -> None:
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        egress = self.figures()
        yield CounterMetricFamily(
            "koubo_links_sent_bytes", "Bytes the link servers sent since they started.", value=egress["bytes_sent"]
        )
        yield GaugeMetricFamily("koubo_links_active_downloads", "Downloads in progress.", value=egress["active"])
        yield GaugeMetricFamily(
            "koubo_links_egress_bytes_per_second", "Bytes per second sent over the last seconds.", value=egress["rate"]
        )
        downloads = CounterMetricFamily(
            "koubo_link_downloads", "Downloads started from byte 0, for the busiest links.", labels=["link"]
        )
        for link, count in egress["busiest"]:
            downloads.add_metric([link], count)
        yield downloads


def exposition(*collectors: Collector) -> bytes:
    """The text format of what `collectors` report, through a registry of their own."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
def metrics(service: ServiceDep, settings: SettingsDep) -> Response:
    egress = EgressCollector(lambda: combined(read_snapshots(settings.data_dir)))
    return Response(exposition(JobCollector(service), egress), media_type=CONTENT_TYPE_PLAIN_0_0_4)
