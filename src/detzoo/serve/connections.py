"""The connection cap: how many connections the service serves at once, sized from the process's open-file
limit, and the registry every connection reports to (``protocol.GuardedH11Protocol``).

Written by hand because neither uvicorn nor h11 bounds what an idle client holds. uvicorn's
``limit_concurrency`` answers 503 only once a request's headers have arrived, counts the stalled connections
it should protect against, answers ``/healthz`` 503 too, and never stops accepting: a thousand silent sockets
still reach the open-file limit, after which asyncio stops accepting for a second at a time and the service is
unreachable (issue 19). Here:

- every accepted connection counts until its socket is really closed; past ``ConnectionLimits.sockets`` a new
  one is answered 503 before its request is read and closed at once, so the open-file limit is never reached;
- at ``max_connections``, the connection whose client has been silent longest (at least ``EVICT_SILENCE_S``:
  a stalled upload, a slow header, an idle keep-alive, a client not reading its answer) is closed - 408 where
  HTTP allows - to make room, so stalled connections cannot lock honest clients out;
- when every served connection is busy with a real request, new ones go to a small overflow pool, where the
  health probes are answered as usual and every other request gets 503 with ``Retry-After``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..common.errors import ConfigError

if TYPE_CHECKING:
    from .metrics import Metrics
    from .protocol import GuardedH11Protocol

FILES_PER_CONNECTION = 1  # besides its socket: the one file a served response may stream (the page's font)
RESERVED_FDS = 64  # besides those open at start: listening socket, event loop, files libraries open later
OVERFLOW_SLOTS = 32  # connections past the cap that only get 503 (or a health probe's answer)
EVICT_SILENCE_S = 1.0  # a client silent this long when the server is full is closed to make room
LARGEST_BACKLOG = 2048  # uvicorn's default


def open_file_limit() -> int:
    """The soft RLIMIT_NOFILE of this process (what `ulimit -n` shows), or 1 << 20 where unlimited."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


def open_files() -> int:
    """File descriptors this process has open now (Linux: /proc/self/fd; elsewhere a generous guess)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 32


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int  # connections served at once
    overflow: int  # more connections, answered 503 (the health probes as usual)
    backlog: int  # the listen backlog: the most sockets asyncio accepts in one go, before the protocol sees one
    open_file_limit: int

    @property
    def sockets(self) -> int:
        """Sockets open at most: served, overflow, and one accept burst's worth being closed (each connection
        of a burst may evict one before the first evicted socket is closed, one loop iteration later)."""
        return self.max_connections + self.overflow + self.backlog


def files_needed(max_connections: int, overflow: int, backlog: int, files_open: int) -> int:
    """Open files at most: those open at start, the reserve, a burst of accepted sockets not yet seen, the
    sockets (``ConnectionLimits.sockets``) and a file per served connection."""
    return files_open + RESERVED_FDS + backlog + (max_connections + overflow + backlog) + \
        FILES_PER_CONNECTION * max_connections


def connection_limits(max_connections: int | None = None, file_limit: int | None = None,
                      files_open: int | None = None) -> ConnectionLimits:
    """The cap and its companions for this process, within its open-file limit (``files_needed``).
    ``max_connections=None`` takes the most that fits; a larger explicit value is refused in one line."""
    file_limit = open_file_limit() if file_limit is None else file_limit
    files_open = open_files() if files_open is None else files_open
    backlog = min(LARGEST_BACKLOG, max(16, file_limit // 16))
    if max_connections is None:
        spare = file_limit - files_needed(0, 0, backlog, files_open)
        overflow = min(OVERFLOW_SLOTS, max(1, spare // 16))
        max_connections = (spare - overflow) // (1 + FILES_PER_CONNECTION)
    else:
        overflow = min(OVERFLOW_SLOTS, max(4, max_connections // 8))
    needed = files_needed(max_connections, overflow, backlog, files_open)
    if max_connections < 1 or needed > file_limit:
        raise ConfigError(f"{max(max_connections, 1)} connections need an open-file limit of at least "
                          f"{files_needed(max(max_connections, 1), overflow, backlog, files_open)} (this process "
                          f"has {file_limit}; {files_open} files open): raise it (ulimit -n) or lower "
                          "--max-connections")
    return ConnectionLimits(max_connections, overflow, backlog, file_limit)


class ConnectionGuard:
    """Who is connected, in two pools ordered by the time of their client's last progress (oldest first):
    ``served`` (at most ``max_connections``) and ``overflow``. ``total`` counts every socket from accept to
    close, including connections being closed (in no pool), so it bounds the sockets open."""

    def __init__(self, limits: ConnectionLimits, metrics: Metrics | None = None):
        self.limits = limits
        self.metrics = metrics
        self.served: OrderedDict[GuardedH11Protocol, None] = OrderedDict()
        self.overflow: OrderedDict[GuardedH11Protocol, None] = OrderedDict()
        self.total = 0

    def admit(self, connection: GuardedH11Protocol, now: float) -> str | None:
        """'served', 'overflow', or None: close it at once (past the hard limit)."""
        self.total += 1
        self._gauge()
        limits = self.limits
        if self.total > limits.sockets:
            self.count_refused("accept")
            return None
        for name, pool, size in (("served", self.served, limits.max_connections),
                                 ("overflow", self.overflow, limits.overflow)):
            if len(pool) < size or self._evict(pool, now):
                pool[connection] = None
                return name
        self.count_refused("accept")
        return None

    def _evict(self, pool: OrderedDict, now: float) -> bool:
        """Close the member whose client has been silent longest, if it is waiting on its client and has been
        silent at least EVICT_SILENCE_S. Members busy with a request (the app computing) are passed over."""
        for member in pool:
            if now - member.last_progress < EVICT_SILENCE_S:
                return False  # every later one has made progress more recently still
            if member.waiting_on_client():
                break
        else:
            return False
        if self.metrics is not None:
            self.metrics.connections_evicted.inc()
        member.stop_waiting("evicted")  # leaves its pool through release()
        return True

    def progressed(self, connection: GuardedH11Protocol) -> None:
        for pool in (self.served, self.overflow):
            if connection in pool:
                pool.move_to_end(connection)
                return

    def release(self, connection: GuardedH11Protocol) -> None:
        """It is being closed: its place in a pool is free (its socket still counts until ``closed``)."""
        self.served.pop(connection, None)
        self.overflow.pop(connection, None)

    def closed(self, connection: GuardedH11Protocol) -> None:
        self.release(connection)
        self.total -= 1
        self._gauge()

    def count_refused(self, how: str) -> None:
        if self.metrics is not None:
            self.metrics.connections_refused.labels(how).inc()

    def count_timeout(self, phase: str) -> None:
        if self.metrics is not None:
            self.metrics.request_timeouts.labels(phase).inc()

    def count_malformed(self, status: int) -> None:
        if self.metrics is not None:
            self.metrics.malformed_requests.labels(str(status)).inc()

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.connections_open.set(self.total)
