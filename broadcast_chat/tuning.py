"""Process-wide tuning and what differs between platforms, in one place.

Nothing here runs at import: the server's start-up calls what it needs.
"""

import select
import selectors
import socket
import sys
import threading
import time
from typing import Callable, Optional

THREAD_STACK = 512 * 1024   # a handler thread's stack: it never recurses deeply


def raise_file_limit() -> int:
    """Each client is a file descriptor: allow as many as the system lets
    us. Returns the limit now in force (0 where it cannot be known)."""
    try:
        import resource
    except ImportError:     # Windows: no such limit to raise
        return 0
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ValueError, OSError):
        return 0


def small_thread_stacks() -> None:
    threading.stack_size(THREAD_STACK)


class SwitchInterval:
    """The GIL switch interval for the room's size.

    A thread waiting for the GIL wakes every switch interval. With thousands
    of reader threads woken at once (a burst of lines) the default 5 ms made
    those wake-ups cost more than the work; in a small room the default
    gives lower latency. Called with the room's size after each change.
    """

    large_room = 1000
    large_interval = 0.05

    def __init__(self) -> None:
        self.small_interval = sys.getswitchinterval()
        self.large = False

    def __call__(self, size: int) -> None:
        if not self.large and size >= self.large_room:
            self.large = True
            sys.setswitchinterval(self.large_interval)
        elif self.large and size <= self.large_room // 2:
            self.large = False
            sys.setswitchinterval(self.small_interval)


def size_tuning() -> Callable[[int], None]:
    """What the room calls with its size after each change."""
    switch = SwitchInterval()

    def on_size(size: int) -> None:
        switch(size)
        ReadWaiter.room_size(size)
    return on_size


def tune_socket(sock: socket.socket) -> None:
    """Keepalive finds peers that vanished without a word; no Nagle delay."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 6)
    except OSError:
        pass


class ReadWaiter:
    """Waits until one non-blocking socket has something to read.

    poll() where the platform has it; elsewhere (Windows) select() on this
    one socket, which has no limit on the descriptor's value there. There a
    shutdown() from another thread does not wake the select() (seen under
    Wine), so it returns after wake_every seconds at most: the caller looks
    whether its member was ended after each wait. In a large room the
    interval grows, so that all readers together wake at most
    wakes_per_second times a second (a thousand readers woken every second
    stalled a server under Wine for more than 30 s).
    """

    __slots__ = ("sock", "poller")

    wake_every = None if hasattr(select, "poll") else 1.0   # type: Optional[float]
    wakes_per_second = 250

    @classmethod
    def room_size(cls, size: int) -> None:
        """Called with the room's size after each change."""
        if cls.wake_every is not None:
            cls.wake_every = max(1.0, size / cls.wakes_per_second)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.poller = None
        if hasattr(select, "poll"):
            self.poller = select.poll()
            self.poller.register(sock, select.POLLIN)

    def wait(self, timeout: Optional[float] = None) -> None:
        if self.poller is not None:
            self.poller.poll(None if timeout is None else timeout * 1000)
            return
        if timeout is None or (self.wake_every is not None and timeout > self.wake_every):
            timeout = self.wake_every
        try:
            select.select([self.sock], [], [self.sock], timeout)
        except (OSError, ValueError):
            pass    # closed meanwhile: the recv() that follows says so


class ChunkedSelectSelector(selectors.SelectSelector):
    """A SelectSelector for any number of sockets, for Windows.

    Windows' select() takes at most 512 sockets (ValueError past that).
    With more, this looks at them in chunks without waiting, and between
    rounds waits up to `pause` seconds on the first chunk, which holds the
    readers (the wake-up socket): a socket in a later chunk is seen at most
    `pause` seconds late. SelectSelector.select() hands its sets to
    _select(), as it does in CPython 3.4 to 3.13.
    """

    chunk = 500
    pause = 0.01

    def _select(self, r, w, _, timeout=None):
        r, w = list(r), list(w)
        if len(r) + len(w) <= self.chunk:
            return self._select_chunk(r, w, timeout)
        fds = [(fd, True) for fd in r] + [(fd, False) for fd in w]
        chunks = [([fd for fd, reading in part if reading], [fd for fd, reading in part if not reading])
                  for part in (fds[i:i + self.chunk] for i in range(0, len(fds), self.chunk))]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            readable, writable = [], []
            for chunk_r, chunk_w in chunks:
                ready_r, ready_w, _ = self._select_chunk(chunk_r, chunk_w, 0)
                readable += ready_r
                writable += ready_w
            if readable or writable:
                return readable, writable, []
            wait = self.pause
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return [], [], []
            ready_r, ready_w, _ = self._select_chunk(chunks[0][0], chunks[0][1], wait)
            if ready_r or ready_w:
                return ready_r, ready_w, []

    @staticmethod
    def _select_chunk(r, w, timeout):
        if sys.platform == "win32":     # a failed connect shows as an exception there
            r, w, x = select.select(r, w, w, timeout)
            return r, w + x, []
        return select.select(r, w, [], timeout)


def many_socket_selector() -> selectors.BaseSelector:
    """A selector for as many sockets as there are members: the platform's
    best, or where that is select() (Windows), one that is not capped."""
    selector = selectors.DefaultSelector()
    if isinstance(selector, selectors.SelectSelector):
        selector.close()
        return ChunkedSelectSelector()
    return selector
