"""A file's bytes to a client's socket by sendfile() in a thread of its own, on descriptors it owns.

The event loop closes a connection's socket the moment it sees the client go (an abort, a reset, a
half-close), and the kernel hands that descriptor number to the next accept() or open() at once:
another viewer's socket, or SQLite's koubo.db-wal. A thread still calling sendfile() on the bare
number then sends one viewer's video to another, or writes it into the database. So a transfer
works on duplicates made in the loop's thread (where the loop cannot close the original at the
same moment) and closes them itself; the loop never learns their numbers. Stopping a transfer
from outside is a shutdown() of the connection, which wakes the thread without freeing anything.

Why a thread at all: asyncio's loop.sendfile() re-registers the socket with epoll after every
call and wakes the event loop each time; on one fast stream that costs a quarter of nginx's
throughput (bench/links.py). Here each wait is one poll() and the loop is not involved.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import threading
from collections.abc import Callable
from typing import IO

# POLLNVAL cannot happen on a descriptor the transfer owns; it is handled anyway, never retried.
_GONE = select.POLLERR | select.POLLHUP | select.POLLNVAL
_GONE_ERRNOS = frozenset({errno.EBADF, errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN})


class ClientGone(ConnectionResetError):
    """The client went away, stopped reading, or the transfer was stopped: the connection is done."""


class Transfer:
    """`count` bytes of a file from `offset` to a connected socket, sent by `run()` in a worker thread.

    Create it in the event loop's thread (it duplicates both descriptors there), run it exactly once
    in another thread, and call `stop()` from the loop if the request is abandoned. Whoever ends up
    last holding the duplicates closes them: `run()` when it ran, `stop()` when it never will.
    """

    def __init__(
        self,
        sock: socket.socket,
        source: IO[bytes],
        offset: int,
        count: int,
        stall_seconds: float,
        on_sent: Callable[[int], None] = lambda count: None,
    ) -> None:
        self.offset, self.count, self.stall_seconds, self.on_sent = offset, count, stall_seconds, on_sent
        self._sock = sock.dup()
        try:
            self._file_fd = os.dup(source.fileno())
        except OSError:
            self._sock.close()
            raise
        self._lock = threading.Lock()
        self._started = False
        self._closed = False

    def run(self) -> int:
        """Send; returns the bytes sent (all of them). Raises ClientGone, or OSError on a file error."""
        with self._lock:
            if self._closed:
                raise ClientGone("the transfer was stopped before it started")
            self._started = True
        try:
            return self._send()
        finally:
            with self._lock:
                self._closed = True
                self._sock.close()
                os.close(self._file_fd)

    def stop(self) -> None:
        """Make `run()` end soon (or never start); safe from any thread, at any time, more than once."""
        with self._lock:
            if self._closed:
                return
            if not self._started:
                self._closed = True
                self._sock.close()
                os.close(self._file_fd)
                return
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already disconnected: the thread sees that by itself

    def _send(self) -> int:
        sock_fd = self._sock.fileno()
        poller = select.poll()
        poller.register(sock_fd, select.POLLOUT)
        offset, end = self.offset, self.offset + self.count
        while offset < end:
            try:
                sent = os.sendfile(sock_fd, self._file_fd, offset, end - offset)
            except BlockingIOError:
                sent = None
            except OSError as error:
                if error.errno in _GONE_ERRNOS:
                    raise ClientGone(f"the client went away ({errno.errorcode.get(error.errno, error.errno)})") from None
                raise
            if sent == 0:
                raise OSError(errno.EIO, "the file ended before the announced length")
            if sent is not None:
                offset += sent
                self.on_sent(sent)
                continue
            events = poller.poll(self.stall_seconds * 1000)
            if not events:
                raise ClientGone(f"the client took nothing for {self.stall_seconds:.0f} s")
            if events[0][1] & _GONE:
                raise ClientGone("the client went away")
        return self.count
