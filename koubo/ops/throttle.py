"""Back-off for password guessing: after a few failed logins from one address, that address waits,
twice as long after each further failure, before its next guess is even checked.

Used by every server that checks a password (the web app, the link server's listing), each with
its own instance. In memory: a restart forgets, which costs a guesser one short run of free tries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from koubo.errors import KouboError

FREE_FAILURES = 5
FIRST_DELAY = 1.0
MAX_DELAY = 300.0
# Addresses remembered at most: past it the ones whose wait is over are forgotten first.
_MAX_ADDRESSES = 10_000


@dataclass
class _Record:
    failures: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0


class LoginThrottle:
    """Failed logins per client address, and how long each must wait before trying again."""

    def __init__(
        self,
        free_failures: int = FREE_FAILURES,
        first_delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free_failures, self.first_delay, self.max_delay = free_failures, first_delay, max_delay
        self._clock = clock
        self._records: dict[str, _Record] = {}
        self._lock = threading.Lock()

    def retry_after(self, address: str) -> float:
        """Seconds `address` must still wait before a password is checked for it; 0 when it may try."""
        with self._lock:
            record = self._records.get(address)
            return max(0.0, record.locked_until - self._clock()) if record else 0.0

    def failed(self, address: str) -> None:
        """A wrong password from `address`: past the free failures it waits, doubling each time."""
        now = self._clock()
        with self._lock:
            record = self._records.get(address)
            # A failure long after the last one starts the count again: a typo a day is not an attack.
            if record is None or now - record.last_failure > 2 * self.max_delay:
                record = self._records[address] = _Record()
                self._forget_some(now)
            record.failures += 1
            record.last_failure = now
            beyond = record.failures - self.free_failures
            if beyond > 0:
                record.locked_until = now + min(self.max_delay, self.first_delay * 2 ** min(beyond - 1, 32))

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._records.pop(address, None)

    def _forget_some(self, now: float) -> None:
        if len(self._records) <= _MAX_ADDRESSES:
            return
        for address in [a for a, r in self._records.items() if r.locked_until <= now]:
            del self._records[address]
        while len(self._records) > _MAX_ADDRESSES:  # all still waiting: the oldest go
            del self._records[next(iter(self._records))]


def too_many_attempts(seconds: float) -> KouboError:
    wait = max(1, round(seconds))
    return KouboError(
        "too_many_attempts",
        f"Too many wrong passwords from this address; try again in {wait} s.",
        f"此地址输错密码的次数过多；请在 {wait} 秒后重试。",
    )
