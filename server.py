#!/usr/bin/env python3
"""Broadcast Chat server: every line one client sends reaches all the others.

Shape: a socketserver.ThreadingTCPServer with one handler thread per client
that reads and interprets its lines; a Room that holds the members, their
names and their bounded send queues; one Outbox thread that does every
socket write without ever blocking, so a client that stops reading delays
nobody; and a ClientsFile thread that keeps clients.json current.
"""

import argparse
import collections
import errno
import os
import selectors
import signal
import socket
import socketserver
import sys
import threading
import time
from typing import Deque, Dict, List, Optional, Tuple

import helpers
from helpers import Action

SMALL_READ = 4096           # what an idle handler holds while it waits
LARGE_READ = 65536          # used while a client keeps the pipe full
MAX_WRITE = 256 * 1024      # most bytes handed to one send()
FLOOD_STRIKES = 10          # refused batches in a row before a disconnect
THREAD_STACK = 512 * 1024
SHUTDOWN_GRACE = 1.0        # seconds to flush goodbyes at shutdown
CLIENTS_FILE_INTERVAL = 0.5 # seconds between two writes of clients.json

DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)


class Log:
    """One line per event on stdout: time, event, details."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stdout
        self.lock = threading.Lock()

    def __call__(self, event: str, *details: str) -> None:
        line = "%s %s %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), event,
                               " ".join(details))
        with self.lock:
            try:
                self.stream.write(line)
                self.stream.flush()
            except (OSError, ValueError):
                pass


class Member:
    """One connected client: its socket, name and send queue.

    The queue fields are guarded by Room.lock; `unsent` and `watched` belong
    to the Outbox thread alone.
    """

    __slots__ = ("sock", "host", "address", "connected_at", "name", "key", "queue",
                 "queued", "gone", "reason", "watched", "last_heard")

    def __init__(self, sock: socket.socket, peer: Tuple) -> None:
        self.sock = sock
        self.host = peer[0]
        self.address = helpers.format_address(peer)
        self.connected_at = time.time()
        self.name = None        # type: Optional[str]
        self.key = None         # type: Optional[str]
        self.queue = collections.deque()  # type: Deque[bytes]
        self.queued = 0         # bytes in queue and in flight
        self.gone = False       # left the room; the Outbox closes the socket
        self.reason = ""        # why the server dropped it, if it did
        self.watched = False    # the Outbox waits for it to become writable
        self.last_heard = time.monotonic()

    def __repr__(self) -> str:
        return "<Member %s %s>" % (self.name, self.address)


class Room:
    """The members and everything sent to them.

    Every queue change happens under one lock, so all members see events in
    one order. Notices (joins, leaves, renames) wait in a shared list and go
    out as one piece to everyone, so a thousand joins cost each member one
    queued write, not a thousand.
    """

    def __init__(self, queue_limit: int, max_clients: int, max_per_address: int,
                 log: Log) -> None:
        self.lock = threading.Lock()
        self.queue_limit = queue_limit
        self.max_clients = max_clients
        self.max_per_address = max_per_address
        self.log = log
        self.members = {}        # type: Dict[Member, None]  (ordered set)
        self.by_key = {}         # type: Dict[str, Member]
        self.per_host = collections.Counter()  # type: collections.Counter
        self.notices = []        # type: List[Tuple[bytes, Optional[Member]]]
        self.guest_serial = 0
        self.closing = False
        self.outbox = Outbox(self)
        self.on_change = lambda: None   # set by ClientsFile

    # -- membership ---------------------------------------------------------

    def admit(self, sock: socket.socket, peer: Tuple) -> Tuple[Optional[Member], str]:
        """Add a new connection, or say why not."""
        with self.lock:
            if self.closing:
                return None, "server shutting down"
            if self.max_clients and len(self.members) >= self.max_clients:
                return None, "server full"
            if self.max_per_address and self.per_host[peer[0]] >= self.max_per_address:
                return None, "too many connections from your address"
            member = Member(sock, peer)
            self.members[member] = None
            self.per_host[peer[0]] += 1
        self.on_change()
        return member, ""

    def leave(self, member: Member, reason: str) -> None:
        with self.lock:
            if member.gone:
                return
            member.gone = True
            del self.members[member]
            self.per_host[member.host] -= 1
            if self.per_host[member.host] <= 0:
                del self.per_host[member.host]
            if member.key is not None:
                del self.by_key[member.key]
                if not self.closing:
                    self._announce("%s left (%s)" % (member.name, member.reason or reason))
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
        stamp = helpers.clock_stamp()
        if old is None:
            others = len(self.by_key) - 1
            self._deliver(member, helpers.fmt_notice(
                stamp, "%s%s! %s. /help lists the commands." % (
                    helpers.WELCOME_PREFIX, member.name,
                    "You are alone here" if others == 0 else
                    "%d other%s online" % (others, "" if others == 1 else "s"))
            ).encode())
            self._announce("%s joined" % member.name, exclude=member)
        else:
            self._deliver(member, helpers.fmt_notice(
                stamp, "you are now known as %s" % member.name).encode())
            self._announce("%s is now known as %s" % (old, member.name), exclude=member)

    def find(self, name: str) -> Optional[Member]:
        with self.lock:
            return self.by_key.get(helpers.name_key(name))

    def names(self) -> List[str]:
        with self.lock:
            return sorted((m.name for m in self.by_key.values()), key=str.casefold)

    def snapshot(self) -> List[Dict]:
        with self.lock:
            members = list(self.members)
        return [helpers.client_record(m.name, m.address, m.connected_at) for m in members]

    # -- sending ------------------------------------------------------------

    def broadcast(self, data: bytes, sender: Member) -> None:
        """Queue data for every member but the sender."""
        with self.lock:
            self._flush_notices()
            for member in self.members:
                if member is not sender:
                    self._enqueue(member, data)

    def send(self, member: Member, data: bytes) -> None:
        with self.lock:
            self._deliver(member, data)

    def announce(self, text: str) -> None:
        with self.lock:
            self._announce(text)

    def _announce(self, text: str, exclude: Optional[Member] = None) -> None:
        line = helpers.fmt_notice(helpers.clock_stamp(), text).encode()
        self.notices.append((line, exclude))
        self.outbox.wake()

    def _deliver(self, member: Member, data: bytes) -> None:
        self._flush_notices()
        self._enqueue(member, data)

    def _flush_notices(self) -> None:
        """Queue the waiting notices for everyone, as one piece each."""
        if not self.notices:
            return
        notices, self.notices = self.notices, []
        shared = b"".join(line for line, _ in notices)
        excluded = {exclude for _, exclude in notices if exclude is not None}
        for member in self.members:
            if member in excluded:
                own = b"".join(line for line, exclude in notices if exclude is not member)
                if own:
                    self._enqueue(member, own)
            else:
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

    def _drop(self, member: Member, reason: str) -> None:
        """Disconnect a member; its handler thread sees the socket end."""
        member.reason = reason
        member.queue.clear()
        try:
            member.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def drop(self, member: Member, reason: str) -> None:
        with self.lock:
            if not member.gone:
                self._drop(member, reason)

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
        room = self.room
        more = False
        while True:
            writable = []
            timeout = 0 if more else (0.02 if self.stopping else None)
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
                room._flush_notices()
                batch = dict.fromkeys(self.ready + writable)  # once each, in order
                self.ready = []
                retiring, self.retiring = self.retiring, []
                jobs = [(m, self._take(m)) for m in batch if m.queue]
            results = [(m, data, self._send(m, data)) for m, data in jobs]
            more = False
            with room.lock:
                for member, data, sent in results:
                    member.queued -= sent
                    if sent < len(data) and not member.reason:
                        member.queue.appendleft(data[sent:])
                    elif member.queue:
                        self.ready.append(member)   # past MAX_WRITE: go on
                        more = True
                    self._watch(member, bool(member.queue))
                if self.stopping and time.monotonic() < self.deadline:
                    # Closing down: keep sockets open until their goodbye is out.
                    waiting = [m for m in retiring if m.queue]
                    self.retiring.extend(waiting)
                    retiring = [m for m in retiring if not m.queue]
            for member in retiring:
                self._close(member)
            if self.stopping and not self.retiring:
                with room.lock:
                    if not self.retiring:
                        return

    @staticmethod
    def _take(member: Member) -> bytes:
        queue = member.queue
        data = queue.popleft()
        if not queue or len(data) >= MAX_WRITE:
            return data
        parts = [data]
        size = len(data)
        while queue and size < MAX_WRITE:
            data = queue.popleft()
            parts.append(data)
            size += len(data)
        return b"".join(parts)

    def _send(self, member: Member, data: bytes) -> int:
        if member.reason and not self.stopping:
            return len(data)    # dropped: discard
        try:
            return member.sock.send(data, DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            return len(data)    # broken: its handler sees it end

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
        if member.queue and not member.reason:
            data = self._take(member)
            self._send(member, data)
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
        self.room.send(self.member, helpers.fmt_error(helpers.clock_stamp(), text).encode())

    def notice(self, text: str) -> None:
        self.room.send(self.member, helpers.fmt_notice(helpers.clock_stamp(), text).encode())

    def handle(self, lines: List[bytes], too_long: int, max_line: int) -> None:
        """Act on a batch of lines read together; messages go out together."""
        if too_long:
            self.error("line too long: %d line%s over %d bytes not sent" % (
                too_long, "" if too_long == 1 else "s", max_line))
        lines = [line for line in lines if line.strip()]
        if not lines:
            return
        granted = self.bucket.take(len(lines))
        if granted < len(lines):
            self.strikes += 1
            if self.strikes >= FLOOD_STRIKES:
                self.room.drop(self.member, "flooding")
                return
            self.error("flood: %d line%s not sent; the limit is %g lines a second" % (
                len(lines) - granted, "" if len(lines) - granted == 1 else "s", self.rate))
            lines = lines[:granted]
        else:
            self.strikes = 0
        stamp = helpers.clock_stamp()
        out = []    # type: List[str]
        for raw in lines:
            action = helpers.interpret(helpers.sanitize(helpers.decode(raw)))
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
            self.notice("%d online: %s" % (len(names), ", ".join(names) or "nobody named yet"))
        elif kind == "help":
            for line in helpers.HELP_LINES:
                self.notice(line)
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
            self.room.send(target, helpers.fmt_private_in(stamp, self.member.name, action.text).encode())
            self.room.send(self.member, helpers.fmt_private_out(stamp, target.name, action.text).encode())


class ChatHandler(socketserver.BaseRequestHandler):
    """One thread per client: read, frame, hand lines to its Session."""

    server = None  # type: ChatServer

    def handle(self) -> None:
        server = self.server
        sock = self.request
        server.tune(sock)
        member, refusal = server.room.admit(sock, self.client_address)
        address = helpers.format_address(self.client_address)
        if member is None:
            server.log("refuse", address, refusal)
            try:
                sock.send(helpers.fmt_error(helpers.clock_stamp(), refusal).encode(), DONTWAIT)
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
            return
        server.log("connect", address)
        reason = "connection lost"
        session = Session(server.room, member, server.rate_limit, server.burst)
        session.notice("Broadcast Chat %s: %d online. /nick NAME picks your name; "
                       "/help lists the commands." % (helpers.__version__, len(server.room.by_key)))
        framer = helpers.LineFramer(server.max_line)
        size = SMALL_READ
        try:
            while True:
                data = sock.recv(size)
                if not data:
                    break
                member.last_heard = time.monotonic()
                size = LARGE_READ if len(data) == size else SMALL_READ
                lines, too_long = framer.feed(data)
                session.handle(lines, too_long, server.max_line)
                if session.quit_reason is not None:
                    reason = session.quit_reason
                    break
        except OSError:
            pass
        except Exception as exc:   # a bug must cost one client, not the server
            server.log("error", address, "%s: %s" % (type(exc).__name__, exc))
            reason = "server error"
        finally:
            server.room.leave(member, reason)

    def finish(self) -> None:
        pass


class ChatServer(socketserver.ThreadingTCPServer):
    """The listening socket and accept loop, from the standard library."""

    allow_reuse_address = True
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024

    def __init__(self, address: Tuple[str, int], options: argparse.Namespace,
                 log: Log) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, ChatHandler)
        self.log = log
        self.max_line = options.max_line
        self.rate_limit = options.rate_limit
        self.burst = max(options.burst, 1)
        self.room = Room(options.queue_limit, options.max_clients,
                         options.max_per_address, log)
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

    def shutdown_request(self, request: socket.socket) -> None:
        """Sockets are closed by the Outbox (or the handler), never here."""

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        self.log("error", str(client_address), "%s: %s" % (type(exc).__name__, exc))

    def start(self) -> None:
        self.room.outbox.start()
        self.clients_file.write([])     # reset whatever a crashed run left
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
    parser.add_argument("--max-line", type=int, default=helpers.DEFAULT_MAX_LINE, metavar="BYTES",
                        help="longest line accepted (default %(default)s)")
    parser.add_argument("--version", action="version", version="%(prog)s " + helpers.__version__)


def check_options(options: argparse.Namespace) -> Optional[str]:
    if not 0 <= options.port <= 65535:
        return "bad port %d: use a number from 1 to 65535 (0 picks a free one)" % options.port
    for name in ("max_clients", "max_per_address", "rate_limit"):
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
    return None


def raise_file_limit() -> None:
    """Each client is a file descriptor: allow as many as the system lets us."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


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


class Stop(Exception):
    """Raised in the main thread by SIGTERM, like KeyboardInterrupt by SIGINT."""


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
    try:
        server = ChatServer((options.host, options.port), options, log)
    except OSError as exc:
        print("server.py: error: " + bind_error(options.host, options.port, exc), file=sys.stderr)
        return 1
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
