"""Bandwidth you can plan for: what the link server sends, a fair share of a total cap, downloads per link."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from koubo.config import Settings
from koubo.errors import KouboError
from koubo.jobs.service import JobService
from koubo.links.egress import RATE_WINDOW_S, Egress, combined, read_snapshots
from koubo.links.signing import signed_link

from job_fixtures import finished_job
from servers import links_process, wait_until


def test_a_cap_is_shared_evenly_by_the_downloads_in_progress() -> None:
    egress = Egress(cap=1_000_000, per_link=None)
    assert egress.share() == 1_000_000
    with egress.transfer("a/x.mp4", whole=True), egress.transfer("b/y.mp4", whole=True):
        assert egress.share() == 500_000
        with egress.transfer("a/x.mp4", whole=False):
            assert egress.share() == 333_333
        assert egress.share() == 500_000
    assert egress.active == 0 and egress.share() == 1_000_000
    assert Egress(cap=None, per_link=None).share() is None


def test_a_link_allows_so_many_downloads_but_resumes_do_not_count() -> None:
    egress = Egress(cap=None, per_link=2)
    for _ in range(2):
        with egress.transfer("j/v.mp4", whole=True):
            pass
    with egress.transfer("j/v.mp4", whole=False):  # a resumed download's Range request
        pass
    with pytest.raises(KouboError) as refused, egress.transfer("j/v.mp4", whole=True):
        pass
    assert refused.value.code == "link_exhausted" and "2" in refused.value.zh
    with egress.transfer("other/v.mp4", whole=True):  # other links are not affected
        pass
    assert egress.downloads == {"j/v.mp4": 2, "other/v.mp4": 1}


def test_the_rate_is_the_bytes_of_the_last_seconds() -> None:
    now = [100.0]
    egress = Egress(cap=None, per_link=None, clock=lambda: now[0])
    egress.sent(5_000_000)
    assert egress.rate() == 5_000_000 / RATE_WINDOW_S
    now[0] += RATE_WINDOW_S + 1
    egress.sent(10)
    assert egress.rate() == 10 / RATE_WINDOW_S and egress.bytes_sent == 5_000_010


def test_a_real_link_server_counts_what_it_sends_and_stops_a_link_at_its_limit(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    job_id = finished_job(tmp_path, data_dir)
    settings = Settings(data_dir=data_dir)
    service = JobService(settings)
    try:
        path, name = service.output_file(job_id)
    finally:
        service.close()
    original = path.read_bytes()
    # A cap far above what a test moves still sends every byte through the paced path.
    with links_process(tmp_path, data_dir, links_downloads_per_link="2", links_egress_cap="50000000") as links:
        link = signed_link(settings, job_id, name).url.replace(settings.links_base, links.url)
        received = 0
        for _ in range(2):
            answer = httpx.get(link, timeout=60)
            assert answer.status_code == 200 and answer.content == original
            received += len(answer.content)
        resumed = httpx.get(link, headers={"Range": "bytes=100-"}, timeout=60)
        assert resumed.status_code == 206 and resumed.content == original[100:]
        received += len(resumed.content)
        third = httpx.get(link, timeout=60)
        assert third.status_code == 410 and third.json()["error"]["code"] == "link_exhausted"

        def counted() -> dict | None:
            found = combined(read_snapshots(data_dir))
            return found if found["bytes_sent"] == received else None

        figures = wait_until(counted, 30, "the link server's snapshot to count every byte")
    assert figures["servers"] == 1 and figures["downloads_total"] == 2
    assert figures["busiest"] == [(f"{job_id}/{name}", 2)] and figures["active"] == 0
    assert read_snapshots(data_dir) == []  # a stopped server's figures go with it


def test_metrics_show_the_link_servers_figures() -> None:
    from koubo.web.api.metrics import EgressCollector, exposition

    egress = {"bytes_sent": 123, "active": 2, "rate": 4.5, "busiest": [('j1/主播 "a".mp4', 3)], "servers": 1}
    text = exposition(EgressCollector(lambda: egress)).decode()
    assert "koubo_links_sent_bytes_total 123" in text and "koubo_links_active_downloads 2" in text
    assert "koubo_links_egress_bytes_per_second 4.5" in text
    assert 'koubo_link_downloads_total{link="j1/主播 \\"a\\".mp4"} 3' in text


def test_the_ui_panel_shows_the_live_egress_and_the_busiest_links() -> None:
    from koubo.web.ui_render import egress_panel

    figures = {"servers": 1, "rate": 1.25e6, "active": 2, "bytes_sent": 3 * 2**30, "downloads_total": 7}
    figures["busiest"] = [("abcdef1234/主播__问候.mp4", 5)]
    zh, en = egress_panel(figures, "zh"), egress_panel(figures, "en")
    assert "10.0 Mbit/s" in zh and "2 个下载进行中" in zh and "主播__问候.mp4" in zh and "<td>5</td>" in zh
    assert "10.0 Mbit/s now, 2 downloads in progress" in en
    assert "No link server" in egress_panel({**figures, "servers": 0, "busiest": []}, "en")
