"""The workers table as the Workers panel sees it: gone workers age out instead of piling up."""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from koubo.config import Settings
from koubo.jobs.queue import HeldSignals
from koubo.jobs.store import Database, Routing, Worker, utcnow
from koubo.jobs.workers import forget_gone_workers, view_workers


def _register(db: Database, name: str, *, heard_ago: timedelta, stopped: bool) -> None:
    db.register_worker(
        Routing(name, ("classic",), "cpu"),
        host="here",
        pid=1,
        concurrency=1,
        forget_before=utcnow() - timedelta(days=365),
    )
    heard = utcnow() - heard_ago
    with db.session() as session:
        session.execute(
            update(Worker).where(Worker.name == name).values(heartbeat_at=heard, stopped_at=heard if stopped else None)
        )


def test_workers_gone_for_longer_than_the_setting_leave_the_panel_and_the_table(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, worker_forget_after=3600)
    db = Database(settings.database_location)
    try:
        _register(db, "alive", heard_ago=timedelta(seconds=1), stopped=False)
        _register(db, "restarted-a-minute-ago", heard_ago=timedelta(minutes=1), stopped=True)
        _register(db, "silent-for-ten-minutes", heard_ago=timedelta(minutes=10), stopped=False)
        _register(db, "restarted-yesterday", heard_ago=timedelta(days=1), stopped=True)
        _register(db, "silent-for-two-hours", heard_ago=timedelta(hours=2), stopped=False)

        shown = {worker.name: worker.alive for worker in view_workers(db.workers(), settings)}
        # Recently gone workers still show (as gone: someone may be looking for them); old ones do not.
        assert shown == {"alive": True, "restarted-a-minute-ago": False, "silent-for-ten-minutes": False}

        # The web process's maintenance deletes the old rows; the others stay.
        forget_gone_workers(db, settings)
        assert {state.name for state in db.workers()} == set(shown)
    finally:
        db.close()


def test_a_forget_setting_shorter_than_the_heartbeat_timeout_never_hides_a_live_worker(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, worker_timeout=60, worker_forget_after=1)
    db = Database(settings.database_location)
    try:
        _register(db, "slow-beat", heard_ago=timedelta(seconds=30), stopped=False)
        forget_gone_workers(db, settings)
        assert [(worker.name, worker.alive) for worker in view_workers(db.workers(), settings)] == [("slow-beat", True)]
    finally:
        db.close()


def test_the_workers_panel_marks_gone_workers_and_escapes_names() -> None:
    from koubo.jobs.workers import WorkerView
    from koubo.web.i18n import t
    from koubo.web.ui_render import workers_panel

    now = utcnow()
    alive = WorkerView("gpu<1>", "h", "cuda", ["classic", "wav2lip"], 2, True, 1, ["j"], now, now, None)
    gone = WorkerView("old & gone", "h", "cpu", ["classic"], 1, False, 0, [], now, now, now)
    for lang in ("zh", "en"):
        html = workers_panel([alive, gone], lang)
        assert 'data-worker="gpu&lt;1&gt;" data-state="alive"' in html and "gpu<1>" not in html
        assert 'data-worker="old &amp; gone" data-state="gone"' in html
        assert t("workers.alive", lang) in html and t("workers.gone", lang) in html and "1 / 2" in html
        assert workers_panel([], lang) == f'<div class="koubo-empty">{t("workers.empty", lang)}</div>'


def test_a_stop_asked_for_while_the_consumer_starts_is_held_and_handed_to_the_consumer() -> None:
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        held = HeldSignals()
        # The default action would end this process here; held, it waits for the consumer.
        os.kill(os.getpid(), signal.SIGTERM)
        assert held.received == [signal.SIGTERM]
        handed: list[int] = []
        assert held.hand_to(lambda signum, _frame: handed.append(signum))
        assert handed == [signal.SIGTERM] and held.received == []
        # Until Huey installs its own handlers, later signals go straight on.
        os.kill(os.getpid(), signal.SIGINT)
        assert handed == [signal.SIGTERM, signal.SIGINT]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
