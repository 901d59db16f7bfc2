"""The writer: every byte the server sends to a member leaves through here.

Each member has a SendQueue; the Writer thread sends what is queued with
non-blocking writes, so a member that stops reading only fills its own
queue, and past the limit it is dropped. The Writer is also the only one
that closes member sockets, so no write can reach a reused descriptor.

Who may touch what: a SendQueue's fields are guarded by `Writer.lock` (the
room shares it, so that all members see events in one order), except
`unsent` and `watched`, which belong to the Writer thread.
"""

import collections
import selectors
import socket
import ssl
import threading
import time
import traceback
from typing import Callable, Deque, Iterable, List, Optional, Set, Tuple

from . import tuning

Pieces = List[bytes]

class SendQueue:
    """What waits to be sent to one member."""

    __slots__ = ("sock", "group", "transform", "pieces", "queued", "unsent", "scheduled",
                 "lagging", "reason", "retired", "watched", "progress_at")

    @property
    def ended(self) -> bool:
        """Whether the writer ended it or the member left. Read without the
        lock by the member's reader: each field is set once, never reset."""
        return bool(self.reason) or self.retired

    def __init__(self, sock: socket.socket, group: str,
                 transform: Optional[Callable[[Pieces], Pieces]] = None) -> None:
        self.sock = sock
        self.group = group          # what back-pressure counts addresses by
        self.transform = transform  # pieces as they go on the wire (TLS, WebSocket frames)
        self.pieces = collections.deque()   # type: Deque[bytes]
        self.queued = 0             # bytes in pieces
        self.unsent = []            # type: Pieces  what a write did not take
        self.scheduled = False      # in the Writer's hands: ready, being written or watched
        self.lagging = False        # queued past Writer.lag_bytes
        self.reason = ""            # why the writer ended it, if it did
        self.retired = False        # the member left: close once flushed
        self.watched = False        # registered with the selector (Writer thread only)
        self.progress_at = 0.0      # when a send last took bytes (time.monotonic())


class Writer(threading.Thread):
    """One thread that writes every member's socket without blocking."""

    max_write = 256 * 1024      # most bytes handed to one send
    max_pieces = 512            # most pieces handed to one sendmsg
    lag_bytes = 256 * 1024      # a member with more queued than this lags
    lag_wait = 1.0              # longest a reader pauses for lagging members
    stall_timeout = 3.0         # a lagging member that takes nothing this long is too slow
    stall_check = 0.5           # seconds between two looks for stalled members
    has_sendmsg = hasattr(socket.socket, "sendmsg")

    def __init__(self, lock: threading.Lock, queue_limit: int,
                 log: Callable[..., None]) -> None:
        super().__init__(name="writer", daemon=True)
        self.lock = lock
        self.queue_limit = queue_limit
        self.lag_bytes = min(self.lag_bytes, queue_limit // 4)
        self.log = log
        self.selector = tuning.many_socket_selector()
        self.wake_reader, self.wake_writer = socket.socketpair()
        self.wake_reader.setblocking(False)
        self.wake_writer.setblocking(False)
        self.selector.register(self.wake_reader, selectors.EVENT_READ)
        # Guarded by lock:
        self.ready = []             # type: List[SendQueue]
        self.retiring = []          # type: List[SendQueue]
        self.awake = False          # a wake byte is on its way
        self.stopping = False
        self.deadline = 0.0
        self.open_groups = collections.Counter()     # type: collections.Counter
        self.lagging = 0
        self.lagging_queues = set()     # type: Set[SendQueue]
        self.lagging_groups = collections.Counter()  # type: collections.Counter
        self.space = threading.Condition(lock)

    # -- the interface, called with lock held ---------------------------------

    def open(self, sock: socket.socket, group: str,
             transform: Optional[Callable[[Pieces], Pieces]] = None) -> SendQueue:
        """A queue for a member's socket, which must be non-blocking."""
        assert self.lock.locked()
        self.open_groups[group] += 1
        return SendQueue(sock, group, transform)

    def put(self, queue: SendQueue, piece: bytes) -> None:
        """Queue piece for queue's member. Call with lock held."""
        assert self.lock.locked()
        self.put_all((queue,), piece)

    def put_all(self, queues: Iterable[SendQueue], piece: bytes,
                skip: Optional[SendQueue] = None, direct: bool = False) -> None:
        """Queue piece for each of queues but skip: the fan-out of a line,
        so it is written for speed (locals, no call per queue). Call with
        lock held (asserted by the callers, once per fan-out).

        With direct, an idle queue's piece is written at once, by the calling
        thread, under the lock (the Writer thread touches only scheduled
        queues): in a small room this saves a line the hop to the Writer
        thread; in a large one those writes would hold the lock too long.
        """
        direct = direct and not self.stopping
        limit = self.queue_limit
        size = len(piece)
        ready = self.ready
        for queue in queues:
            if queue is skip or queue.reason or queue.retired:
                continue
            # Only a backlog already past the limit is too slow: a member that
            # keeps up takes any one piece, even one larger than the limit (a
            # paste read in one go). Memory stays within limit + one piece.
            if queue.queued > limit:
                self.end(queue, "too slow: send queue over %d bytes" % limit)
                continue
            if not queue.scheduled:
                if direct:
                    failure = self.write(queue, [piece])
                    if failure:
                        self.end(queue, failure)
                    elif queue.unsent:
                        self._schedule(queue)   # the Writer watches it until it drains
                    continue
                queue.scheduled = True
                ready.append(queue)
            queue.pieces.append(piece)
            queue.queued += size
            if queue.queued > self.lag_bytes and not queue.lagging:
                self._lag(queue)
        if ready and not self.awake:
            self._wake()

    def poke(self, queue: SendQueue) -> None:
        """Write queue's socket even with nothing queued (a TLS reply waits)."""
        assert self.lock.locked()
        if not queue.scheduled and not queue.retired:
            self._schedule(queue)

    def end(self, queue: SendQueue, reason: str, goodbye: bytes = b"") -> None:
        """Stop sending to queue's member and make its reader see the end.

        With a goodbye, what is queued stays and the goodbye goes after it,
        before the socket is closed; without, what is queued is dropped.
        """
        assert self.lock.locked()
        if queue.reason or queue.retired:
            return
        queue.reason = reason
        self._unlag(queue)
        # No longer a member that back-pressure counts, though its reader
        # may notice only later (on Windows, at its next wake-up).
        self._uncount(queue)
        if goodbye:
            queue.pieces.append(goodbye)
            queue.queued += len(goodbye)
            if not queue.scheduled:
                self._schedule(queue)
            how = socket.SHUT_RD
        else:
            queue.pieces.clear()
            queue.queued = 0
            how = socket.SHUT_RDWR
        try:
            queue.sock.shutdown(how)
        except OSError:
            pass

    def retire(self, queue: SendQueue) -> None:
        """The member left: flush once more, then close its socket."""
        assert self.lock.locked()
        if queue.retired:
            return
        queue.retired = True
        self._unlag(queue)
        if not queue.reason:    # end() has uncounted it already
            self._uncount(queue)
        self.retiring.append(queue)
        self._wake()

    def crowded(self) -> bool:
        """Most members lag, and they are most of the addresses too: many
        connections from one address that never read cannot pause a room."""
        assert self.lock.locked()
        members = sum(self.open_groups.values())
        return (self.lagging * 2 > members and not self.stopping
                and len(self.lagging_groups) * 2 > len(self.open_groups))

    def wait_for_space(self) -> bool:
        """Pause a reader while most members lag, for at most lag_wait; True
        when the room has room again. Takes the lock.

        The bound keeps a room of mostly stuck readers moving, so that their
        queues still reach the limit and they are dropped.
        """
        with self.lock:
            if self.crowded():
                return self.space.wait_for(lambda: not self.crowded(), self.lag_wait)
            return True

    def begin_stop(self, grace: float) -> None:
        """Close every retired socket within grace seconds, then end.

        Call before retiring the last members, so that none of them is
        closed before its goodbye had a chance to go out.
        """
        assert self.lock.locked()
        self.stopping = True
        self.deadline = time.monotonic() + grace
        self._wake()

    def _schedule(self, queue: SendQueue) -> None:
        queue.scheduled = True
        self.ready.append(queue)
        self._wake()

    def _wake(self) -> None:
        if not self.awake:
            self.awake = True
            try:
                self.wake_writer.send(b"!")
            except OSError:
                pass

    def _uncount(self, queue: SendQueue) -> None:
        self.open_groups[queue.group] -= 1
        if self.open_groups[queue.group] <= 0:
            del self.open_groups[queue.group]

    def _lag(self, queue: SendQueue) -> None:
        queue.lagging = True
        queue.progress_at = time.monotonic()
        self.lagging_queues.add(queue)
        self.lagging += 1
        self.lagging_groups[queue.group] += 1

    def _unlag(self, queue: SendQueue) -> None:
        if queue.lagging:
            queue.lagging = False
            self.lagging_queues.discard(queue)
            self.lagging -= 1
            self.lagging_groups[queue.group] -= 1
            if self.lagging_groups[queue.group] <= 0:
                del self.lagging_groups[queue.group]
            self.space.notify_all()

    # -- the thread ------------------------------------------------------------

    def run(self) -> None:
        try:
            self.serve()
        finally:
            self.selector.close()
            self.wake_reader.close()
            self.wake_writer.close()

    def serve(self) -> None:
        more = False
        stall_at = 0.0
        while True:
            timeout = 0 if more else (0.02 if self.stopping else
                                      self.stall_check if self.lagging else None)
            if self.lagging and time.monotonic() >= stall_at:
                self._drop_stalled()
                stall_at = time.monotonic() + self.stall_check
            writable = []
            for key, _ in self.selector.select(timeout):
                if key.data is None:
                    try:
                        self.wake_reader.recv(4096)
                    except OSError:
                        pass
                else:
                    writable.append(key.data)
            with self.lock:
                self.awake = False
                batch = list(dict.fromkeys(self.ready + writable))   # once each, in order
                self.ready = []
                jobs = [(queue, self._take(queue)) for queue in batch]
            failed = []
            for queue, pieces in jobs:
                reason = self.write(queue, pieces)
                if reason:
                    failed.append((queue, reason))
            more = self._settle(jobs, failed)
            if self._close_retired():
                return

    def _drop_stalled(self) -> None:
        """End the lagging members that took nothing for stall_timeout: a
        room held back for them (see crowded()) would never fill their
        queues to the limit, so the limit alone would never drop them."""
        horizon = time.monotonic() - self.stall_timeout
        with self.lock:
            for queue in [q for q in self.lagging_queues if q.progress_at < horizon]:
                self.end(queue, "too slow: nothing read for %g s" % self.stall_timeout)

    def _take(self, queue: SendQueue) -> Pieces:
        """The next pieces, up to max_write bytes; nothing while earlier
        bytes wait unsent (the socket is full). Call with lock held."""
        pieces = queue.pieces
        if not pieces or queue.unsent:
            return []
        taken = [pieces.popleft()]
        size = len(taken[0])
        while pieces and size < self.max_write and len(taken) < self.max_pieces:
            piece = pieces.popleft()
            taken.append(piece)
            size += len(piece)
        queue.queued -= size
        return taken

    def _settle(self, jobs: List[Tuple[SendQueue, Pieces]],
                failed: List[Tuple[SendQueue, str]]) -> bool:
        """After a round of writes: end the failed, release lag, go on, or
        wait for space. True when some queue has more to write at once."""
        more = False
        with self.lock:
            for queue, reason in failed:
                self.end(queue, reason)
            for queue, _ in jobs:
                if queue.lagging and queue.queued <= self.lag_bytes // 2:
                    self._unlag(queue)
                if queue.unsent:
                    self._watch(queue, True)
                    continue
                if queue.watched:
                    self._watch(queue, False)
                if queue.pieces:
                    self.ready.append(queue)    # past max_write: go on
                    more = True
                else:
                    queue.scheduled = False
        return more

    def _close_retired(self) -> bool:
        """Close the sockets of members that left; True once stopped."""
        with self.lock:
            retiring, self.retiring = self.retiring, []
            keep = [q for q in retiring if self.stopping and time.monotonic() < self.deadline
                    and (q.pieces or q.unsent)]
            self.retiring.extend(keep)
            done = self.stopping and not self.retiring
        for queue in retiring:
            if queue not in keep:
                self._close(queue)
        return done

    def write(self, queue: SendQueue, pieces: Pieces) -> Optional[str]:
        """Send what the socket takes now; keep the rest in queue.unsent.
        Returns why the member must end, or None; the caller ends it (with
        the lock held), so this takes no lock and may run under it.

        An unexpected error ends only this member, with the traceback logged;
        nobody else's data is touched.
        """
        try:
            if queue.transform is not None:
                try:
                    pieces = queue.transform(pieces)
                except (ssl.SSLError, ValueError):
                    # Its TLS is broken (a corrupt record from the peer): end
                    # this member, whose reader sees the socket end; nobody else.
                    queue.unsent = []
                    return "TLS error"
            wire = queue.unsent + pieces if queue.unsent else pieces
            # One piece (a line to each member of a quiet room) is the common
            # case: it goes out with send(), without building a vector.
            single = len(wire) == 1
            size = len(wire[0]) if single else sum(map(len, wire))
            if not size:
                return None
            try:
                if single:
                    sent = queue.sock.send(wire[0])
                elif self.has_sendmsg:
                    sent = queue.sock.sendmsg(wire)
                else:
                    sent = queue.sock.send(b"".join(wire))
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                sent = size         # broken: its reader sees the end
            if sent and queue.lagging:      # only a lagging queue is checked for stalls
                queue.progress_at = time.monotonic()
            queue.unsent = unsent_part(wire, sent) if sent < size else []
            return None
        except Exception as exc:
            self.log("error", "writer: %s: %s\n%s" % (type(exc).__name__, exc,
                                                       traceback.format_exc().rstrip()))
            queue.unsent = []
            return "server error"

    def _watch(self, queue: SendQueue, want: bool) -> None:
        """Have the selector wake us when queue's socket can take more.
        Call with lock held (from the Writer thread)."""
        if want == queue.watched or (want and queue.retired and not self.stopping):
            return
        try:
            if want:
                self.selector.register(queue.sock, selectors.EVENT_WRITE, queue)
            else:
                self.selector.unregister(queue.sock)
            queue.watched = want
        except (KeyError, ValueError, OSError):
            queue.watched = False

    def _close(self, queue: SendQueue) -> None:
        if queue.pieces or queue.unsent:   # a last goodbye: one try, no wait
            with self.lock:
                pieces = self._take(queue)
            self.write(queue, pieces)       # closed next whatever it says
        with self.lock:
            self._watch(queue, False)
        try:
            queue.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        queue.sock.close()


def unsent_part(pieces: Pieces, sent: int) -> Pieces:
    """What is left of pieces once sent bytes went out, without copying."""
    rest = []
    for piece in pieces:
        if sent >= len(piece):
            sent -= len(piece)
            continue
        rest.append(memoryview(piece)[sent:] if sent else piece)
        sent = 0
    return rest
