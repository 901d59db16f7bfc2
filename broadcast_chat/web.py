"""Browsers on the chat port: telling clients apart, the page, WebSocket members.

One port serves three kinds of client. The first bytes tell them apart
(sniff): a raw line client (nc, telnet, client.py), an HTTP request, or,
on a server without TLS, a TLS ClientHello; with --tls-cert the same is
asked of the plain text inside TLS. An HTTP request is answered and
closed, except `GET /ws` with a WebSocket upgrade, which becomes a member
of the room in the JSON format: each text message is input lines, through
the same protocol.classify() and Session as a line client's reads. No byte
of an HTTP request head or body is ever read as chat.

The pure part (sniff, route, frame_pieces) has no sockets; WebMember and
WebSocketReader are the thin threaded shell, driven by server.ChatServer.
"""

import collections
import ipaddress
import os
import re
import socket
import ssl
import threading
import time
import urllib.parse
from typing import Callable, Iterable, List, Optional, Tuple

from . import handshake, tuning, websocket, wire
from .protocol import Action, LineFramer, classify
from .room import Member, Room
from .session import Session
from .tls import TlsCodec, recv_before
from .writer import Pieces

HTTP = "http"
LINE = "line"
TLS = "tls"
NEED_MORE = "need more"

_REQUEST_LINE = re.compile(rb"[A-Z]{1,16} [!-~]+ HTTP/1\.\d\r?\n")
# What a request line can look like before its end has arrived.
_REQUEST_PREFIX = re.compile(rb"[A-Z]{1,16}(?: (?:[!-~]+(?: (?:H(?:T(?:T(?:P(?:/(?:1(?:\.(?:\d\r?)?)?)?)?)?)?)?)?)?)?)?\Z")


def sniff(first: bytes) -> str:
    """What kind of client sent first (the first bytes it sent): HTTP,
    LINE, TLS (a ClientHello), or NEED_MORE while it could still become
    an HTTP request line (`METHOD SP target SP HTTP/1.x`).

    A request line longer than an HTTP head may be is still HTTP (and gets
    its 431), so that no part of it can become chat.
    """
    if first.startswith(b"\x16\x03"):
        return TLS
    end = first.find(b"\n")
    if end >= 0:
        return HTTP if _REQUEST_LINE.match(first, 0, end + 1) else LINE
    if not first or _REQUEST_PREFIX.match(first):
        return HTTP if len(first) >= handshake.MAX_HEAD_SIZE else NEED_MORE
    return LINE


# --------------------------------------------------------------------------
# Routes

PAGE_PATH = "/"
SOCKET_PATH = "/ws"

# The page is inline CSS and JS only: nothing may load from elsewhere, no
# form may post anywhere, no other site may frame it.
PAGE_HEADERS = [
    ("Content-Type", "text/html; charset=utf-8"),
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy",
     "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
     "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
     "frame-ancestors 'none'"),
    ("Connection", "close"),
]


def load_page() -> bytes:
    """The page, shipped as package data beside this module."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "page", "index.html")
    with open(path, "rb") as handle:
        return handle.read()


def host_name(host: Optional[str]) -> Optional[str]:
    """The name in a Host header (brackets of an IPv6 address and the port
    taken off), lower case; None when it is not one."""
    if not host:
        return None
    try:
        name = urllib.parse.urlsplit("//" + host.strip()).hostname
    except ValueError:
        return None
    return name.lower() if name else None


def local_host(name: Optional[str], allowed_origins: Iterable[str] = ()) -> bool:
    """Whether a server on a loopback address may answer a request for the
    Host name: localhost, an address, or the host of an --allow-origin. Any
    other name can only have reached it by DNS rebinding: a foreign page
    whose name was made to point here, which the Origin check alone lets
    through (its Origin and Host agree)."""
    if name is None:
        return False
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    return any(host_name(urllib.parse.urlsplit(origin).netloc) == name
               for origin in allowed_origins)


def route(request: handshake.RequestHead, page: bytes,
          allowed_origins: Iterable[str] = (), loopback: bool = False) -> handshake.Response:
    """The answer to a request: the page, a WebSocket upgrade (101), or an
    error. loopback: the server listens on a loopback address only."""
    path = request.path
    if path not in (PAGE_PATH, SOCKET_PATH):
        return handshake.error_response(404, "not found: the chat is at /")
    if request.method != "GET":
        return handshake.error_response(405, "only GET is served here", [("Allow", "GET")])
    if path == SOCKET_PATH:
        if loopback and not local_host(host_name(request.get("Host")), allowed_origins):
            return handshake.error_response(403, "unknown host name")
        return handshake.handshake_response(request, allowed_origins)
    return handshake.Response(200, PAGE_HEADERS, page)


# --------------------------------------------------------------------------
# Frames on the way out

class Framed(bytes):
    """Bytes that are WebSocket frames already (pongs, Close): sent as they are."""

    __slots__ = ()


_TEXT_HEADERS = [websocket.frame_header(websocket.Opcode.TEXT, length) for length in range(126)]


def text_header(length: int) -> bytes:
    if length < 126:
        return _TEXT_HEADERS[length]
    return websocket.frame_header(websocket.Opcode.TEXT, length)


def frame_pieces(pieces: Pieces) -> Pieces:
    """Queued pieces as WebSocket frames: a text frame's header before each
    piece, in the same iovec, so a piece shared by every member is never
    copied per member."""
    out = []    # type: Pieces
    append = out.append
    for piece in pieces:
        if type(piece) is Framed:
            append(piece)
        else:
            append(text_header(len(piece)))
            append(piece)
    return out


def socket_transform(tls: Optional[TlsCodec]) -> Callable[[Pieces], Pieces]:
    """Frame, then (with TLS) encrypt."""
    if tls is None:
        return frame_pieces

    def transform(pieces: Pieces) -> Pieces:
        return [tls.encrypt(b"".join(frame_pieces(pieces)))]
    return transform


def close_reason(text: str) -> str:
    """text cut to fit a Close frame (123 bytes of UTF-8)."""
    data = text.encode("utf-8")[:websocket.MAX_CLOSE_REASON]
    return data.decode("utf-8", "ignore")


def message_lines(text: str) -> bytes:
    """A text message as input lines (LF-ended), the way a read of a line client is."""
    return text.encode("utf-8") + b"\n"


class WebMember(Member):
    """A member connected by WebSocket: JSON from the start, and a Close
    frame after its last words. connection is its reader thread's alone."""

    __slots__ = ("connection",)

    def __init__(self, sock: socket.socket, peer: Tuple,
                 connection: websocket.Connection) -> None:
        super().__init__(sock, peer)
        self.fmt = wire.WEB
        self.connection = connection

    def last_words(self, data: bytes, reason: str, going_away: bool = False) -> bytes:
        """data as a text frame, then a Close: 1001 (going away) at shutdown,
        1008 (policy) for a member dropped by a rule."""
        code = (websocket.CloseCode.GOING_AWAY if going_away
                else websocket.CloseCode.POLICY_VIOLATION)
        return Framed(text_header(len(data)) + data
                      + websocket.encode_close(code, close_reason(reason)))


def refusal(code: str, text: str) -> bytes:
    """What a WebSocket connection turned away before joining is sent:
    a JSON error, then a Close (1008)."""
    data = wire.error(wire.JSON, code, text, time.time())
    return (text_header(len(data)) + data
            + websocket.encode_close(websocket.CloseCode.POLICY_VIOLATION, close_reason(text)))


# --------------------------------------------------------------------------
# The threaded shell

class HttpExchange:
    """One HTTP connection until it is answered, or until it is a WebSocket.

    read_head() reads the request head (within the handshake deadline);
    send() sends the response; after a 101, leftover holds the bytes that
    came after the head, the start of the WebSocket connection.
    """

    recv_size = 4096
    linger = 1.0    # seconds to read what the client still sends before closing

    def __init__(self, sock: socket.socket, tls: Optional[TlsCodec], arrived: bytes,
                 deadline: float) -> None:
        self.sock = sock
        self.tls = tls
        self.buffer = arrived
        self.deadline = deadline
        self.leftover = b""

    def recv(self, what: str) -> bytes:
        data = recv_before(self.sock, self.recv_size, self.deadline, what)
        if not data:
            raise ConnectionError("connection closed during %s" % what)
        if self.tls is not None:
            data, reply, _ = self.tls.decrypt(data)
            if reply:
                self.sock.sendall(self.tls.encrypt(b""))
        return data

    def send(self, data: bytes) -> None:
        self.sock.sendall(self.tls.encrypt(data) if self.tls is not None else data)

    def read_head(self) -> bytes:
        """The request head; raises handshake.RequestError (431) when too large."""
        while True:
            end = handshake.find_head_end(self.buffer)
            if end:
                head, self.leftover = self.buffer[:end], self.buffer[end:]
                return head
            self.buffer += self.recv("the HTTP request")

    def finish(self) -> None:
        """End a connection that is not a WebSocket without losing the
        response: a socket closed with unread data (a POST body) resets,
        which can discard the response before the client reads it."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
            until = time.monotonic() + self.linger
            while True:
                left = min(self.deadline, until) - time.monotonic()
                if left <= 0:
                    break
                self.sock.settimeout(left)
                if not self.sock.recv(self.recv_size):
                    break
        except (OSError, ssl.SSLError):
            pass


class HttpSlots:
    """HTTP exchanges under way, by address. A request head may take until
    the handshake deadline and is no member yet, so the room does not count
    it: with a limit (--max-per-address), one address may hold at most that
    many at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = collections.Counter()   # type: collections.Counter
        self.lock = threading.Lock()

    def take(self, host: str) -> bool:
        with self.lock:
            if self.limit and self.open[host] >= self.limit:
                return False
            self.open[host] += 1
            return True

    def give(self, host: str) -> None:
        with self.lock:
            self.open[host] -= 1
            if self.open[host] <= 0:
                del self.open[host]


class LateHttpGuard:
    """A line client that was silent while sniff() waited (nc waits for the
    banner) may yet be a browser whose request came late. Its bytes are
    held until sniff() can tell; take() returns None for an HTTP request,
    which must then be closed, never read as chat."""

    __slots__ = ("held", "done")

    def __init__(self) -> None:
        self.held = b""
        self.done = False

    def take(self, data: bytes) -> Optional[bytes]:
        """The bytes to read as lines now (b"" while undecided), or None."""
        if self.done:
            return data
        held = self.held + data
        kind = sniff(held)
        if kind == HTTP:
            return None
        if kind == NEED_MORE:
            self.held = held
            return b""
        self.done = True
        self.held = b""
        return held


def first_bytes(sock: socket.socket, tls: Optional[TlsCodec], arrived: bytes,
                wait: float, deadline: float) -> Tuple[str, bytes]:
    """Read until sniff() can tell what the client is, for at most wait
    seconds: (kind, the bytes read). NEED_MORE when wait passed first: a
    line client, as far as anyone can tell yet (see LateHttpGuard)."""
    until = min(deadline, time.monotonic() + wait)
    data = arrived
    kind = sniff(data)
    while kind == NEED_MORE:
        if time.monotonic() >= until:
            return NEED_MORE, data
        try:
            chunk = recv_before(sock, 4096, until, "the first bytes")
        except (socket.timeout, TimeoutError):
            return NEED_MORE, data
        if not chunk:
            raise ConnectionError("connection closed before it said anything")
        if tls is not None:
            chunk, reply, closed = tls.decrypt(chunk)
            if reply:
                sock.sendall(tls.encrypt(b""))
            if closed:
                raise ConnectionError("connection closed before it said anything")
        data += chunk
        kind = sniff(data)
    if kind == TLS and tls is not None:
        kind = LINE     # inside TLS, the bytes are what they are
    return kind, data


class WebSocketReader:
    """Reads one WebSocket member's messages until it leaves.

    Messages become input lines for its Session; pongs and Close frames the
    Connection owes go through the member's send queue, after whatever was
    queued before them.
    """

    small_read = 1024
    large_read = 65536

    def __init__(self, room: Room, member: WebMember, session: Session,
                 tls: Optional[TlsCodec], max_line: int) -> None:
        self.room = room
        self.member = member
        self.session = session
        self.tls = tls
        self.framer = LineFramer(max_line)

    def flush(self) -> None:
        """Queue what the Connection owes the client. Once that holds our
        Close, the queue is ended with it, so nothing is sent after it."""
        connection = self.member.connection
        out = connection.data_to_send()
        if not out:
            return
        if connection.close_sent is None:
            self.room.tell(self.member, Framed(out))
            return
        with self.room.lock:
            self.room.writer.end(self.member.queue, self.why(), Framed(out))

    def why(self) -> str:
        """Why the member leaves, once its connection is closing."""
        connection = self.member.connection
        if self.session.quit_reason is not None:
            return self.session.quit_reason
        if connection.close_received is not None:
            return "closed"
        sent = connection.close_sent
        return "protocol error: %s" % (sent.reason if sent is not None else "closed")

    def take(self, events: List[websocket.Event]) -> None:
        """Act on the events of one read."""
        member, session = self.member, self.session
        for event in events:
            if session.quit_reason is not None:
                break
            if isinstance(event, websocket.Text):
                steps, too_long = classify(self.framer, message_lines(event.data),
                                           fast=member.name is not None)
                session.handle(steps, too_long)
            elif isinstance(event, websocket.Binary):
                member.connection.close(websocket.CloseCode.UNSUPPORTED_DATA,
                                        "text messages only")
                session.quit_reason = "sent a binary message"
        if session.quit_reason is not None:
            member.connection.close(websocket.CloseCode.NORMAL, "goodbye")
        self.flush()

    def run(self, early: List[websocket.Event]) -> str:
        """Serve the member; returns why it left."""
        member, session, room = self.member, self.session, self.room
        connection = member.connection
        writer = room.writer
        sock = member.sock
        waiter = tuning.ReadWaiter(sock)
        size = self.small_read
        full = False
        session.hello(Action("hello", "", "json"))
        self.take(early)
        while session.quit_reason is None and connection.state is websocket.State.OPEN:
            if writer.lagging:
                writer.wait_for_space()
            if not full:
                waiter.wait()
                if member.queue.ended:      # dropped: a wake-up may be all it got
                    return member.queue.reason or "connection lost"
            try:
                data = sock.recv(size)
            except BlockingIOError:
                full = False
                continue
            if not data:
                connection.receive_eof()
                return "connection lost"
            full = len(data) == size
            size = self.large_read if full else self.small_read
            if self.tls is not None:
                data, reply, closed = self.tls.decrypt(data)
                if reply:
                    room.poke(member)
                if closed:
                    return "connection lost"
            self.take(connection.receive_data(data))
        return self.why()


def read_first_message(connection: websocket.Connection, exchange: HttpExchange
                       ) -> Tuple[Optional[str], List[websocket.Event]]:
    """The first text message (None if the connection ended first) and the
    events that came after it in the same read."""
    events = connection.receive_data(exchange.leftover)
    while True:
        for index, event in enumerate(events):
            if isinstance(event, websocket.Text):
                return event.data, events[index + 1:]
            if isinstance(event, (websocket.Binary, websocket.Close)):
                return None, []
        if connection.state is not websocket.State.OPEN:
            return None, []
        events = connection.receive_data(exchange.recv("the password"))
