"""Process-wide tuning and what differs between platforms, in one place.

Nothing here runs at import: the server's start-up calls what it needs.
"""

import select
import socket
import sys
import threading
from typing import Optional

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
    one socket, which has no limit on the descriptor's value there.
    """

    __slots__ = ("sock", "poller")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.poller = None
        if hasattr(select, "poll"):
            self.poller = select.poll()
            self.poller.register(sock, select.POLLIN)

    def wait(self, timeout: Optional[float] = None) -> None:
        if self.poller is not None:
            self.poller.poll(None if timeout is None else timeout * 1000)
        else:
            select.select([self.sock], [], [self.sock], timeout)
