"""Contact sheets of the rendered mouth: 24 consecutive output frames of the mouth region.

    .venv/bin/python bench/contact_sheets.py [--before-code /work/main] [--out /tmp/render-sheets]

For every real template x speech pair in ../shared/media, renders the first seconds of the speech
with koubo and writes `<out>/after/<template>__<speech>.png` (crops at the output's own size, no
scaling, so a flaw is seen as a viewer sees it). With --before-code, the same is rendered by the
koubo found in that folder (e.g. main's checkout) in a subprocess into `<out>/before/`.
Each crop is labelled with its output frame number; the sheet starts where speech is under way.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import cv2
import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "media"
TEMPLATES = ("speaker_map.mp4", "speaker_mpeg4.mp4", "speaker_vfr.mp4", "template_silent_halfbody.mp4")
SPEECHES = ("speech_en_44k.wav", "speech_zh_48k_stereo.wav")
SPEECH_SECONDS = 5.0
FIRST_FRAME = 25  # one second in: speech is under way
COLUMNS, ROWS = 6, 4


def trimmed_speech(source: Path, seconds: float, path: Path) -> Path:
    """The first `seconds` of `source` as 16 kHz mono 16-bit WAV."""
    from koubo.media.audio import load_audio

    samples = load_audio(source).samples[: int(seconds * 16000)]
    pcm = np.round(np.clip(samples, -1, 1) * 32767).astype(np.int16)[None, :]
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=16000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = 16000
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def decoded_frames(path: Path, first: int, count: int) -> np.ndarray:
    frames = []
    with av.open(str(path)) as container:
        for k, frame in enumerate(container.decode(video=0)):
            if k >= first + count:
                break
            if k >= first:
                frames.append(frame.to_ndarray(format="rgb24"))
    return np.stack(frames)


def mouth_box(frames: np.ndarray, fps: float) -> tuple[int, int, int, int]:
    """One box for all frames: around the median mouth, 1.5 eye-distances wide, 1.0 tall."""
    from koubo.face import geometry as geo
    from koubo.face.tracker import track_faces

    track = track_faces(frames, fps=fps)
    lm = track.landmarks[track.present]
    centre = np.median(lm[:, geo.LIPS_OUTER_LOWER + geo.LIPS_OUTER_UPPER, :2].mean(1), axis=0)
    scale = float(np.median(geo.face_scale(lm)))
    h, w = frames.shape[1:3]
    half_w, half_h = 0.75 * scale, 0.5 * scale
    x0, y0 = int(max(0, centre[0] - half_w)), int(max(0, centre[1] - half_h * 0.9))
    return x0, y0, int(min(w, x0 + 2 * half_w)), int(min(h, y0 + 2 * half_h))


def sheet(frames: np.ndarray, box: tuple[int, int, int, int], first: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    tiles = []
    for k, frame in enumerate(frames):
        tile = np.ascontiguousarray(frame[y0:y1, x0:x1])
        cv2.putText(tile, str(first + k), (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1, cv2.LINE_AA)
        tiles.append(np.pad(tile, ((1, 1), (1, 1), (0, 0))))
    while len(tiles) < COLUMNS * ROWS:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[r * COLUMNS : (r + 1) * COLUMNS]) for r in range(ROWS)]
    return np.vstack(rows)


def render_sheets(out: Path, templates: tuple[str, ...] = TEMPLATES, speeches: tuple[str, ...] = SPEECHES) -> list[str]:
    from koubo.config import Settings
    from koubo.pipeline import GenerateOptions, Generator

    out.mkdir(parents=True, exist_ok=True)
    lines = []
    with tempfile.TemporaryDirectory(prefix="koubo-sheets-") as tmp:
        work = Path(tmp)
        gen = Generator(Settings(data_dir=work / "data"))
        for speech_name in speeches:
            speech = trimmed_speech(SHARED / speech_name, SPEECH_SECONDS, work / speech_name)
            for template in templates:
                video = work / f"{Path(template).stem}-{Path(speech_name).stem}.mp4"
                result = gen.generate(speech, SHARED / template, video, GenerateOptions(check=False))
                frames = decoded_frames(video, FIRST_FRAME, COLUMNS * ROWS)
                box = mouth_box(frames, result.fps)
                name = f"{Path(template).stem}__{Path(speech_name).stem}.png"
                picture = sheet(frames, box, FIRST_FRAME)
                cv2.imwrite(str(out / name), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
                render_s = result.timings.get("render", 0.0)
                lines.append(f"  {name}: render {1000 * render_s / result.frames:.1f} ms/frame")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/render-sheets"))
    parser.add_argument("--before-code", type=Path, help="a koubo checkout to render the BEFORE sheets with")
    parser.add_argument("--template", action="append", choices=TEMPLATES, help="only this template (repeatable)")
    parser.add_argument("--speech", action="append", choices=SPEECHES, help="only this speech (repeatable)")
    parser.add_argument("--only", type=Path, help=argparse.SUPPRESS)  # internal: render into this folder only
    args = parser.parse_args()
    chosen = tuple(args.template or TEMPLATES), tuple(args.speech or SPEECHES)
    if not SHARED.exists():
        sys.exit(f"{SHARED} is missing: contact sheets need the real media")
    if args.only:
        print("\n".join(render_sheets(args.only, *chosen)))
        return
    if args.before_code:
        env = {**os.environ, "PYTHONPATH": str(args.before_code)}
        cmd = [sys.executable, __file__, "--only", str(args.out / "before")]
        cmd += [f"--template={t}" for t in chosen[0]] + [f"--speech={s}" for s in chosen[1]]
        subprocess.run(cmd, check=True, env=env, cwd=args.before_code)
    lines = render_sheets(args.out / "after", *chosen)
    print(f"\ncontact sheets in {args.out}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
