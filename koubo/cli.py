"""The `koubo` command line: generate, batch, check, demo, export-wav2lip, serve, logs, links, link."""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import get_args

from pydantic import ValidationError

from koubo import errors
from koubo.engines import ENGINES
from koubo.errors import KouboError
from koubo.options import (
    CRF_MAX,
    CRF_MIN,
    EXPRESSIVENESS_MAX,
    EXPRESSIVENESS_MIN,
    PRESETS,
    DenoiseMode,
    GenerateOptions,
    batch_pairs,
)

os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ logging would drown the progress bars
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The commands that load MediaPipe's models: MediaPipe's notices are hidden from their stderr.
MODEL_COMMANDS = frozenset({"generate", "batch", "check", "demo"})


def _options(args: argparse.Namespace) -> GenerateOptions:
    """The options asked for on the command line, checked against their ranges (koubo.options)."""
    try:
        return GenerateOptions(
            engine=args.engine,
            expressiveness=args.expressiveness,
            crf=args.crf,
            preset=args.preset,
            denoise=args.denoise,
            check=not args.no_check,
        )
    except ValidationError as exc:
        raise errors.invalid_params(*errors.validation_messages(exc.errors())) from None


def _input_files(*paths: Path) -> None:
    """Each file named exists and is a file: said at once, before any model loads."""
    for path in paths:
        if not path.exists():
            raise errors.no_such_file(str(path))
        if not path.is_file():
            raise errors.not_a_file(str(path))


def _output_folder(path: Path) -> None:
    """`path` is a folder or can be made one: no file stands where it or a folder above it would be."""
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                raise errors.output_folder_is_file(str(folder))
            return


def _output_file(path: Path) -> None:
    """`path` can be written as a file: it is no folder, and its folder is one or can be made one."""
    if path.is_dir():
        raise errors.output_is_folder(str(path), str(path / "koubo.mp4"))
    _output_folder(path.parent)


class _Bars:
    """One tqdm bar per stage of the current item, on stderr."""

    def __init__(self, label: str = "") -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.label = label
        self.stage: str | None = None
        self.bar = None

    def __call__(self, stage: str, fraction: float) -> None:
        if stage != self.stage:
            self.close()
            if stage == "done":
                return
            self.stage = stage
            self.bar = self._tqdm(
                total=100, desc=f"{self.label}{stage:>8}", unit="%", leave=False, file=sys.stderr, disable=None
            )
        if self.bar is not None:
            self.bar.n = round(100 * fraction)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.stage = None


def _print_result(result, as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                {
                    "output": str(result.output),
                    "duration": result.duration,
                    "frames": result.frames,
                    "fps": result.fps,
                    "engine": result.engine,
                    "timings": result.timings,
                    "wall_seconds": result.wall_seconds,
                    "cached": result.cached,
                    "report": result.report.to_dict() if result.report else None,
                },
                ensure_ascii=False,
            )
        )
        return
    rtf = result.wall_seconds / result.duration if result.duration else 0.0
    print(f"{result.output}  ({result.duration:.2f} s, {result.frames} frames, RTF {rtf:.2f})")
    if result.report:
        print(f"  {result.report.describe()}")


def cmd_generate(args: argparse.Namespace) -> int:
    options = _options(args)
    _input_files(args.audio, args.video)
    _output_file(args.output)
    from koubo.pipeline import Generator

    bars = _Bars()
    try:
        result = Generator().generate(args.audio, args.video, args.output, options, progress=bars)
    finally:
        bars.close()
    _print_result(result, args.json)
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    batch_pairs(args.audio, args.video)  # refused before any model loads
    options = _options(args)
    _input_files(*args.audio, *args.video)
    _output_folder(args.output)
    from koubo.pipeline import Generator

    bars = _Bars()
    current = {"item": -1}

    def progress(index: int, stage: str, fraction: float) -> None:
        if index != current["item"]:
            bars.close()
            current["item"] = index
            bars.label = f"[{index + 1}] "
        bars(stage, fraction)

    try:
        results = Generator().batch(args.audio, args.video, args.output, options, progress=progress)
    finally:
        bars.close()
    failed = 0
    for result in results:
        if isinstance(result, KouboError):
            failed += 1
            print(f"FAILED: {result}")
        else:
            _print_result(result, args.json)
    return 1 if failed else 0


def cmd_check(args: argparse.Namespace) -> int:
    _input_files(args.video)
    from koubo.quality import check_video

    with tempfile.TemporaryDirectory(prefix="koubo-check-") as work:
        report = check_video(args.video, work_dir=Path(work))
    print(json.dumps(report.to_dict()) if args.json else report.describe())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Make sample inputs (a real face photo, synthesized speech) and generate from them."""
    from koubo import samples
    from koubo.config import load_settings

    out_dir = Path(args.output) if args.output else load_settings().data_dir / "demo"
    _output_folder(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    audio = samples.write_sample_speech(out_dir / "sample_speech.wav")
    video = samples.write_sample_template(out_dir / "sample_template.mp4")
    print(f"sample inputs: {audio}, {video}")
    args.audio, args.video, args.output = audio, video, out_dir / "demo.mp4"
    return cmd_generate(args)


def cmd_export_wav2lip(args: argparse.Namespace) -> int:
    """Export the Wav2Lip checkpoint to ONNX next to it, where the engine finds and uses it when faster."""
    from koubo.config import load_settings
    from koubo.engines.checkpoint import checkpoint_path, require_checkpoint, torch_missing

    try:
        from koubo.engines.wav2lip_onnx import export_onnx
    except ImportError:
        raise torch_missing() from None
    checkpoint = require_checkpoint(args.checkpoint or checkpoint_path(load_settings()))
    try:
        written = export_onnx(checkpoint, args.output)
    except ImportError:
        raise torch_missing() from None
    print(written)
    return 0


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def cmd_serve(args: argparse.Namespace) -> int:
    """The web app (API + UI), the job consumer and the link server, until Ctrl-C or SIGTERM."""
    from koubo.config import load_settings
    from koubo.serve import serve

    overrides = {name: value for name in ("host", "port") if (value := getattr(args, name)) is not None}
    serve(load_settings(**overrides), with_worker=not args.no_worker, with_links=not args.no_links)
    # Everything has stopped and the log is written. The interpreter's last garbage collections over
    # the web app's millions of objects (Gradio's above all) took seconds of every stop or restart;
    # frozen objects are skipped.
    gc.freeze()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """A job consumer on this machine, the same one `koubo serve` starts, until Ctrl-C or SIGTERM."""
    from koubo.config import load_settings
    from koubo.jobs.consumer import run_consumer

    options = {"max_concurrent": args.concurrency, "device": args.device, "worker_engines": args.engines}
    options["worker_name"] = args.name
    run_consumer(load_settings(**{key: value for key, value in options.items() if value is not None}))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    """Print the log's last lines; with -f keep printing new ones as they are written, like tail -f."""
    from koubo.config import load_settings
    from koubo.logs import LogFollower

    follower = LogFollower(load_settings().log_path)
    for line in follower.tail(args.lines):
        print(line)
    while args.follow:
        sys.stdout.flush()
        time.sleep(0.5)
        for line in follower.read_new():
            print(line)
    return 0


def cmd_links(args: argparse.Namespace) -> int:
    """The direct-link server, until Ctrl-C or SIGTERM."""
    from koubo.config import load_settings
    from koubo.links.server import run_links

    overrides = {name: value for name in ("host", "links_port") if (value := getattr(args, name)) is not None}
    run_links(load_settings(**overrides))
    gc.freeze()  # as in cmd_serve: a quick exit once stopped
    return 0


def cmd_link(args: argparse.Namespace) -> int:
    """Print a signed download URL for a finished job."""
    from koubo.config import load_settings
    from koubo.jobs.service import JobService
    from koubo.links.signing import signed_link

    settings = load_settings()
    service = JobService(settings)
    try:
        _, name = service.output_file(args.job)
    finally:
        service.close()
    print(signed_link(settings, args.job, name, args.expires).url)
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    """Apply the retention policy once (for cron): expire old videos, sweep stale temporary files."""
    from koubo.config import load_settings
    from koubo.jobs.store import Database
    from koubo.ops.retention import cleanup, retention_configured

    overrides = {"retention_days": args.days, "retention_max_bytes": args.max_size}
    settings = load_settings(**{name: value for name, value in overrides.items() if value is not None})
    if not retention_configured(settings):
        print("retention is not configured (retention_days, retention_max_bytes): only temporary files are swept")
    db = Database(settings.database_location)
    try:
        report = cleanup(settings, db, dry_run=args.dry_run)
    finally:
        db.close()
    for removal in report.removals:
        what = f"job {removal.job_id}" if removal.job_id else removal.reason
        print(f"{'would delete' if args.dry_run else 'deleted'} {removal.path} ({removal.size} bytes, {what})")
    print(report.summary())
    return 0


def _size(text: str) -> int:
    from koubo.config import parse_size

    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def cmd_link_keys(args: argparse.Namespace) -> int:
    """List the link keys; --rotate adds one that signs from now on; --retire revokes one."""
    from datetime import datetime

    from koubo.config import load_settings
    from koubo.links.signing import Keyring

    keyring = Keyring(load_settings().data_dir)
    if args.rotate:
        print(f"new signing key: {keyring.add_key()} (links signed before keep working)")
    if args.retire:
        keyring.retire(args.retire)
        print(f"retired {args.retire}: every link it signed now answers 403")
    keys = keyring.described()
    for number, (kid, created) in enumerate(keys, start=1):
        when = datetime.fromtimestamp(created).isoformat(sep=" ", timespec="seconds")
        print(f"{kid}  created {when}" + ("  (signs new links)" if number == len(keys) else ""))
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 = never expires)")
    return value


def _add_generate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=ENGINES, help="lip-sync engine (default: the configured one, 'classic')")
    p.add_argument(
        "--expressiveness",
        type=float,
        help=f"mouth movement scale, {EXPRESSIVENESS_MIN:g}..{EXPRESSIVENESS_MAX:g} (default: setting, 1)",
    )
    p.add_argument(
        "--denoise",
        choices=get_args(DenoiseMode),
        help="background noise out of the speech: for the mouth only, or for the sound track too (default: setting)",
    )
    p.add_argument(
        "--crf", type=int, help=f"x264 quality, {CRF_MIN}..{CRF_MAX}, lower is better (default: setting, 18)"
    )
    p.add_argument("--preset", help=f"x264 speed preset: {', '.join(PRESETS)} (default: setting, veryfast)")
    p.add_argument("--no-check", action="store_true", help="skip the quality report")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="koubo", description="koubo 口播: lip-synced presenter videos")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="one audio + one template video -> one MP4")
    p.add_argument("-a", "--audio", required=True, type=Path)
    p.add_argument("-v", "--video", required=True, type=Path)
    p.add_argument("-o", "--output", required=True, type=Path)
    _add_generate_options(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("batch", help="one audio × many templates, or many audios × one template")
    p.add_argument("-a", "--audio", required=True, nargs="+", type=Path)
    p.add_argument("-v", "--video", required=True, nargs="+", type=Path)
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    _add_generate_options(p)
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("check", help="measure lip-sync quality of any video with audio")
    p.add_argument("video", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("demo", help="generate a sample video from built-in sample inputs")
    p.add_argument("-o", "--output", type=Path, help="folder for the sample inputs and the result")
    _add_generate_options(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("export-wav2lip", help="export the Wav2Lip checkpoint to ONNX for onnxruntime")
    p.add_argument("--checkpoint", type=Path, help="default: the configured one (<data_dir>/models/wav2lip_gan.pth)")
    p.add_argument("--output", type=Path, help="default: the checkpoint's path with .onnx")
    p.set_defaults(func=cmd_export_wav2lip)

    p = sub.add_parser("serve", help="run the web app (API + browser UI), the job worker and the link server")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1, from the settings)")
    p.add_argument("--port", type=_port, help="port to listen on (default 7860, from the settings)")
    p.add_argument("--no-worker", action="store_true", help="web app only; run the consumer elsewhere")
    p.add_argument("--no-links", action="store_true", help="without the direct-link server (run `koubo links` alone)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "worker", help="run jobs on this machine: a consumer of the configured queue (Redis) and database"
    )
    p.add_argument("--concurrency", type=int, help="jobs run at the same time (default 1, max_concurrent)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="device it offers (default auto)")
    p.add_argument("--engines", help="engines it offers, comma-separated (default all: " + ",".join(ENGINES) + ")")
    p.add_argument("--name", help="its name in the workers panel (default host:pid); unique per worker")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("logs", help="print the service log")
    p.add_argument("-n", "--lines", type=int, default=50, help="how many of the last lines (default 50)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines as they are written")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("link-keys", help="list, rotate or retire the keys that sign direct links")
    p.add_argument("--rotate", action="store_true", help="add a key that signs new links; old links keep working")
    p.add_argument("--retire", metavar="KID", help="remove a key: every link it signed stops working")
    p.set_defaults(func=cmd_link_keys)

    p = sub.add_parser("links", help="run the direct-link server (signed download URLs)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1, from the settings)")
    p.add_argument("--port", dest="links_port", type=_port, help="port to listen on (default 7861)")
    p.set_defaults(func=cmd_links)

    p = sub.add_parser("link", help="print a signed download URL for a finished job")
    p.add_argument("job", help="the job id")
    p.add_argument(
        "--expires", type=_seconds, help="seconds the link lasts (default 7 days, from the settings; 0 = never)"
    )
    p.set_defaults(func=cmd_link)

    p = sub.add_parser("cleanup", help="delete videos past the retention policy and stale temporary files (for cron)")
    p.add_argument("--dry-run", action="store_true", help="only print what would be deleted")
    p.add_argument("--days", type=float, help="delete videos finished more than N days ago (default: retention_days)")
    p.add_argument(
        "--max-size",
        type=_size,
        help="keep the newest videos within this total, e.g. 50G (default: retention_max_bytes)",
    )
    p.set_defaults(func=cmd_cleanup)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.func
    from koubo.logs import native_notices_hidden

    try:
        with native_notices_hidden() if args.command in MODEL_COMMANDS else nullcontext():
            return handler(args)
    except KouboError as error:
        print(f"koubo: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("koubo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
