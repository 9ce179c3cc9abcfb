"""The file names koubo gives the videos it makes, and which names a direct link can carry.

Both rules live here, side by side, so that every name koubo generates is one a link can serve:
an output once named `主播__take1..final.mp4` got a signed link that always answered 400.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

# Characters no output file name may hold on any common file system.
_NOT_IN_FILE_NAMES = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')
_DOT_RUNS = re.compile(r"\.{2,}")
_STEM_BYTES = 80
# A link's name is one path segment that cannot climb out of its folder, in any spelling.
_NOT_IN_LINK_NAMES = ("..", "/", "\\", "\x00")
_LINK_NAME_BYTES = 255


def is_link_name(name: str) -> bool:
    """Whether `name` can be a job id or file name in a direct link's path."""
    if not name or any(part in name for part in _NOT_IN_LINK_NAMES):
        return False
    try:
        return len(name.encode("utf-8")) <= _LINK_NAME_BYTES
    except UnicodeEncodeError:  # a lone surrogate: no URL spells it
        return False


def output_name(audio_name: str, video_name: str, index: int | None = None) -> str:
    """The output's file name, <video stem>__<audio stem>.mp4, numbered within a batch.

    Safe on any file system and always a valid link name (`is_link_name`)."""
    stem = f"{_file_stem(video_name, 'video')}__{_file_stem(audio_name, 'audio')}"
    return f"{stem}.mp4" if index is None else f"{index + 1:03d}_{stem}.mp4"


def _file_stem(name: str, fallback: str) -> str:
    stem = PurePosixPath(name.replace("\\", "/")).stem
    # A lone surrogate has no UTF-8 form: dropped first, so that no ".." closes up where it was.
    stem = stem.encode("utf-8", errors="ignore").decode("utf-8")
    stem = _DOT_RUNS.sub(".", _NOT_IN_FILE_NAMES.sub("_", stem)).strip(" .")
    # Cut at a byte count, never inside a character.
    stem = stem.encode("utf-8")[:_STEM_BYTES].decode("utf-8", errors="ignore").rstrip(" .")
    return stem or fallback
