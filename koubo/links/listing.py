"""The `/downloads/` page: every finished video, newest first, each behind a fresh signed link.

Off unless `links_listing` is set, and then only behind the htpasswd password (the server checks).
"""

from __future__ import annotations

from datetime import datetime
from html import escape

from koubo.config import Settings
from koubo.jobs.service import MAX_OFFSET, JobService, JobStatus, JobView
from koubo.links.signing import Keyring, signed_link
from koubo.naming import is_link_name
from koubo.units import human_size

PAGE_SIZE = 100


def render_listing(settings: Settings, service: JobService, page: int) -> str:
    """The HTML of page `page` (from 1). Blocking: reads the database."""
    # Far past the last job every page is empty; the service takes offsets up to MAX_OFFSET only.
    offset = min((page - 1) * PAGE_SIZE, MAX_OFFSET)
    jobs, total = service.list_jobs(status=JobStatus.done, offset=offset, limit=PAGE_SIZE)
    # The key file is read once a page, not once a row.
    keyring = Keyring(settings.data_dir)
    rows = "\n".join(_row(settings, keyring, job) for job in jobs)
    pages = max(1, -(-total // PAGE_SIZE))
    nav = []
    if page > 1:
        nav.append(f'<a href="?page={page - 1}">← newer / 较新</a>')
    if page < pages:
        nav.append(f'<a href="?page={page + 1}">older / 较早 →</a>')
    return _PAGE.format(total=total, page=page, pages=pages, rows=rows, nav=" · ".join(nav))


def _row(settings: Settings, keyring: Keyring, job: JobView) -> str:
    name = job.output_name or job.id
    # An output named before names were kept linkable is listed, without a link that cannot work.
    shown = escape(name)
    if is_link_name(name):
        shown = f'<a href="{escape(signed_link(settings, job.id, name, keyring=keyring).url)}">{shown}</a>'
    finished = _when(job.finished_at)
    return (
        f"<tr><td>{shown}</td>"
        f'<td class="n">{escape(human_size(job.output_size))}</td><td>{escape(finished)}</td></tr>'
    )


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else ""


_PAGE = """<!doctype html>
<html lang="zh"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>koubo downloads / 下载</title>
<style>
body{{font:15px system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;width:100%}}
td,th{{padding:.35em .8em;border-bottom:1px solid #ddd;text-align:left}}td.n,th.n{{text-align:right;white-space:nowrap}}
a{{color:#0a58ca;text-decoration:none}}a:hover{{text-decoration:underline}}
</style></head><body>
<h1>koubo · 下载 Downloads</h1>
<p>{total} videos, newest first · 共 {total} 个视频，最新在前 · page {page}/{pages}</p>
<table><thead><tr><th>File / 文件</th><th class="n">Size / 大小</th><th>Finished / 完成时间</th></tr></thead>
<tbody>
{rows}
</tbody></table>
<p>{nav}</p>
</body></html>
"""
