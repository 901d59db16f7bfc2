#!/usr/bin/env python3
"""Broadcast Chat server: every line one client sends reaches all the others.

Shape: a socketserver.ThreadingTCPServer with one handler thread per client
that reads and interprets its lines; a Room that holds the members, their
names and their bounded send queues; one Outbox thread that does every
socket write without ever blocking, so a client that stops reading delays
nobody; and a ClientsFile thread that keeps clients.json current.
"""

import _thread
import argparse
import collections
import errno
import hmac
import os
import selectors
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time
from typing import Dict, List, Optional, Tuple

import helpers
from helpers import Action

SMALL_READ = 1024           # what an idle handler holds while it waits
LARGE_READ = 65536          # used while a client keeps the pipe full
MAX_WRITE = 256 * 1024      # most bytes handed to one send()
MAX_PIECES = 512            # most queued pieces handed to one sendmsg()
FLOOD_STRIKES = 10          # refused batches in a row before a disconnect
THREAD_STACK = 512 * 1024
LARGE_ROOM = 1000           # members from which the GIL switch interval is long
SWITCH_INTERVAL_LARGE = 0.05
SHUTDOWN_GRACE = 1.0        # seconds to flush goodbyes at shutdown
CLIENTS_FILE_INTERVAL = 0.5 # seconds between two writes of clients.json
LAG_BYTES = 256 * 1024      # a member with more queued than this is lagging
LAG_WAIT = 1.0              # longest a reader pauses for lagging members
IDLE_CHECK_INTERVAL = 1.0   # seconds between two looks for idle clients
ACCEPT_BATCH = 256          # connections accepted per wake-up of the accept loop
LOG_BATCH = 0.05            # seconds the log thread lets lines gather
MAX_PENDING = 32            # connection threads started and not yet admitted
NOTICE_DELAY = 0.05         # seconds notices wait to be folded together...
NOTICE_DELAY_MAX = 1.0      # ...and at most, in a room of 10,000
HANDSHAKE_TIMEOUT = 10.0    # seconds for TLS and the password before joining
FAILURE_DELAY = 0.25        # seconds before the check after a wrong password...
FAILURE_DELAY_MAX = 8.0     # ...doubling with each, up to this
FAILURE_MEMORY = 900.0      # seconds a wrong password from an address counts
FAILURE_TABLE_MAX = 10000   # addresses remembered at most

DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
SENDMSG = hasattr(socket.socket, "sendmsg")     # not on Windows


class Log(threading.Thread):
    """One line per event on stdout: time, event, details.

    Lines are written by this thread, many at a time: a write and a flush
    per line from each handler thread was a third of the cost of a
    connection under churn (1,900 connections/s with, 2,800 without). It
    writes at most every LOG_BATCH seconds: waking it for each line cost
    a thread switch per line (churn 2,050 -> 2,330 connections/s).
    """

    def __init__(self, stream=None) -> None:
        super().__init__(name="log", daemon=True)
        self.stream = stream or sys.stdout
        self.waiting = []       # type: List[str]
        self.closed = False
        self.changed = threading.Condition()

    def __call__(self, event: str, *details: str) -> None:
        line = "%s %s %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), event,
                               " ".join(details))
        with self.changed:
            self.waiting.append(line)
            if len(self.waiting) == 1:
                self.changed.notify()

    def run(self) -> None:
        while True:
            with self.changed:
                while not self.waiting and not self.closed:
                    self.changed.wait()
                lines, self.waiting = self.waiting, []
                closed = self.closed
            if lines:
                try:
                    self.stream.write("".join(lines))
                    self.stream.flush()
                except (OSError, ValueError):
                    pass
            if closed:
                return
            time.sleep(LOG_BATCH)   # let lines gather: one wake-up per batch

    def close(self) -> None:
        """Write what is left, then stop."""
        with self.changed:
            self.closed = True
            self.changed.notify()
        self.join(2.0)


class Member:
    """One connected client: its socket, name and send queue.

    The queue fields are guarded by Room.lock; `unsent` and `watched` belong
    to the Outbox thread alone. With TLS, `tls` turns the plain text queued
    into the bytes sent, so the socket itself stays a plain socket.
    """

    __slots__ = ("sock", "tls", "host", "address", "connected_at", "name", "key",
                 "queue", "queued", "unsent", "gone", "reason", "watched", "last_heard",
                 "lagging")

    def __init__(self, sock: socket.socket, peer: Tuple,
                 tls: Optional[helpers.TlsCodec] = None) -> None:
        self.sock = sock
        self.tls = tls
        self.host = helpers.address_group(peer[0])   # what per-address limits count
        self.address = helpers.format_address(peer)
        self.connected_at = helpers.iso_utc(time.time())
        self.name = None        # type: Optional[str]
        self.key = None         # type: Optional[str]
        self.queue = collections.deque()  # type: collections.deque
        self.queued = 0         # bytes in queue
        self.unsent = []        # type: List[bytes]  what a send did not take (Outbox only)
        self.gone = False       # left the room; the Outbox closes the socket
        self.reason = ""        # why the server dropped it, if it did
        self.watched = False    # the Outbox waits for it to become writable
        self.last_heard = time.monotonic()
        self.lagging = False    # queued over Room.lag_bytes

    def __repr__(self) -> str:
        return "<Member %s %s>" % (self.name, self.address)


class Room:
    """The members and everything sent to them.

    Every queue change happens under one lock, so all members see events in
    one order. Notices (joins, leaves, renames) wait in a shared list and go
    out as one piece to everyone, so a thousand joins cost each member one
    queued write, not a thousand; they are flushed before any later line,
    so nobody hears from a member before hearing that it joined.
    """

    def __init__(self, queue_limit: int, max_clients: int, max_per_address: int,
                 log: Log, idle_timeout: float = 0) -> None:
        self.lock = threading.Lock()
        self.idle_timeout = idle_timeout
        self.queue_limit = queue_limit
        self.max_clients = max_clients
        self.max_per_address = max_per_address
        self.log = log
        self.members = {}        # type: Dict[Member, None]  (ordered set)
        self.by_key = {}         # type: Dict[str, Member]
        self.per_host = collections.Counter()  # type: collections.Counter
        self.notices = []        # type: List[Tuple[str, str, str]]  (kind, name, detail)
        self.notices_since = 0.0
        self.guest_serial = 0
        self.closing = False
        self.outbox = Outbox(self)
        self.on_change = lambda: None   # set by ClientsFile
        # Back-pressure: while most members lag behind, readers pause, so
        # senders slow down to what the room takes instead of filling queues
        # until readers are dropped. One slow reader never pauses anyone.
        self.lag_bytes = min(LAG_BYTES, queue_limit // 4)
        self.small_switch_interval = sys.getswitchinterval()
        self.lagging = 0
        self.lagging_hosts = collections.Counter()  # type: collections.Counter
        self.space = threading.Condition(self.lock)

    # -- membership ---------------------------------------------------------

    def admit(self, sock: socket.socket, peer: Tuple,
              tls: Optional[helpers.TlsCodec] = None) -> Tuple[Optional[Member], str]:
        """Add a new connection, or say why not."""
        member = Member(sock, peer, tls)
        with self.lock:
            if self.closing:
                return None, "server shutting down"
            if self.max_clients and len(self.members) >= self.max_clients:
                return None, "server full"
            if self.max_per_address and self.per_host[member.host] >= self.max_per_address:
                return None, "too many connections from your address"
            self.members[member] = None
            self.per_host[member.host] += 1
            if len(self.members) == LARGE_ROOM:
                self._switch_interval(SWITCH_INTERVAL_LARGE)
        self.on_change()
        return member, ""

    @staticmethod
    def _switch_interval(seconds: float) -> None:
        """A thread waiting for the GIL wakes every switch interval. With
        thousands of handler threads woken at once (a burst of lines) the
        default 5 ms made those wake-ups cost more than the work: 10,000
        /nick lines at once took 19 s of CPU, with 50 ms 1.1 s. In a small
        room the default gives lower latency (p99 3.5 ms against 4 ms)."""
        sys.setswitchinterval(seconds)

    def leave(self, member: Member, reason: str) -> None:
        with self.lock:
            if member.gone:
                return
            member.gone = True
            del self.members[member]
            if len(self.members) == LARGE_ROOM // 2:
                self._switch_interval(self.small_switch_interval)
            self._unlag(member)
            self.per_host[member.host] -= 1
            if self.per_host[member.host] <= 0:
                del self.per_host[member.host]
            if member.key is not None:
                del self.by_key[member.key]
                if not self.closing:
                    self._announce("leave", member.name, member.reason or reason)
            self.outbox.retire(member)
        self.on_change()
        self.log("leave", member.name or "-", member.address, member.reason or reason)

    def rename(self, member: Member, wanted: str) -> Optional[str]:
        """Give member a name; return an error for the member, or None."""
        name, error = helpers.check_name(wanted)
        if error:
            return "invalid name: " + error
        key = helpers.name_key(name)
        with self.lock:
            holder = self.by_key.get(key)
            if holder is not None and holder is not member:
                return helpers.NAME_TAKEN_PREFIX + "%s is already in use" % holder.name
            old = member.name
            if old == name:
                return None
            if member.key is not None:
                del self.by_key[member.key]
            self.by_key[key] = member
            member.name, member.key = name, key
            self._greet_or_announce(member, old)
        self.on_change()
        if old is None:
            self.log("join", name, member.address)
        else:
            self.log("rename", old, name, member.address)
        return None

    def name_guest(self, member: Member) -> None:
        """Give a member that speaks before /nick a unique guest name."""
        while member.name is None:
            with self.lock:
                self.guest_serial += 1
                wanted = "guest-%d" % self.guest_serial
            self.rename(member, wanted)

    def _greet_or_announce(self, member: Member, old: Optional[str]) -> None:
        """Notices go to everyone, the member included: one shared piece."""
        if old is None:
            others = len(self.by_key) - 1
            # Straight to the queue, not after the waiting notices: with
            # thousands joining at once, flushing them at each join would
            # cost a write to every member per join.
            self._enqueue(member, helpers.fmt_notice(
                helpers.clock_stamp(), "%s%s! %s. /help lists the commands." % (
                    helpers.WELCOME_PREFIX, member.name,
                    "You are alone here" if others == 0 else
                    "%d other%s online" % (others, "" if others == 1 else "s"))
            ).encode())
            self._announce("join", member.name)
        else:
            self._announce("other", old, "%s is now known as %s" % (old, member.name))

    def find(self, name: str) -> Optional[Member]:
        with self.lock:
            return self.by_key.get(helpers.name_key(name))

    def names(self) -> List[str]:
        with self.lock:
            return sorted((m.name for m in self.by_key.values()), key=str.casefold)

    def snapshot(self) -> List[Dict]:
        with self.lock:
            members = list(self.members)
        return [{"name": m.name, "address": m.address, "connected_at": m.connected_at}
                for m in members]

    # -- sending ------------------------------------------------------------

    def broadcast(self, data: bytes, sender: Member) -> None:
        """Queue data for every member but the sender."""
        with self.lock:
            self._flush_notices()
            for member in self.members:
                if member is not sender:
                    self._enqueue(member, data)

    def reply(self, member: Member, data: bytes, after_notices: bool = False) -> None:
        """Queue an answer to the member's own line. Waiting notices stay
        waiting (flushing them would cost a write to every member) unless
        after_notices: an answer about the room (/who) must not arrive
        before the notices that led to it (a rename just made)."""
        with self.lock:
            if after_notices:
                self._flush_notices()
            self._enqueue(member, data)

    def whisper(self, member: Member, data: bytes) -> None:
        """Queue a line from someone else for one member, after the waiting
        notices (nobody hears from a member before hearing it joined)."""
        with self.lock:
            self._flush_notices()
            self._enqueue(member, data)

    def poke(self, member: Member) -> None:
        """Have the Outbox write member's socket even with nothing queued (TLS replies)."""
        with self.lock:
            if not member.watched:
                self.outbox.ready.append(member)
                self.outbox.wake()

    def notice_delay(self) -> float:
        """How long notices wait to be folded: longer in a larger room,
        where each flush is a write to every member."""
        return min(NOTICE_DELAY_MAX, max(NOTICE_DELAY, len(self.members) * 0.0001))

    def _announce(self, kind: str, name: str, detail: str = "") -> None:
        """Add a notice for everyone (see helpers.summarize_notices)."""
        if not self.notices:
            self.notices_since = time.monotonic()
            self.outbox.wake()
        self.notices.append((kind, name, detail))

    def _flush_notices(self) -> None:
        """Queue the waiting notices for everyone, as one piece."""
        if not self.notices:
            return
        stamp = helpers.clock_stamp()
        shared = "".join(helpers.fmt_notice(stamp, text)
                         for text in helpers.summarize_notices(self.notices)).encode()
        self.notices = []
        for member in self.members:
            self._enqueue(member, shared)

    def _enqueue(self, member: Member, data: bytes) -> None:
        if member.gone or member.reason:
            return
        # Only a backlog already past the limit is too slow: a member that
        # keeps up takes any one piece, even one larger than the limit (a
        # paste read in one go). Memory stays within limit + one piece.
        if member.queued > self.queue_limit:
            self._drop(member, "too slow: send queue over %d bytes" % self.queue_limit)
            return
        if not member.queue and not member.watched:
            self.outbox.ready.append(member)
            self.outbox.wake()
        member.queue.append(data)
        member.queued += len(data)
        if member.queued > self.lag_bytes and not member.lagging:
            member.lagging = True
            self.lagging += 1
            self.lagging_hosts[member.host] += 1

    def _unlag(self, member: Member) -> None:
        if member.lagging:
            member.lagging = False
            self.lagging -= 1
            self.lagging_hosts[member.host] -= 1
            if self.lagging_hosts[member.host] <= 0:
                del self.lagging_hosts[member.host]
            self.space.notify_all()

    def _crowded(self) -> bool:
        """Most members lag, and they are most of the addresses too: many
        connections from one address that never read cannot pause a room."""
        return (self.lagging * 2 > len(self.members) and not self.closing
                and len(self.lagging_hosts) * 2 > len(self.per_host))

    def wait_for_space(self) -> None:
        """Pause a reader while most members lag, for at most LAG_WAIT.

        The bound keeps a room of mostly stuck readers moving, so that their
        queues still reach the limit and they are dropped.
        """
        with self.lock:
            if self._crowded():
                self.space.wait_for(lambda: not self._crowded(), LAG_WAIT)

    def _drop(self, member: Member, reason: str, tell: bool = False) -> None:
        """Disconnect a member; its handler thread sees the socket end.

        With tell, the member's queue is kept and the reason is added to it,
        to go out before the Outbox closes the socket.
        """
        member.reason = reason
        self._unlag(member)
        if tell:
            line = helpers.fmt_error(helpers.clock_stamp(), "disconnected: " + reason)
            member.queue.append(line.encode())
            how = socket.SHUT_RD
        else:
            member.queue.clear()
            how = socket.SHUT_RDWR
        try:
            member.sock.shutdown(how)
        except OSError:
            pass

    def drop_idle(self) -> None:
        """Disconnect the members silent for longer than idle_timeout."""
        horizon = time.monotonic() - self.idle_timeout
        with self.lock:
            for member in self.members:
                if member.last_heard < horizon and not member.reason:
                    self._drop(member, "idle for more than %g s" % self.idle_timeout, tell=True)

    def drop(self, member: Member, reason: str, tell: bool = False) -> None:
        with self.lock:
            if not member.gone:
                self._drop(member, reason, tell)

    def close(self, goodbye: str) -> None:
        """Say goodbye to everyone, flush briefly, and close every socket."""
        with self.lock:
            self.closing = True
            self.outbox.begin_stop(SHUTDOWN_GRACE)
            self._flush_notices()
            line = helpers.fmt_notice(helpers.clock_stamp(), goodbye).encode()
            for member in self.members:
                self._enqueue(member, line)
                member.reason = member.reason or "server shutting down"
                self.outbox.retire(member)
        self.outbox.join(SHUTDOWN_GRACE + 1.0)


def unsent_part(pieces: List[bytes], sent: int) -> List[bytes]:
    """What is left of pieces once sent bytes went out, without copying."""
    rest = []
    for piece in pieces:
        if sent >= len(piece):
            sent -= len(piece)
            continue
        rest.append(memoryview(piece)[sent:] if sent else piece)
        sent = 0
    return rest


class Outbox(threading.Thread):
    """The one thread that writes to client sockets, and closes them.

    Writes never block (MSG_DONTWAIT): what a socket cannot take now stays
    queued and the socket is watched with the selector until it drains.
    Closing here, and only here, means no send can hit a reused descriptor.
    """

    def __init__(self, room: Room) -> None:
        super().__init__(name="outbox", daemon=True)
        self.room = room
        self.selector = selectors.DefaultSelector()
        self.wake_reader, self.wake_writer = socket.socketpair()
        self.wake_reader.setblocking(False)
        self.wake_writer.setblocking(False)
        self.selector.register(self.wake_reader, selectors.EVENT_READ)
        self.ready = []          # type: List[Member]   guarded by room.lock
        self.retiring = []       # type: List[Member]   guarded by room.lock
        self.awake = False       # a wake byte is pending; guarded by room.lock
        self.stopping = False
        self.deadline = 0.0

    def wake(self) -> None:
        """Call with room.lock held."""
        if not self.awake:
            self.awake = True
            try:
                self.wake_writer.send(b"!")
            except OSError:
                pass

    def retire(self, member: Member) -> None:
        """Close member's socket after a last flush. Call with room.lock held."""
        self.retiring.append(member)
        self.wake()

    def begin_stop(self, grace: float) -> None:
        """Close every retired socket within grace seconds, then end.

        Call with room.lock held, before retiring the last members, so that
        none of them is closed before its goodbye had a chance to go out.
        """
        self.stopping = True
        self.deadline = time.monotonic() + grace
        self.wake()

    def run(self) -> None:
        """Write until stopped. A bug here would silence every member, so an
        unexpected error is logged and the loop goes on."""
        while True:
            try:
                self.serve()
                break
            except Exception as exc:
                self.room.log("error", "outbox: %s: %s" % (type(exc).__name__, exc))
        self.release()

    def release(self) -> None:
        """Close the selector and the wake-up pair (once stopped)."""
        self.selector.close()
        self.wake_reader.close()
        self.wake_writer.close()

    def serve(self) -> None:
        room = self.room
        more = False
        notice_wait = 0.0
        idle_check = time.monotonic() + IDLE_CHECK_INTERVAL
        while True:
            writable = []
            timeout = 0 if more else (0.02 if self.stopping else
                                      IDLE_CHECK_INTERVAL if room.idle_timeout else None)
            if notice_wait > 0 and room.notices:
                timeout = notice_wait if timeout is None else min(timeout, notice_wait)
            for key, _ in self.selector.select(timeout):
                if key.data is None:
                    try:
                        self.wake_reader.recv(4096)
                    except OSError:
                        pass
                else:
                    writable.append(key.data)
            with room.lock:
                self.awake = False
                notice_wait = room.notices_since + room.notice_delay() - time.monotonic()
                if room.notices and (notice_wait <= 0 or self.stopping):
                    room._flush_notices()
                batch = dict.fromkeys(self.ready + writable)  # once each, in order
                self.ready = []
                retiring, self.retiring = self.retiring, []
                jobs = [(m, self._take(m)) for m in batch]
            for member, data in jobs:
                self._write(member, data)
            more = False
            with room.lock:
                for member, _ in jobs:
                    if member.lagging and member.queued <= room.lag_bytes // 2:
                        room._unlag(member)
                    if member.queue and not member.unsent:
                        self.ready.append(member)   # past MAX_WRITE: go on
                        more = True
                    self._watch(member, bool(member.unsent))
                if self.stopping and time.monotonic() < self.deadline:
                    # Closing down: keep sockets open until their goodbye is out.
                    waiting = [m for m in retiring if m.queue or m.unsent]
                    self.retiring.extend(waiting)
                    retiring = [m for m in retiring if not (m.queue or m.unsent)]
            for member in retiring:
                self._close(member)
            if room.idle_timeout and time.monotonic() >= idle_check:
                room.drop_idle()
                idle_check = time.monotonic() + IDLE_CHECK_INTERVAL
            if self.stopping and not self.retiring:
                with room.lock:
                    if not self.retiring:
                        return

    @staticmethod
    def _take(member: Member) -> List[bytes]:
        """The next queued pieces, up to MAX_WRITE bytes. Call with room.lock held.

        Nothing while earlier bytes wait unsent: the socket is full.
        """
        queue = member.queue
        if not queue or member.unsent:
            return []
        pieces = [queue.popleft()]
        size = len(pieces[0])
        while queue and size < MAX_WRITE and len(pieces) < MAX_PIECES:
            piece = queue.popleft()
            pieces.append(piece)
            size += len(piece)
        member.queued -= size
        return pieces

    @staticmethod
    def _write(member: Member, pieces: List[bytes]) -> None:
        """Send what the socket takes now; keep the rest in member.unsent.

        The pieces go to sendmsg() as they are, so the kernel copies them
        once; joining them first was most of this thread's time under load.
        """
        if member.tls is not None:
            try:
                pieces = [member.tls.encrypt(b"".join(pieces))]
            except (ssl.SSLError, ValueError):
                # Its TLS is broken (a corrupt record from the peer): end this
                # member, whose handler sees the socket end; nobody else.
                member.unsent = []
                try:
                    member.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
        wire = member.unsent + pieces if member.unsent else pieces
        size = sum(len(piece) for piece in wire)
        if not size:
            return
        try:
            if SENDMSG:
                sent = member.sock.sendmsg(wire, (), DONTWAIT)
            else:
                sent = member.sock.send(b"".join(wire), DONTWAIT)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = size         # broken: its handler sees the end
        member.unsent = unsent_part(wire, sent) if sent < size else []

    def _watch(self, member: Member, want: bool) -> None:
        if want == member.watched or (want and member.gone and not self.stopping):
            return
        try:
            if want:
                self.selector.register(member.sock, selectors.EVENT_WRITE, member)
            else:
                self.selector.unregister(member.sock)
            member.watched = want
        except (KeyError, ValueError, OSError):
            member.watched = False

    def _close(self, member: Member) -> None:
        if member.queue or member.unsent:   # a last goodbye: one try, no wait
            self._write(member, self._take(member))
        self._watch(member, False)
        try:
            member.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        member.sock.close()


class ClientsFile(threading.Thread):
    """Keeps clients.json equal to the room, at most one write per interval."""

    def __init__(self, path: str, room: Room, log: Log) -> None:
        super().__init__(name="clients-file", daemon=True)
        self.path = path
        self.room = room
        self.log = log
        self.dirty = threading.Event()
        self.stopped = threading.Event()
        self.failing = False
        room.on_change = self.dirty.set

    def write(self, records: List[Dict]) -> bool:
        try:
            helpers.write_json_atomic(self.path, records)
        except OSError as exc:
            if not self.failing:
                self.log("error", "cannot write %s: %s; will retry" % (self.path, exc.strerror or exc))
                self.failing = True
            return False
        if self.failing:
            self.log("info", "%s is written again" % self.path)
            self.failing = False
        return True

    def run(self) -> None:
        while not self.stopped.is_set():
            self.dirty.wait()
            self.dirty.clear()
            if self.stopped.is_set():
                return
            if not self.write(self.room.snapshot()):
                self.dirty.set()
            self.stopped.wait(CLIENTS_FILE_INTERVAL)

    def stop(self) -> None:
        self.stopped.set()
        self.dirty.set()
        self.join(2.0)


class Session:
    """What one client's lines do: the per-client half of the protocol."""

    def __init__(self, room: Room, member: Member, rate: float, burst: int) -> None:
        self.room = room
        self.member = member
        self.bucket = helpers.TokenBucket(rate, burst)
        self.rate = rate
        self.strikes = 0
        self.quit_reason = None     # type: Optional[str]

    def error(self, text: str) -> None:
        self.room.reply(self.member, helpers.fmt_error(helpers.clock_stamp(), text).encode())

    def notice(self, text: str) -> None:
        self.room.reply(self.member, helpers.fmt_notice(helpers.clock_stamp(), text).encode())

    def handle(self, lines: List[bytes], too_long: int, max_line: int) -> None:
        """Act on a batch of lines read together; messages go out together."""
        if too_long:
            self.error("line too long: %d line%s over %d bytes not sent" % (
                too_long, "" if too_long == 1 else "s", max_line))
        lines = [line for line in lines if line.strip()]
        granted = self.within_rate(len(lines))
        if not granted:
            return
        lines = lines[:granted]
        stamp = helpers.clock_stamp()
        out = []    # type: List[str]
        for raw in lines:
            text = helpers.decode(raw)
            action = helpers.interpret(helpers.sanitize(text))
            if action.kind == "nick":
                # The name as typed: check_name shows a bad character (an
                # escape, a bidi override) safely, and as what it is.
                action = helpers.interpret(text)
            if action.kind == "say":
                if self.member.name is None:
                    self.room.name_guest(self.member)
                out.append(helpers.fmt_message(stamp, self.member.name, action.text))
                continue
            if out:
                self.room.broadcast("".join(out).encode(), self.member)
                out = []
            self.command(action, stamp)
            if self.quit_reason is not None:
                return
        if out:
            self.room.broadcast("".join(out).encode(), self.member)

    def handle_plain(self, block: bytes, count: int) -> None:
        """The fast path for count plain message lines, each ending in LF:
        the sender's prefix goes before each with one replace()."""
        granted = self.within_rate(count)
        if not granted:
            return
        if granted < count:
            block = b"".join(line + b"\n" for line in block.split(b"\n")[:granted])
        prefix = helpers.fmt_message(helpers.clock_stamp(), self.member.name, "")[:-1].encode()
        self.room.broadcast(prefix + block[:-1].replace(b"\n", b"\n" + prefix) + b"\n",
                            self.member)

    def within_rate(self, count: int) -> int:
        """How many of count lines the flood limit lets through; a warning
        for the rest, and a disconnect after FLOOD_STRIKES refusals in a row."""
        granted = self.bucket.take(count)
        if granted == count:
            self.strikes = 0
            return count
        self.strikes += 1
        if self.strikes >= FLOOD_STRIKES:
            self.room.drop(self.member, "flooding", tell=True)
            return 0
        refused = count - granted
        self.error("flood: %d line%s not sent; the limit is %g lines a second" % (
            refused, "" if refused == 1 else "s", self.rate))
        return granted

    def command(self, action: Action, stamp: str) -> None:
        member, room = self.member, self.room
        kind = action.kind
        if kind == "error":
            self.error(action.text)
        elif kind == "nick":
            problem = room.rename(member, action.target)
            if problem:
                self.error(problem)
        elif kind == "who":
            names = room.names()
            room.reply(member, helpers.fmt_notice(stamp, "%d online: %s" % (
                len(names), ", ".join(names) or "nobody named yet")).encode(), after_notices=True)
        elif kind == "help":
            for line in helpers.HELP_LINES:
                self.notice(line)
        elif kind == "pass":
            self.notice("you are in: /pass is needed only as the first line, "
                        "on a chat with a password")
        elif kind == "quit":
            self.quit_reason = "quit: " + action.text if action.text else "quit"
            self.notice("goodbye")
        else:
            if member.name is None:
                room.name_guest(member)
            if kind == "me":
                room.broadcast(helpers.fmt_action(stamp, member.name, action.text).encode(), member)
            elif kind == "msg":
                self.private(action, stamp)

    def private(self, action: Action, stamp: str) -> None:
        target = self.room.find(action.target)
        if target is None:
            self.error("no such name: %s (/who lists who is online)" % action.target)
        elif target is self.member:
            self.error("that is you: /msg sends to someone else")
        else:
            self.room.whisper(target, helpers.fmt_private_in(stamp, self.member.name, action.text).encode())
            self.room.reply(self.member, helpers.fmt_private_out(stamp, target.name, action.text).encode())


class Refused(Exception):
    """A connection turned away before it joins: the text is for the log."""


class ChatHandler(socketserver.BaseRequestHandler):
    """One thread per client: read, frame, hand lines to its Session."""

    server = None  # type: ChatServer

    def __init__(self, request: socket.socket, client_address: Tuple, server: "ChatServer",
                 arrival: "Arrival") -> None:
        self.arrival = arrival
        super().__init__(request, client_address, server)

    def handle(self) -> None:
        server = self.server
        sock = self.request
        arrival = self.arrival
        address = helpers.format_address(self.client_address)
        framer = helpers.LineFramer(server.max_line)
        tls = None
        if arrival.refusal:
            arrival.settle()
            server.log("refuse", address, arrival.refusal + " (before joining)")
            if server.tls_context is None:
                server.say_now(sock, None, helpers.fmt_error(helpers.clock_stamp(), arrival.refusal))
            return self.close(sock)
        if server.tls_context is not None or server.password is not None:
            arrival.settle()    # counted already; the handshake may take a while
        try:
            server.tune(sock)
            sock.settimeout(HANDSHAKE_TIMEOUT)
            deadline = time.monotonic() + HANDSHAKE_TIMEOUT
            tls, arrived = server.open_tls(sock, deadline)
            early = server.authenticate(sock, tls, framer, arrival.host, arrived, deadline)
            sock.settimeout(None)   # from here on the Outbox may write to it
        except Refused as exc:
            server.log("refuse", address, str(exc))
            return self.close(sock)
        except ssl.SSLError as exc:
            server.log("refuse", address, "TLS handshake failed: " + helpers.describe_tls_error(exc))
            return self.close(sock)
        except (OSError, ValueError) as exc:
            server.log("refuse", address, "lost before joining: %s" % (
                getattr(exc, "strerror", None) or exc or type(exc).__name__))
            return self.close(sock)
        finally:
            arrival.end_handshake()
        member, refusal = server.room.admit(sock, self.client_address, tls)
        arrival.admitted = member is not None   # if so the room closes the socket
        arrival.settle()
        if member is None:
            server.log("refuse", address, refusal)
            server.say_now(sock, tls, helpers.fmt_error(helpers.clock_stamp(), refusal))
            return self.close(sock)
        server.log("connect", address)
        self.serve(member, framer, early)

    def serve(self, member: Member, framer: helpers.LineFramer, early: List[bytes]) -> None:
        server = self.server
        sock = self.request
        reason = "connection lost"
        session = Session(server.room, member, server.rate_limit, server.burst)
        session.notice("Broadcast Chat %s: %d online. /nick NAME picks your name; "
                       "/help lists the commands." % (helpers.__version__, len(server.room.by_key)))
        size = SMALL_READ
        first = True
        try:
            if early:
                session.handle(early, 0, server.max_line)
            room = server.room
            while session.quit_reason is None:
                if room.lagging:
                    room.wait_for_space()
                data = sock.recv(size)
                if not data:
                    break
                member.last_heard = time.monotonic()
                size = LARGE_READ if len(data) == size else SMALL_READ
                if member.tls is not None:
                    data, reply, closed = member.tls.decrypt(data)
                    if reply:
                        server.room.poke(member)
                    if closed:
                        break
                elif first and data.startswith(b"\x16\x03"):
                    reason = "spoke TLS to a server without TLS"
                    break
                first = False
                plain = framer.take_plain(data) if member.name is not None else None
                if plain is not None:
                    session.handle_plain(*plain)
                else:
                    lines, too_long = framer.feed(data)
                    session.handle(lines, too_long, server.max_line)
            if session.quit_reason is not None:
                reason = session.quit_reason
        except (OSError, ssl.SSLError):
            pass
        except Exception as exc:   # a bug must cost one client, not the server
            server.log("error", member.address, "%s: %s" % (type(exc).__name__, exc))
            reason = "server error"
        finally:
            server.room.leave(member, reason)

    @staticmethod
    def close(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    def finish(self) -> None:
        pass


class Arrival:
    """A connection between accept and admission, and the counts it holds:
    a slot among ChatServer.pending, and (with TLS or a password) one among
    the connections in their handshake. Each is given back once, by
    whichever thread gets there first."""

    def __init__(self, server: "ChatServer", host: str, refusal: str) -> None:
        self.server = server
        self.host = host
        self.refusal = refusal          # from begin_handshake: why it is turned away
        self.pending = False            # holds a slot among server.pending
        self.handshaking = not refusal  # counted by begin_handshake
        self.admitted = False           # a member: the room closes its socket

    def settle(self) -> None:
        """Past admission (or turned away): free the pending slot."""
        server = self.server
        with server.pending_changed:
            if self.pending:
                self.pending = False
                server.pending -= 1
                if server.pending == MAX_PENDING - 1:
                    server.pending_changed.notify()

    def end_handshake(self) -> None:
        with self.server.handshake_lock:
            handshaking, self.handshaking = self.handshaking, False
        if handshaking:
            self.server.end_handshake(self.host)

    def release(self) -> None:
        self.settle()
        self.end_handshake()


class ChatServer(socketserver.ThreadingTCPServer):
    """The listening socket and accept loop, from the standard library."""

    allow_reuse_address = True
    daemon_threads = True
    block_on_close = False
    request_queue_size = 4096   # the kernel caps it at net.core.somaxconn

    def __init__(self, address: Tuple[str, int], options: argparse.Namespace,
                 log: Log) -> None:
        """Raises OSError when the address cannot be bound, and ssl.SSLError
        or ValueError for an unusable certificate, key or password file."""
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, ChatHandler)
        self.log = log
        self.max_line = options.max_line
        self.rate_limit = options.rate_limit
        self.burst = max(options.burst, 1)
        self.room = Room(options.queue_limit, options.max_clients,
                         options.max_per_address, log, options.idle_timeout)
        self.tls_context = tls_context(options)
        self.password = helpers.read_password(options.password_file, os.environ)
        # wrong passwords by address: (how many in a row, when the next check may be)
        self.failures = collections.OrderedDict()  # type: Dict[str, Tuple[int, float]]
        self.failure_lock = threading.Lock()
        self.accept_failing = False
        self.handshaking = collections.Counter()  # type: collections.Counter
        self.handshake_lock = threading.Lock()
        self.pending = 0    # connection threads started and not yet admitted
        self.pending_changed = threading.Condition()
        self.clients_file = ClientsFile(options.clients_file, self.room, log)

    def tune(self, sock: socket.socket) -> None:
        """Keepalive finds peers that vanished without a word."""
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if hasattr(socket, "TCP_KEEPIDLE"):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 6)
        except OSError:
            pass

    def begin_handshake(self, host: str) -> str:
        """Count a connection still in its TLS handshake or password check,
        or say why it is refused.

        It is not a member yet, so the room does not count it; without this
        one host could hold a thread per silent connection, past
        --max-per-address and --max-clients, for HANDSHAKE_TIMEOUT each.
        """
        if self.tls_context is None and self.password is None:
            return ""       # nothing to wait for: admitted (and counted) at once
        room = self.room
        with self.handshake_lock:
            waiting = sum(self.handshaking.values())
            if room.max_clients and waiting + len(room.members) >= room.max_clients:
                return "server full"
            if room.max_per_address and (
                    self.handshaking[host] + room.per_host[host] >= room.max_per_address):
                return "too many connections from your address"
            self.handshaking[host] += 1
        return ""

    def end_handshake(self, host: str) -> None:
        if self.tls_context is None and self.password is None:
            return
        with self.handshake_lock:
            self.handshaking[host] -= 1
            if self.handshaking[host] <= 0:
                del self.handshaking[host]

    def take_turn(self, host: str) -> float:
        """Seconds to wait before checking a password from host.

        None for an address without wrong passwords. After one, the next
        check waits FAILURE_DELAY, doubling with each wrong one up to
        FAILURE_DELAY_MAX; attempts made at once wait their turn one after
        the other, so guessing in parallel is no faster. The count is
        forgotten after FAILURE_MEMORY quiet seconds; the table keeps the
        FAILURE_TABLE_MAX addresses that failed last.
        """
        now = time.monotonic()
        with self.failure_lock:
            entry = self.failures.get(host)
            if entry is None:
                return 0.0
            count, free_at = entry
            if now - free_at > FAILURE_MEMORY:
                del self.failures[host]
                return 0.0
            turn = max(now, free_at)
            self.failures[host] = (count, turn + failure_delay(count))
            return turn - now

    def record_failure(self, host: str) -> None:
        now = time.monotonic()
        with self.failure_lock:
            count, free_at = self.failures.pop(host, (0, now))
            count += 1
            self.failures[host] = (count, max(free_at, now + failure_delay(count)))  # newest last
            if len(self.failures) > FAILURE_TABLE_MAX:
                self.failures.popitem(last=False)

    def open_tls(self, sock: socket.socket,
                 deadline: float) -> Tuple[Optional[helpers.TlsCodec], bytes]:
        """The TLS codec (None without TLS) and the plain text that came with the handshake."""
        if self.tls_context is None:
            return None, b""
        codec = helpers.TlsCodec(self.tls_context, server_side=True)
        return codec, helpers.tls_handshake(sock, codec, deadline)

    def say_now(self, sock: socket.socket, tls: Optional[helpers.TlsCodec], line: str) -> None:
        """Send one line to a socket that has not joined (so the Outbox has not got it)."""
        data = line.encode()
        try:
            sock.send(tls.encrypt(data) if tls else data, DONTWAIT)
        except OSError:
            pass

    def authenticate(self, sock: socket.socket, tls: Optional[helpers.TlsCodec],
                     framer: helpers.LineFramer, host: str, arrived: bytes,
                     deadline: float) -> List[bytes]:
        """Check that the first line is /pass with the room's password.

        arrived is plain text already read (with the TLS handshake). Returns
        the lines that came after the password. Repeated failures from one
        address wait longer and longer before their answer.
        """
        lines, too_long = framer.feed(arrived)
        if self.password is None:
            return lines
        first = True
        while not lines and not too_long:
            data = helpers.recv_before(sock, 4096, deadline, "the password")
            if not data:
                raise Refused("no password given")
            if tls is None and first and data.startswith(b"\x16\x03"):
                # Plain text back makes the client's TLS say "does not speak TLS".
                self.say_now(sock, tls, helpers.fmt_error(helpers.clock_stamp(),
                                                          "this server does not use TLS"))
                raise Refused("spoke TLS to a server without TLS")
            if tls is not None:
                data, reply, _ = tls.decrypt(data)
                if reply:
                    sock.sendall(tls.encrypt(b""))
            first = False
            lines, too_long = framer.feed(data)
        if too_long:
            lines.append(b"")
        word, _, rest = lines[0].partition(b" ")
        given = rest.lstrip(b" ") if word.lower() == b"/pass" else None
        if given is None:
            self.say_now(sock, tls, helpers.fmt_error(helpers.clock_stamp(), helpers.PASSWORD_NEEDED))
            raise Refused("no password given")
        time.sleep(self.take_turn(host))     # throttling, not waiting for anything
        if not hmac.compare_digest(given, self.password):
            self.record_failure(host)
            self.say_now(sock, tls, helpers.fmt_error(helpers.clock_stamp(), helpers.WRONG_PASSWORD))
            raise Refused("wrong password")
        with self.failure_lock:
            self.failures.pop(host, None)
        return lines[1:]

    def server_activate(self) -> None:
        super().server_activate()
        self.socket.setblocking(False)

    def _handle_request_noblock(self) -> None:
        """Accept every connection waiting, not one per wake-up: connection
        storms otherwise overflow the listen queue and clients wait seconds
        for their SYN to be retried."""
        for _ in range(ACCEPT_BATCH):
            try:
                request, client_address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors, most likely
                if not self.accept_failing:
                    self.log("error", "accept failed: %s; raise the open-file limit "
                                      "(ulimit -n) or lower --max-clients" % (exc.strerror or exc))
                    self.accept_failing = True
                time.sleep(0.1)     # back off; the waiting connection stays queued
                return
            self.accept_failing = False
            request.setblocking(True)
            try:
                self.process_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
                request.close()

    def process_request(self, request, client_address) -> None:
        """Start a thread for the connection.

        Connections waiting for a TLS handshake or a password are counted
        here, in the order they came. The thread is started without
        threading.Thread's wait for it to run, a thread switch per
        connection (churn 2,330 -> 2,900 connections/s); instead at most
        MAX_PENDING threads may be started and not yet admitted, so a storm
        of connections closed at once cannot fill --max-per-address with
        connections nobody has looked at yet.
        """
        host = helpers.address_group(client_address[0])
        arrival = Arrival(self, host, self.begin_handshake(host))
        try:
            with self.pending_changed:
                while self.pending >= MAX_PENDING:
                    self.pending_changed.wait()
                self.pending += 1
                arrival.pending = True
            _thread.start_new_thread(self.serve_connection, (request, client_address, arrival))
        except BaseException:
            # No thread (or a signal while waiting for a slot): give the
            # counts back. Arrival's methods run once, whoever calls first.
            arrival.release()
            raise

    def serve_connection(self, request: socket.socket, client_address: Tuple,
                         arrival: "Arrival") -> None:
        """A connection's thread."""
        try:
            ChatHandler(request, client_address, self, arrival)
        except Exception:
            self.handle_error(request, client_address)
            if not arrival.admitted:
                ChatHandler.close(request)
        finally:
            arrival.release()

    def shutdown_request(self, request: socket.socket) -> None:
        """Sockets are closed by the Outbox (or the handler), never here."""

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        self.log("error", str(client_address), "%s: %s" % (type(exc).__name__, exc))

    def start(self) -> None:
        self.room.outbox.start()
        self.clients_file.start()

    def stop(self) -> None:
        """Stop accepting, say goodbye, close every socket, empty the file."""
        self.server_close()
        self.room.close("server shutting down")
        self.clients_file.stop()
        self.clients_file.write([])


# --------------------------------------------------------------------------
# Command line


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="server.py",
        description="Broadcast Chat server: every line a client sends reaches "
                    "all the other clients.")
    add_server_options(parser)
    return parser.parse_args(argv)


def add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=helpers.DEFAULT_HOST,
                        help="address to listen on (default %(default)s; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=helpers.DEFAULT_PORT,
                        help="TCP port, 0 for any free one (default %(default)s)")
    parser.add_argument("--clients-file", default=helpers.DEFAULT_CLIENTS_FILE, metavar="PATH",
                        help="JSON list of the connected clients (default %(default)s)")
    parser.add_argument("--max-clients", type=int, default=helpers.DEFAULT_MAX_CLIENTS, metavar="N",
                        help="most clients at once; 0 for no limit (default %(default)s)")
    parser.add_argument("--max-per-address", type=int, default=helpers.DEFAULT_MAX_PER_ADDRESS,
                        metavar="N", help="most clients from one IP address; 0 for no limit "
                                          "(default %(default)s)")
    parser.add_argument("--queue-limit", type=int, default=helpers.DEFAULT_QUEUE_LIMIT,
                        metavar="BYTES", help="bytes waiting for one client before it is "
                                              "dropped as too slow (default %(default)s)")
    parser.add_argument("--rate-limit", type=float, default=helpers.DEFAULT_RATE_LIMIT,
                        metavar="LINES_PER_S", help="lines a second per client, 0 for no limit "
                                                    "(default %(default)s)")
    parser.add_argument("--burst", type=int, default=helpers.DEFAULT_BURST, metavar="LINES",
                        help="lines a client may send at once above the rate (default %(default)s)")
    parser.add_argument("--idle-timeout", type=float, default=0, metavar="SECONDS",
                        help="disconnect a client silent this long; 0 for never (default %(default)s)")
    parser.add_argument("--max-line", type=int, default=helpers.DEFAULT_MAX_LINE, metavar="BYTES",
                        help="longest line accepted (default %(default)s)")
    parser.add_argument("--tls-cert", metavar="FILE",
                        help="serve TLS only, with this certificate (PEM); needs --tls-key")
    parser.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    parser.add_argument("--password-file", metavar="FILE",
                        help="room password: the first line of FILE (or set %s); "
                             "clients must send /pass SECRET first" % helpers.PASSWORD_ENV)
    parser.add_argument("--version", action="version", version="%(prog)s " + helpers.__version__)


def failure_delay(count: int) -> float:
    """The wait before checking a password after count wrong ones in a row."""
    return min(FAILURE_DELAY * 2 ** (count - 1), FAILURE_DELAY_MAX)


def tls_context(options: argparse.Namespace) -> Optional[ssl.SSLContext]:
    """A server context with modern defaults: TLS 1.2 or newer."""
    if not options.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if hasattr(ssl, "TLSVersion"):
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    else:   # Python 3.6
        context.options |= ssl.OP_NO_TLSv1 | ssl.OP_NO_TLSv1_1
    for path in (options.tls_cert, options.tls_key):
        try:
            open(path, "rb").close()
        except OSError as exc:   # load_cert_chain's own error names no file
            raise ValueError("cannot read %s: %s" % (path, exc.strerror or exc))
    context.load_cert_chain(options.tls_cert, options.tls_key)
    return context


def check_options(options: argparse.Namespace) -> Optional[str]:
    if not 0 <= options.port <= 65535:
        return "bad port %d: use a number from 1 to 65535 (0 picks a free one)" % options.port
    for name in ("max_clients", "max_per_address", "rate_limit", "idle_timeout", "burst"):
        if getattr(options, name) < 0:
            return "--%s cannot be negative" % name.replace("_", "-")
    if options.queue_limit < 1024 or options.max_line < 16:
        return "--queue-limit must be at least 1024 and --max-line at least 16"
    folder = os.path.dirname(os.path.abspath(options.clients_file))
    if os.path.isdir(options.clients_file):
        return "cannot write the clients file %s: it is a directory" % options.clients_file
    if not os.path.isdir(folder):
        return "cannot write the clients file %s: the folder %s does not exist" % (options.clients_file, folder)
    if not os.access(folder, os.W_OK):
        return "cannot write the clients file %s: no permission in %s" % (options.clients_file, folder)
    if bool(options.tls_cert) != bool(options.tls_key):
        return "--tls-cert and --tls-key go together"
    return None


def raise_file_limit() -> int:
    """Each client is a file descriptor: allow as many as the system lets
    us. Returns the limit now in force (0 where it cannot be known)."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, ValueError, OSError):
        return 0


def bind_error(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        text = "port %d on %s is already in use: is another server running? Pick another with --port" % (port, host)
        if port == 5000:
            text += " (on macOS the AirPlay Receiver often holds port 5000)"
        return text
    if exc.errno == errno.EACCES:
        return "no permission to listen on port %d: ports below 1024 need root; use --port" % port
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return "cannot listen on %s: no such address on this machine" % host
    return "cannot listen on %s:%d: %s" % (host, port, exc.strerror or exc)


class Stop(BaseException):
    """Raised in the main thread by SIGTERM, like KeyboardInterrupt by SIGINT
    (and like it not an Exception, so no `except Exception` swallows it)."""


def _raise_stop(signum, frame) -> None:
    raise Stop()


def main(argv: Optional[List[str]] = None) -> int:
    options = parse_args(argv)
    return run(options)


def run(options: argparse.Namespace) -> int:
    problem = check_options(options)
    if problem:
        print("server.py: error: " + problem, file=sys.stderr)
        return 2
    raise_file_limit()
    threading.stack_size(THREAD_STACK)
    log = Log()
    log.start()
    try:
        server = ChatServer((options.host, options.port), options, log)
    except ssl.SSLError as exc:
        print("server.py: error: cannot use the TLS certificate and key: %s" % (
            exc.reason or exc), file=sys.stderr)
        return 2
    except ValueError as exc:
        print("server.py: error: %s" % exc, file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.filename:
            print("server.py: error: cannot read %s: %s" % (exc.filename, exc.strerror),
                  file=sys.stderr)
            return 2
        print("server.py: error: " + bind_error(options.host, options.port, exc), file=sys.stderr)
        return 1
    if not helpers.is_loopback(options.host) and server.tls_context is None and server.password is None:
        print("server.py: warning: listening on %s without TLS or a password: anyone who can "
              "reach this port can join and read the chat" % options.host, file=sys.stderr)
    try:
        helpers.write_json_atomic(options.clients_file, [])     # reset what a crashed run left
    except OSError as exc:
        # The checks in check_options cannot see everything (root passes
        # os.access; /proc refuses new files): the first write decides.
        print("server.py: error: cannot write the clients file %s: %s" % (
            options.clients_file, exc.strerror or exc), file=sys.stderr)
        server.server_close()
        return 2
    host, port = server.server_address[:2]
    shown = "[%s]" % host if ":" in host else host
    signal.signal(signal.SIGTERM, _raise_stop)
    try:
        server.start()
        print("Server running on %s:%d" % (shown, port), flush=True)
        server.serve_forever(poll_interval=0.5)
    except (KeyboardInterrupt, Stop):
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        server.stop()
        log("stop", "server stopped")
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
