"""Quantities as people read them: byte sizes in the binary units file managers show.

Below the web UI and the link server's listing, which both show a video's size.
"""

from __future__ import annotations


def human_size(size: int | None) -> str:
    if size is None:
        return ""
    value, unit = float(size), "B"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            break
        value /= 1024
    return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
