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
import sys

from koubo.config import load_settings


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
    from koubo.jobs.consumer import run_consumer

    run_consumer(load_settings())
    # Stopped and written: the interpreter's last garbage collections would add seconds to a stop.
    gc.freeze()
    return 0


if __name__ == "__main__":
    sys.exit(main())
