"""The server's threaded shell: the listening socket, a reader thread per
client, what comes before joining (TLS, HTTP, the password), and shutdown
(startup.py starts it from the command line).

The path of one line: a reader thread's recv() -> protocol.classify()
(steps: a Say block or commands) -> Session.handle() (flood limit) ->
Room.say() (orders it: an Event with an id, under the lock) ->
Room._fan_out() (one rendering per format, Writer.put_all() over the
members' send queues) -> in a room of up to 16, this thread's own
Writer.write() to each member; in a larger one the Writer thread's:
Writer._take() (a member's queued pieces) -> Writer.write() (one
non-blocking send or sendmsg of them all).
"""

import _thread
import errno
import hmac
import os
import selectors
import socket
import ssl
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import handshake, history, resp, tuning, web, websocket, wire
from .cluster import Cluster
from .admission import Arrival, Gate
from .config import ServerConfig
from .log import Log
from .net import address_group, format_address, is_loopback
from .persistence import ClientsFile
from .protocol import LineFramer, classify, interpret_lines
from .room import Member, Room
from .session import Session
from .tls import TlsCodec, describe_tls_error, modern, read_password, recv_before, tls_handshake
from .writer import Writer

PASSWORD_NEEDED = ("password needed: this chat has a password; send /pass SECRET first "
                   "(client.py reads it from BROADCAST_PASSWORD or --password-file)")
WRONG_PASSWORD = "wrong password"
TOO_MANY_CHECKS = ("too many password attempts from your address at once; "
                   "try again in a few seconds")


class Refused(Exception):
    """A connection turned away before it joins: the text is for the log."""


class ChatServer:
    """The listening socket, its accept loop, and everything it starts.

    Shaped like the standard library's socketserver.BaseServer:
    serve_forever() until shutdown() (from another thread) or an exception
    in this one; close() says goodbye to every member and stops the rest.
    """

    accept_batch = 256          # connections accepted per wake-up
    small_read = 1024           # what an idle reader holds while it waits
    large_read = 65536          # used while a client keeps the pipe full
    shutdown_grace = 1.0        # seconds to flush goodbyes at shutdown
    listen_backlog = 4096       # the kernel caps it at net.core.somaxconn
    # How long a new connection may stay silent before it is taken for a
    # line client and sent the banner. A browser sends its request at once
    # (with the TCP handshake's last ACK, or TLS's Finished), so this only
    # covers jitter; a line client that speaks first is never delayed.
    sniff_wait = 0.1

    def __init__(self, config: ServerConfig, log: Log) -> None:
        """Raises OSError when the address cannot be bound, and ssl.SSLError
        or ValueError for an unusable certificate, key, password or history file."""
        self.config = config
        self.log = log
        self.tls_context = server_tls_context(config)
        self.password = read_password(config.password_file, os.environ)
        self.page = web.load_page()
        self.http_slots = web.HttpSlots(config.max_per_address)
        self.listener = self.bind(config.host, config.port, shared=bool(config.redis))
        self.gate = Gate(counts_handshakes=self.tls_context is not None or
                         self.password is not None)
        self.writer = Writer(threading.Lock(), config.queue_limit, log)
        self.history_file = history.open_history_file(config, log)
        self.room = Room(self.writer, log, config.max_clients, config.max_per_address,
                         config.idle_timeout, **history.room_options(config, self.history_file))
        self.cluster = None     # type: Optional[Cluster]
        if config.redis:
            self.cluster = Cluster(self.room, resp.parse_url(config.redis), read_password(
                config.redis_password_file, os.environ, "REDIS_PASSWORD"), log,
                keep=config.history_keep, node=config.node, presence_ttl=config.presence_ttl)
        self.clients_file = ClientsFile(config.clients_file, config.clients_file_interval,
                                        self.snapshot, log)
        self.room.on_change = self.clients_file.changed
        self.timers = threading.Thread(target=self.room.run_timers, name="room-timers",
                                       daemon=True)
        self.accept_failing = False
        self.stopping = False
        self.stopped = threading.Event()
        self.wake_reader, self.wake_writer = socket.socketpair()
        # Made here, so that a started server has every descriptor it keeps.
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.selector.register(self.wake_reader, selectors.EVENT_READ)

    @staticmethod
    def bind(host: str, port: int, shared: bool = False) -> socket.socket:
        """The listening socket; shared: other servers of a cluster may
        listen on the same port (SO_REUSEPORT: the kernel spreads the
        connections among them), where the platform can."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            if shared and hasattr(socket, "SO_REUSEPORT"):
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if os.name == "nt":
                # SO_REUSEADDR would let two servers share the port there;
                # this keeps anyone else from binding it while we hold it.
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
            else:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(ChatServer.listen_backlog)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        return listener

    def snapshot(self) -> List[Dict[str, Any]]:
        """What clients.json lists: the members of this server (in a
        cluster, each with this server's node name)."""
        records = self.room.snapshot()
        if self.cluster is not None:
            for record in records:
                record["node"] = self.cluster.node
        return records

    @property
    def server_address(self) -> Tuple:
        return self.listener.getsockname()

    def __enter__(self) -> "ChatServer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- the accept loop ---------------------------------------------------------

    def start(self) -> None:
        if self.history_file is not None:
            self.history_file.start()
        self.writer.start()
        self.timers.start()
        self.clients_file.start()
        if self.cluster is not None:
            self.cluster.start()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        try:
            while not self.stopping:
                for key, _ in self.selector.select(poll_interval):
                    if key.fileobj is self.listener:
                        self.accept_waiting()
        finally:
            self.stopped.set()

    def shutdown(self) -> None:
        """Make serve_forever() return, and wait for it (from another thread)."""
        self.stopping = True
        try:
            self.wake_writer.send(b"!")
        except OSError:
            pass
        self.stopped.wait()

    def accept_waiting(self) -> None:
        """Accept every connection waiting, not one per wake-up: connection
        storms otherwise overflow the listen queue and clients wait seconds
        for their SYN to be retried."""
        for _ in range(self.accept_batch):
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if gone_before_accept(exc):
                    continue        # reset while it waited: take the next
                # Out of file descriptors, most likely.
                if not self.accept_failing:
                    self.log("error", "accept failed: %s; raise the open-file limit "
                                      "(ulimit -n) or lower --max-clients" % (exc.strerror or exc))
                    self.accept_failing = True
                time.sleep(0.1)     # back off; the waiting connection stays queued
                return
            self.accept_failing = False
            self.start_reader(sock, peer)

    def start_reader(self, sock: socket.socket, peer: Tuple) -> None:
        """Start the connection's thread. Handshakes are counted here, in
        the order connections came; the thread starts without waiting for it
        to run (threading.Thread.start() waits: a thread switch each)."""
        host = address_group(peer[0])
        with self.room.lock:
            members, from_host = len(self.room.members), self.room.per_host[host]
        config = self.config
        arrival = Arrival(self.gate, host, self.gate.begin_handshake(
            host, members, from_host, config.max_clients, config.max_per_address))
        try:
            arrival.hold_slot()
            _thread.start_new_thread(self.serve_connection, (sock, peer, arrival))
        except BaseException:
            # No thread (or a signal while waiting for a slot): give the
            # counts back. Arrival's methods run once, whoever calls first.
            arrival.release()
            close_socket(sock)
            raise

    # -- one connection ----------------------------------------------------------

    def serve_connection(self, sock: socket.socket, peer: Tuple, arrival: Arrival) -> None:
        """A connection's thread: a bug here costs one client, not the server."""
        try:
            self.handle(sock, peer, arrival)
        except Exception as exc:
            self.log("error", format_address(peer), "%s: %s\n%s" % (
                type(exc).__name__, exc, traceback.format_exc().rstrip()))
            if not arrival.admitted:
                close_socket(sock)
        finally:
            arrival.release()

    def handle(self, sock: socket.socket, peer: Tuple, arrival: Arrival) -> None:
        address = format_address(peer)
        framer = LineFramer(self.config.max_line)
        if arrival.refusal:
            arrival.settle()
            self.log("refuse", address, arrival.refusal + " (before joining)")
            if self.tls_context is None:
                say_now(sock, None, arrival.refusal)
            return close_socket(sock)
        if self.gate.counts_handshakes:
            arrival.settle()    # counted already; the handshake may take a while
        try:
            tuning.tune_socket(sock)
            sock.settimeout(self.gate.handshake_timeout)
            deadline = time.monotonic() + self.gate.handshake_timeout
            tls, arrived = self.open_tls(sock, deadline)
            kind, arrived = web.first_bytes(sock, tls, arrived, self.sniff_wait, deadline)
            if kind == web.TLS:
                # Plain text back makes the client's TLS say "does not speak TLS".
                say_now(sock, tls, "this server does not use TLS")
                raise Refused("spoke TLS to a server without TLS")
            upgraded = None     # type: Optional[Tuple[websocket.Connection, List[websocket.Event]]]
            early = []          # type: List[bytes]
            if kind == web.HTTP:
                # A slow request head must not hold a slot that others wait for.
                arrival.settle()
                if not self.http_slots.take(arrival.host):
                    send_now(sock, tls, handshake.error_response(
                        503, "too many connections from your address").to_bytes())
                    raise Refused("too many HTTP requests from the address at once")
                try:
                    upgraded = self.serve_http(sock, tls, arrived, address, arrival.host,
                                               deadline)
                finally:
                    self.http_slots.give(arrival.host)
                if upgraded is None:
                    return close_socket(sock)
            elif self.password is not None:
                early = self.authenticate(sock, tls, framer, arrival.host, arrived, deadline)
                arrived = b""
        except Refused as exc:
            self.log("refuse", address, str(exc))
            return close_socket(sock)
        except ssl.SSLError as exc:
            self.log("refuse", address, "TLS handshake failed: " + describe_tls_error(exc))
            return close_socket(sock)
        except (OSError, ValueError) as exc:
            self.log("refuse", address, "lost before joining: %s" % (
                getattr(exc, "strerror", None) or exc or type(exc).__name__))
            return close_socket(sock)
        finally:
            arrival.end_handshake()
        sock.setblocking(False)     # from here on the Writer writes it, never waiting
        if upgraded is not None:
            member = web.WebMember(sock, peer, upgraded[0])     # type: Member
            transform = web.socket_transform(tls)
        else:
            member = Member(sock, peer)
            transform = tls_transform(tls) if tls else None
        refusal = self.room.admit(member, transform)
        arrival.admitted = refusal is None
        arrival.settle()
        if refusal is not None:
            self.log("refuse", address, refusal)
            if upgraded is not None:
                send_now(sock, tls, web.refusal("refused", refusal))
            else:
                say_now(sock, tls, refusal)
            return close_socket(sock)
        self.log("connect", address)
        if upgraded is not None:
            self.converse_web(member, upgraded[1], tls)
        else:
            guard = web.LateHttpGuard() if kind == web.NEED_MORE else None
            self.converse(member, framer, early, tls, arrived, guard)

    def converse(self, member: Member, framer: LineFramer, early: List[bytes],
                 tls: Optional[TlsCodec], first: bytes = b"",
                 guard: Optional[web.LateHttpGuard] = None) -> None:
        """Read the member's lines until it leaves: the lines that came
        with the password, then the bytes read to tell what the client
        is, then what it sends (held by guard until it is surely no HTTP)."""
        self.serve_member(member, lambda: self.read_lines(member, framer, early, tls, first,
                                                         guard))

    def read_lines(self, member: Member, framer: LineFramer, early: List[bytes],
                   tls: Optional[TlsCodec], first: bytes,
                   guard: Optional[web.LateHttpGuard]) -> str:
        """converse()'s loop; returns why the member left."""
        config, room, writer = self.config, self.room, self.writer
        sock = member.sock
        session = Session(room, member, config.rate_limit, config.burst, config.max_line,
                          room.clock)
        session.banner()
        reason = "connection lost"
        waiter = tuning.ReadWaiter(sock)
        size = self.small_read
        full = False    # the last read filled the buffer: more is likely waiting
        if early:
            session.handle(interpret_lines(early), 0)
        data = first    # read already, and plain text
        while session.quit_reason is None:
            if not data:
                if writer.lagging:
                    writer.wait_for_space()
                if not full:
                    waiter.wait()
                    if member.queue.ended:      # dropped: a wake-up may be all it got
                        break
                try:
                    data = sock.recv(size)
                except BlockingIOError:
                    full = False
                    continue
                if not data:
                    break
                full = len(data) == size
                size = self.large_read if full else self.small_read
                if tls is not None:
                    data, reply, closed = tls.decrypt(data)
                    if reply:
                        room.poke(member)
                    if closed:
                        break
            if guard is not None:
                data = guard.take(data)
                if data is None:
                    reason = "an HTTP request after the banner"
                    break
                if guard.done:
                    guard = None
            steps, too_long = classify(framer, data, fast=member.name is not None)
            data = b""
            session.handle(steps, too_long)
        if session.quit_reason is not None:
            reason = session.quit_reason
        return reason

    def converse_web(self, member: Member, early: List[websocket.Event],
                     tls: Optional[TlsCodec]) -> None:
        """Read a WebSocket member's messages until it leaves."""
        config, room = self.config, self.room
        assert isinstance(member, web.WebMember)
        session = Session(room, member, config.rate_limit, config.burst, config.max_line,
                          room.clock)
        reader = web.WebSocketReader(room, member, session, tls, config.max_line)
        self.serve_member(member, lambda: reader.run(early))

    def serve_member(self, member: Member, read: Callable[[], str]) -> None:
        """Run read() (it returns why the member left) and take the member
        out of the room: a bug costs one client, not the server."""
        reason = "connection lost"
        try:
            reason = read()
        except (OSError, ssl.SSLError):
            pass
        except Exception as exc:
            self.log("error", member.address, "%s: %s\n%s" % (
                type(exc).__name__, exc, traceback.format_exc().rstrip()))
            reason = "server error"
        finally:
            self.room.leave(member, reason)

    # -- before joining: HTTP, TLS and the password --------------------------------

    def serve_http(self, sock: socket.socket, tls: Optional[TlsCodec], arrived: bytes,
                   address: str, host: str, deadline: float
                   ) -> Optional[Tuple[websocket.Connection, List[websocket.Event]]]:
        """Answer an HTTP request. For a WebSocket upgrade (with the room's
        password as its first message, if it has one) return the connection
        and the events read after the password; otherwise None."""
        exchange = web.HttpExchange(sock, tls, arrived, deadline)
        try:
            request = handshake.parse_request_head(exchange.read_head())
        except handshake.RequestError as exc:
            response, what = exc.response(), "-"
        else:
            response = web.route(request, self.page, self.config.allow_origins,
                                 loopback=is_loopback(self.config.host))
            what = "%s %s" % (request.method, request.target[:100])
        exchange.send(response.to_bytes())
        self.log("http", address, "%s %d" % (what, response.status))
        if response.status != 101:
            exchange.finish()
            return None
        connection = websocket.Connection(max_message_size=self.config.max_line)
        if self.password is None:
            return connection, connection.receive_data(exchange.leftover)
        text, events = web.read_first_message(connection, exchange)
        lines = LineFramer(self.config.max_line).feed(web.message_lines(text or ""))[0]
        problem = self.check_password(lines[0] if lines else b"", host)
        if problem is not None:
            code, text, why = problem
            exchange.send(web.refusal(code, text))
            exchange.finish()
            raise Refused(why)
        if len(lines) > 1:
            events.insert(0, websocket.Text(b"\n".join(lines[1:]).decode("utf-8", "replace")))
        return connection, events

    def open_tls(self, sock: socket.socket,
                 deadline: float) -> Tuple[Optional[TlsCodec], bytes]:
        """The TLS codec (None without TLS) and the plain text that came with the handshake."""
        if self.tls_context is None:
            return None, b""
        codec = TlsCodec(self.tls_context, server_side=True)
        return codec, tls_handshake(sock, codec, deadline)

    def authenticate(self, sock: socket.socket, tls: Optional[TlsCodec],
                     framer: LineFramer, host: str, arrived: bytes,
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
            data = recv_before(sock, 4096, deadline, "the password")
            if not data:
                raise Refused("no password given")
            if tls is None and first and data.startswith(b"\x16\x03"):
                # Plain text back makes the client's TLS say "does not speak TLS".
                say_now(sock, tls, "this server does not use TLS")
                raise Refused("spoke TLS to a server without TLS")
            if tls is not None:
                data, reply, _ = tls.decrypt(data)
                if reply:
                    sock.sendall(tls.encrypt(b""))
            first = False
            lines, too_long = framer.feed(data)
        if too_long:
            lines.append(b"")
        problem = self.check_password(lines[0], host)
        if problem is not None:
            say_now(sock, tls, problem[1])
            raise Refused(problem[2])
        return lines[1:]

    def check_password(self, line: bytes, host: str) -> Optional[Tuple[str, str, str]]:
        """None when line is /pass with the room's password; else the
        refusal's code, its text for the client and for the log. Repeated
        failures from one address wait longer and longer for their answer."""
        assert self.password is not None
        word, _, rest = line.partition(b" ")
        given = rest.lstrip(b" ") if word.lower() == b"/pass" else None
        if given is None:
            return "password_needed", PASSWORD_NEEDED, "no password given"
        wait = self.gate.begin_check(host)
        if wait is None:
            return "too_many_checks", TOO_MANY_CHECKS, "too many password attempts at once"
        try:
            time.sleep(wait)     # throttling, not waiting for anything
            right = hmac.compare_digest(given, self.password)
        finally:
            self.gate.end_check(host)
        if not right:
            self.gate.record_failure(host)
            return "wrong_password", WRONG_PASSWORD, "wrong password"
        self.gate.record_success(host)
        return None

    # -- the end -----------------------------------------------------------------

    def close(self) -> None:
        """Stop accepting, say goodbye, close every socket, empty the file."""
        self.listener.close()
        if self.cluster is not None:
            self.cluster.stop("server shutting down")
        self.room.close("server shutting down", self.shutdown_grace)
        self.timers.join(1.0)
        if self.history_file is not None:
            self.history_file.close()
        self.clients_file.stop()
        self.clients_file.write([])
        self.selector.close()
        self.wake_reader.close()
        self.wake_writer.close()


def tls_transform(codec: TlsCodec):
    """What the writer sends for queued pieces: one TLS record run."""
    def transform(pieces: List[bytes]) -> List[bytes]:
        return [codec.encrypt(b"".join(pieces))]
    return transform


def say_now(sock: socket.socket, tls: Optional[TlsCodec], text: str) -> None:
    """Send one error line to a socket that is not in the room, never waiting."""
    send_now(sock, tls, wire.error(wire.TEXT, "refused", text, time.time()))


def send_now(sock: socket.socket, tls: Optional[TlsCodec], data: bytes) -> None:
    """Send bytes to a socket that is not in the room, never waiting."""
    try:
        sock.setblocking(False)
        sock.send(tls.encrypt(data) if tls else data)
    except (OSError, ssl.SSLError):
        pass


def close_socket(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def server_tls_context(config: ServerConfig) -> Optional[ssl.SSLContext]:
    """A server context with modern defaults: TLS 1.2 or newer."""
    if not config.tls_cert:
        return None
    context = modern(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
    for path in (config.tls_cert, config.tls_key):
        try:
            open(path, "rb").close()
        except OSError as exc:   # load_cert_chain's own error names no file
            raise ValueError("cannot read %s: %s" % (path, exc.strerror or exc))
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


# accept() errors for a connection reset before it was taken (Windows
# reports them as WSAECONNRESET, WSAECONNABORTED or WSAENOTCONN).
GONE_ERRNOS = frozenset((errno.ECONNRESET, errno.ECONNABORTED, errno.ENOTCONN))
GONE_WINERRORS = frozenset((10053, 10054, 10057))
WSAEACCES = 10013


def gone_before_accept(exc: OSError) -> bool:
    return exc.errno in GONE_ERRNOS or getattr(exc, "winerror", None) in GONE_WINERRORS
