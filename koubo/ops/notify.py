"""Webhooks: a POST when a job is done, failed or timed out, as JSON or as a WeCom, DingTalk or Feishu bot message.

An outbox in the job's own row: finishing a job marks its notification pending (koubo.jobs.store
`finish_run`, the one place a run's final status is written), and a `Notifier` thread in `koubo
serve` sends it; the outbox's states (NotifyState) change only through the store's methods. So a delivery survives a restart, never holds up a worker, and a slow or broken
receiver costs nothing but its own retries. Each attempt is claimed with a conditional UPDATE that
moves the job's `notify_next_at` past the attempt's timeout: two web processes never send one
notification twice, and one that dies mid-attempt leaves it to be taken up again.

Attempts are spaced by RETRY_DELAYS (about 10 minutes in all) and each is limited to
settings.webhook_timeout seconds; a receiver counts as reached on a 2xx answer (for the bots: and
an `errcode`/`code` of 0 in it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote_plus, urlsplit, urlunsplit

from koubo import __version__
from koubo.config import Settings
from koubo.jobs.store import Database, Job, JobStatus, NotifyState, StorageState, recorded_error, utcnow
from koubo.links.handout import LinkMaker

log = logging.getLogger(__name__)

RETRY_DELAYS = (15.0, 45.0, 120.0, 420.0)  # seconds before attempts 2..5
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
POLL_S = 1.0
# A claimed attempt is someone's for its timeout plus this; after that it is taken to have died with its process.
CLAIM_MARGIN_S = 30.0
# A notification still pending this long after it was due was never going to be sent (no webhook was
# configured when its job finished): it is dropped, not sent out of the blue when one is configured.
STALE_AFTER = timedelta(days=1)
BATCH = 20

EVENTS = {JobStatus.done: "job.done", JobStatus.failed: "job.failed", JobStatus.timed_out: "job.timed_out"}
_TITLES = {
    JobStatus.done: ("视频生成完成", "Video ready"),
    JobStatus.failed: ("视频生成失败", "Video failed"),
    JobStatus.timed_out: ("视频生成超时", "Video timed out"),
}


class DeliveryError(Exception):
    """An attempt the receiver did not accept: refused, timed out, a non-2xx status, a bot's error code."""


@dataclass(frozen=True)
class Delivery:
    url: str
    body: bytes
    headers: dict[str, str]


# --- what is sent -----------------------------------------------------------------------------------


def job_event(links: LinkMaker, job: Job) -> dict[str, Any]:
    """The `json` format's body: the job, its link (done jobs; a bucket URL once uploaded) and its
    quality report."""
    status = JobStatus(job.status)
    link = None
    if status is JobStatus.done:
        key = job.storage_key if job.storage_state == StorageState.uploaded else None
        link = links.job_link(job.id, job.output_name, key)
    return {
        "event": EVENTS[status],
        "job": {
            "id": job.id,
            "batch_id": job.batch_id,
            "status": status.value,
            "output_name": job.output_name,
            "size": job.output_size,
            "duration": (job.report or {}).get("video_duration", job.audio.duration),
            "error": recorded_error(job),
            "worker": job.worker,
            "attempts": job.attempts,
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        },
        "link": link.url if link else None,
        "link_kind": link.kind if link else None,
        "expires_at": link.expires_at.isoformat() if link and link.expires_at else None,
        "report": job.report,
    }


def message_title(event: dict[str, Any]) -> str:
    zh, en = _TITLES[JobStatus(event["job"]["status"])]
    return f"koubo：{zh} / {en}"


def message_markdown(event: dict[str, Any]) -> str:
    """A bot message in Chinese and English: name, status, size, sync summary or error, the link."""
    job = event["job"]
    lines = [f"**{message_title(event)}**", f"- 文件 / File: {job['output_name']}"]
    if job["status"] == JobStatus.done.value:
        lines.append(f"- 大小 / Size: {_mib(job['size'])} · 时长 / Duration: {job['duration']:.1f} s")
        report = event["report"]
        if report:
            lines.append(f"- 口型同步 / Lip sync: {_sync_summary(report)}")
        if event["link"]:
            until = f"（有效期至 / valid until {event['expires_at'][:16].replace('T', ' ')} UTC）"
            lines.append(f"- [下载 / Download]({event['link']}){until if event['expires_at'] else ''}")
    elif job["error"]:
        lines.append(f"- 原因：{job['error']['message_zh']}")
        lines.append(f"- Reason: {job['error']['message_en']}")
    lines.append(f"- 任务 / Job: {job['id']}")
    return "\n".join(lines)


def _mib(size: int | None) -> str:
    return "?" if size is None else f"{size / 2**20:.1f} MiB"


def _sync_summary(report: dict[str, Any]) -> str:
    offset = report.get("sync_offset")
    shift = "无法测量 / not measurable" if offset is None else f"偏移 / offset {offset:+d} 帧 / frames"
    return (
        f"置信度 / confidence {report.get('sync_confidence', 0.0):.2f}, {shift}, "
        f"人脸 / face {100 * report.get('face_coverage', 0.0):.0f}%"
    )


# --- the four formats ---------------------------------------------------------------------------------


def build_delivery(settings: Settings, url: str, event: dict[str, Any], now: float | None = None) -> Delivery:
    """The request for `event` in settings.webhook_format, signed with settings.webhook_secret if set."""
    now = time.time() if now is None else now
    secret = settings.webhook_secret
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": f"koubo/{__version__}"}
    fmt = settings.webhook_format
    if fmt == "wecom":
        # The WeCom group robot has no signing; its key is in the URL.
        return Delivery(url, _json({"msgtype": "markdown", "markdown": {"content": message_markdown(event)}}), headers)
    if fmt == "dingtalk":
        body = {"msgtype": "markdown", "markdown": {"title": message_title(event), "text": message_markdown(event)}}
        if secret:
            timestamp = str(int(now * 1000))
            url = _with_query(url, f"timestamp={timestamp}&sign={dingtalk_sign(secret, timestamp)}")
        return Delivery(url, _json(body), headers)
    if fmt == "feishu":
        body = feishu_card(event)
        if secret:
            timestamp = str(int(now))
            body = {"timestamp": timestamp, "sign": feishu_sign(secret, timestamp), **body}
        return Delivery(url, _json(body), headers)
    body_bytes = _json(event)
    headers["X-Koubo-Event"] = event["event"]
    if secret:
        timestamp = str(int(now))
        headers["X-Koubo-Timestamp"] = timestamp
        headers["X-Koubo-Signature"] = "sha256=" + json_signature(secret, timestamp, body_bytes)
    return Delivery(url, body_bytes, headers)


def json_signature(secret: str, timestamp: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of "<timestamp>.<body>": the timestamp is signed too, so a captured request
    cannot be replayed later under a fresh one."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def dingtalk_sign(secret: str, timestamp_ms: str) -> str:
    """DingTalk's robot signature: HMAC-SHA256 of "<timestamp>\\n<secret>" keyed by the secret,
    base64, then URL-encoded (it goes in the query)."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest).decode("ascii"))


def feishu_sign(secret: str, timestamp_s: str) -> str:
    """Feishu/Lark's bot signature: HMAC-SHA256 keyed by "<timestamp>\\n<secret>" over nothing, base64."""
    digest = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def feishu_card(event: dict[str, Any]) -> dict[str, Any]:
    colour = "green" if event["job"]["status"] == JobStatus.done.value else "red"
    # The title is the card's header; the markdown's bold first line would repeat it.
    text = message_markdown(event).split("\n", 1)[1]
    return {
        "msg_type": "interactive",
        "card": {
            "header": {"title": {"tag": "plain_text", "content": message_title(event)}, "template": colour},
            "elements": [{"tag": "div", "text": {"tag": "lark_md", "content": text}}],
        },
    }


def _json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _with_query(url: str, extra: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))


# --- sending ------------------------------------------------------------------------------------------


def send(delivery: Delivery, timeout: float) -> None:
    """POST `delivery`; raises DeliveryError unless the receiver accepted it within `timeout` seconds."""
    request = urllib.request.Request(delivery.url, data=delivery.body, headers=delivery.headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = response.read(64 * 1024)
    except urllib.error.HTTPError as error:
        raise DeliveryError(f"HTTP {error.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise DeliveryError(str(getattr(error, "reason", error))) from None
    _check_bot_answer(answer)


def _check_bot_answer(answer: bytes) -> None:
    # The bots answer 200 to a refused message too, with the reason in the body.
    try:
        parsed = json.loads(answer)
    except ValueError:
        return
    if not isinstance(parsed, dict):
        return
    for key in ("errcode", "code", "StatusCode"):
        if parsed.get(key) not in (None, 0):
            message = parsed.get("errmsg") or parsed.get("msg") or parsed.get("StatusMessage") or ""
            raise DeliveryError(f"{key} {parsed[key]}: {message}")


class Notifier:
    """Sends the pending notifications whose time has come; `run` polls until told to stop."""

    def __init__(self, settings: Settings, db: Database) -> None:
        if not settings.webhook_url:
            raise ValueError("the notifier needs settings.webhook_url")
        self.settings = settings
        self.url = settings.webhook_url
        self.db = db
        self.links = LinkMaker(settings)

    def run(self, stop: threading.Event) -> None:
        log.info("webhook notifications on (%s format)", self.settings.webhook_format)
        while not stop.is_set():
            try:
                self.deliver_due()
            except Exception:
                # The database may be locked or gone for a moment; the next poll tries again.
                log.exception("webhook: cannot read the pending notifications")
            stop.wait(POLL_S)

    def deliver_due(self, now: datetime | None = None) -> int:
        """One pass: every due notification gets one attempt. Returns how many were attempted."""
        now = now or utcnow()
        self.db.skip_stale_notifications(now - STALE_AFTER)
        lease = timedelta(seconds=self.settings.webhook_timeout + CLAIM_MARGIN_S)
        attempted = 0
        for job_id, attempts in self.db.due_notifications(now, BATCH):
            if self.db.claim_notification(job_id, attempts, now + lease):
                attempted += 1
                self._attempt(job_id, attempts + 1)
        return attempted

    def _attempt(self, job_id: str, attempt: int) -> None:
        job = self.db.get_job(job_id)
        if job is None:
            return  # deleted meanwhile: nothing to tell, nothing to record
        if job.status not in EVENTS:
            # Retried (queued again) or expired before it could be told: the news is out of date.
            self.db.end_notification(job_id, attempt, NotifyState.skipped)
            return
        event = job_event(self.links, job)
        try:
            send(build_delivery(self.settings, self.url, event), self.settings.webhook_timeout)
        except DeliveryError as error:
            self._failed(job_id, attempt, event["event"], str(error))
            return
        self.db.end_notification(job_id, attempt, NotifyState.sent)
        log.info("webhook: %s for job %s sent (attempt %d)", event["event"], job_id, attempt)

    def _failed(self, job_id: str, attempt: int, event: str, reason: str) -> None:
        if attempt >= MAX_ATTEMPTS:
            self.db.end_notification(job_id, attempt, NotifyState.failed)
            log.error("webhook: %s for job %s not delivered after %d attempts: %s", event, job_id, attempt, reason)
            return
        delay = RETRY_DELAYS[attempt - 1]
        self.db.postpone_notification(job_id, attempt, utcnow() + timedelta(seconds=delay))
        log.warning(
            "webhook: %s for job %s failed (%s); attempt %d in %.0f s", event, job_id, reason, attempt + 1, delay
        )


def run_notifier(settings: Settings, stop: threading.Event) -> None:
    """`koubo serve`'s notifier thread, until `stop` is set."""
    db = Database(settings.database_location)
    try:
        Notifier(settings, db).run(stop)
    finally:
        db.close()
