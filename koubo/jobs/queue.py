"""`python -m koubo.jobs.queue`: the job queue's consumer, as `koubo worker` runs it.

The queue's parts live in their own modules: koubo.jobs.huey_queue (messages), supervisor (claims
a job and watches it), generation_process and child (the warm generation process, both sides),
recovery, consumer. `--generation-process` (internal) is how a worker starts its generation process.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

Handler = Callable[[int, FrameType | None], None]


class HeldSignals:
    """SIGINT and SIGTERM that arrive while the consumer starts (imports, the database, forking
    its workers take seconds) are held and handed to Huey's consumer once it exists: a stop asked
    for at any moment ends in a clean exit, never a process killed by the signal's default action."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._target: Handler | None = None
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._target is None:
            self.received.append(signum)
        else:
            self._target(signum, frame)

    def hand_to(self, target: Handler) -> bool:
        """From now on signals go to `target` (Huey installs its own handlers once its workers are
        forked; until then this one passes signals on). Returns whether a stop was held: then there
        is nothing to start."""
        self._target = target
        held = bool(self.received)
        while self.received:
            target(self.received.pop(0), None)
        return held


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m koubo.jobs.queue",
        description="Run koubo's job queue consumer (settings: koubo.toml and KOUBO_* variables).",
    )
    parser.add_argument("--generation-process", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--results-fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.generation_process:
        from koubo.jobs.child import run_generation_process

        run_generation_process(args.results_fd)
        logging.shutdown()
        # Everything is written. Skip the interpreter's teardown: unwinding MediaPipe takes most of
        # a second, and the worker waits for this process to exit before it starts its replacement.
        os._exit(0)
    held = HeldSignals()  # first: everything below takes seconds on a busy machine
    from koubo.config import load_settings
    from koubo.jobs.consumer import run_consumer

    run_consumer(load_settings(), held.hand_to)
    # Stopped and written: the interpreter's last garbage collections would add seconds to a stop.
    gc.freeze()
    return 0


if __name__ == "__main__":
    sys.exit(main())
