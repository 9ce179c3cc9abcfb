"""Back-off after failed logins, per client address: password guessing slows to a crawl.

After `max_failures` failed attempts in a row, an address must wait `base_delay` seconds, twice
that after the next failure, and so on up to `max_delay`; a success clears its record. Only
failures are remembered, and only for so many addresses, so a flood of addresses cannot grow
memory without bound.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# Addresses remembered at most; the one that failed longest ago is forgotten first.
MAX_ADDRESSES = 10_000


@dataclass
class _Record:
    failures: int
    blocked_until: float


class LoginThrottle:
    def __init__(
        self,
        max_failures: int,
        base_delay: float,
        max_delay: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def retry_after(self, address: str) -> float | None:
        """Seconds `address` must still wait before its next attempt is even checked; None: go ahead."""
        record = self._records.get(address)
        if record is None:
            return None
        wait = record.blocked_until - self._clock()
        return wait if wait > 0 else None

    def failed(self, address: str) -> None:
        record = self._records.pop(address, None) or _Record(0, 0.0)
        record.failures += 1
        beyond = record.failures - self.max_failures
        if beyond >= 0:
            # 2**beyond grows without bound; the cap is applied before it can overflow a float.
            delay = self.base_delay * 2.0 ** min(beyond, 64)
            record.blocked_until = self._clock() + min(delay, self.max_delay)
        self._records[address] = record
        while len(self._records) > MAX_ADDRESSES:
            self._records.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._records.pop(address, None)
