"""Server side of RFC 6455 WebSocket, without I/O.

Nothing here touches a socket or a thread: the functions parse and format
bytes, and a Connection turns received bytes into events and queues the bytes
to send back. The caller moves the bytes (see ws_echo.py for the whole loop);
the opening handshake is in handshake.py.

    response = handshake.handshake(head)
    send(response.to_bytes())
    if response.status == 101:
        connection = Connection(max_message_size=...)
        events = connection.receive_data(leftover_after_head + received)
        ...answer the events (send_text, ...)...
        send(connection.data_to_send())
        if connection.state is State.CLOSED: close the socket

No extension (permessage-deflate) and no subprotocol is negotiated.
"""

import codecs
import enum
import struct
from typing import List, Optional, Tuple

# --------------------------------------------------------------------------
# Frames

class Opcode(enum.IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(enum.IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005       # never on the wire: a Close frame without a code
    ABNORMAL = 1006        # never on the wire: no Close frame at all
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014


_OPCODES = frozenset(int(opcode) for opcode in Opcode)
# Plain ints for the receive path, where looking up an enum member costs
# more than the comparison it is for.
_CONTINUATION = int(Opcode.CONTINUATION)
_TEXT = int(Opcode.TEXT)
_CLOSE = int(Opcode.CLOSE)
_PING = int(Opcode.PING)
MAX_CONTROL_PAYLOAD = 125   # RFC 6455 5.5
MAX_CLOSE_REASON = MAX_CONTROL_PAYLOAD - 2


def valid_close_code(code: int) -> bool:
    """Whether code may travel in a Close frame: RFC 6455 7.4 and the IANA
    registry (1000-1003, 1007-1014), or the ranges left to libraries and
    applications (3000-4999)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def frame_header(opcode: int, length: int, fin: bool = True) -> bytes:
    """The header of an unmasked (server to client) frame whose payload is
    length bytes, for sending as [header, payload] without joining them."""
    if opcode >= Opcode.CLOSE and not (fin and 0 <= length <= MAX_CONTROL_PAYLOAD):
        raise ValueError("a control frame is final and carries at most 125 bytes")
    first = opcode | 0x80 if fin else opcode
    if 0 <= length < 126:
        return bytes((first, length))
    if 126 <= length < 0x10000:
        return struct.pack("!BBH", first, 126, length)
    if 0x10000 <= length < 1 << 63:
        return struct.pack("!BBQ", first, 127, length)
    raise ValueError("frame length out of range: %r" % (length,))


def encode_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    return frame_header(opcode, len(payload), fin) + payload


def encode_text(text: str) -> bytes:
    return encode_frame(Opcode.TEXT, text.encode("utf-8"))


def encode_binary(data: bytes) -> bytes:
    return encode_frame(Opcode.BINARY, data)


def encode_ping(payload: bytes = b"") -> bytes:
    return encode_frame(Opcode.PING, payload)


def encode_pong(payload: bytes = b"") -> bytes:
    return encode_frame(Opcode.PONG, payload)


def encode_close(code: Optional[int] = CloseCode.NORMAL, reason: str = "") -> bytes:
    """A Close frame; code None sends one without a status code (and so
    without a reason)."""
    if code is None:
        if reason:
            raise ValueError("a close reason needs a close code")
        return encode_frame(Opcode.CLOSE, b"")
    if not valid_close_code(code):
        raise ValueError("invalid close code: %r" % (code,))
    data = reason.encode("utf-8")
    if len(data) > MAX_CLOSE_REASON:
        raise ValueError("close reason over %d bytes" % MAX_CLOSE_REASON)
    return encode_frame(Opcode.CLOSE, struct.pack("!H", code) + data)


# From this size on, four bytes.translate() passes over the strided slices
# beat one XOR of the whole payload as a big integer; below it the integer
# XOR wins, having fewer steps.
_TRANSLATE_FROM = 16 * 1024


def _xor_int(data: bytes, mask: bytes) -> bytes:
    length = len(data)
    key = (mask * (length // 4 + 1))[:length]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(length, "little")


_XOR_TABLES = [_xor_int(bytes(range(256)), bytes((value,)) * 4) for value in range(256)]


def apply_mask(data: bytes, mask: bytes) -> bytes:
    """data XOR the 4-byte mask repeated (RFC 6455 5.3); masks and unmasks."""
    if len(data) < _TRANSLATE_FROM:
        return _xor_int(data, mask)
    out = bytearray(data)
    for index in range(4):
        out[index::4] = data[index::4].translate(_XOR_TABLES[mask[index]])
    return bytes(out)


# --------------------------------------------------------------------------
# UTF-8

_Utf8Decoder = codecs.getincrementaldecoder("utf-8")


def _second_byte_range(first: int) -> Tuple[int, int]:
    """The bytes that may follow a UTF-8 lead byte (Unicode Table 3-7)."""
    if first == 0xE0:
        return 0xA0, 0xBF     # shorter forms are overlong
    if first == 0xED:
        return 0x80, 0x9F     # ED A0..BF would encode a surrogate
    if first == 0xF0:
        return 0x90, 0xBF     # shorter forms are overlong
    if first == 0xF4:
        return 0x80, 0x8F     # above that is past U+10FFFF
    return 0x80, 0xBF


def valid_utf8_prefix(pending: bytes) -> bool:
    """Whether the start of a multi-byte sequence can still be completed."""
    if not pending:
        return True
    first = pending[0]
    if not 0xC2 <= first <= 0xF4:
        return False
    if len(pending) >= 2:
        low, high = _second_byte_range(first)
        if not low <= pending[1] <= high:
            return False
    return all(0x80 <= byte <= 0xBF for byte in pending[2:])


class Utf8Decoder:
    """Decodes UTF-8 that arrives in pieces, failing at the first byte that
    makes it invalid.

    CPython's incremental decoder (3.7 and later) holds ED A0..BF, the
    start of an encoded surrogate, until a third byte arrives; what it holds
    back is checked here, so a text message fails as soon as its invalid
    byte arrives (RFC 6455 8.1; Autobahn 6.4 checks it).
    """

    __slots__ = ("_decoder",)

    def __init__(self) -> None:
        self._decoder = _Utf8Decoder()

    def decode(self, data: bytes, final: bool = False) -> str:
        """The text of data; raises UnicodeDecodeError once it cannot be
        UTF-8, or, when final, when it ends inside a sequence."""
        text = self._decoder.decode(data, final)
        if not final:
            pending = self._decoder.getstate()[0]
            if pending and not valid_utf8_prefix(pending):
                raise UnicodeDecodeError("utf-8", pending, 0, len(pending),
                                         "invalid start of a sequence")
        return text


# --------------------------------------------------------------------------
# Events

_set_slot = object.__setattr__


class Event:
    """Something the peer did; small, immutable, compared by value."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("%s is immutable" % type(self).__name__)

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._values() == other._values()  # type: ignore

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((type(self),) + self._values())

    def __repr__(self) -> str:
        return "%s(%s)" % (type(self).__name__, ", ".join(map(repr, self._values())))


class Text(Event):
    """A whole text message."""
    __slots__ = ("data",)

    def __init__(self, data: str) -> None:
        _set_slot(self, "data", data)


class Binary(Event):
    """A whole binary message."""
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        _set_slot(self, "data", data)


class Ping(Event):
    """A ping; the Pong is already queued."""
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        _set_slot(self, "data", data)


class Pong(Event):
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        _set_slot(self, "data", data)


class Close(Event):
    """A Close frame: code 1005 (NO_STATUS) when it carried none."""
    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str = "") -> None:
        _set_slot(self, "code", code)
        _set_slot(self, "reason", reason)


# --------------------------------------------------------------------------
# Connection

class State(enum.Enum):
    OPEN = 1       # messages both ways
    CLOSING = 2    # our Close is sent; waiting for the peer's
    CLOSED = 3     # nothing more to read: flush data_to_send(), close the socket


class InvalidState(Exception):
    """A message or close sent after the connection's Close was written."""


class Connection:
    """One server-side WebSocket connection after a 101 response.

    receive_data() turns the client's bytes into events; data_to_send()
    returns the bytes owed to the client. Pongs are queued as their pings
    are read. A Close frame owed to the client (the reply to its Close, or
    the code of a protocol error it made) is written at the next
    data_to_send(), after anything the caller sends in answer to the
    events it was given; so until then send_text() and the like still work
    even when state is CLOSED.

    Once state is CLOSED, receive_data() returns no more events: the
    caller flushes data_to_send() and closes the TCP connection (RFC 6455
    7.1.1: the server closes it first). After close(), the state is
    CLOSING until the peer's Close arrives; how long to wait for it is the
    caller's choice.

    max_message_size bounds a message's payload, fragments added up; a
    frame that would pass it fails the connection (1009) from its header,
    before any of its payload is kept. None means no bound.
    """

    def __init__(self, max_message_size: Optional[int] = 1024 * 1024) -> None:
        self.max_message_size = max_message_size
        self.state = State.OPEN
        self.close_sent = None      # type: Optional[Close]
        self.close_received = None  # type: Optional[Close]
        self._close_unwritten = False
        self._output = []           # type: List[bytes]
        self._pending = b""         # an incomplete header or control frame
        # The frame being read: its header is parsed, its payload is not
        # all there yet.
        self._in_frame = False
        self._opcode = 0
        self._fin = False
        self._mask = b""
        self._length = 0
        self._received = 0          # payload bytes of the frame read so far
        # The message being read: opcode 0 when there is none.
        self._message_opcode = 0
        self._message_size = 0
        self._parts = []            # type: List
        self._decoder = None        # type: Optional[Utf8Decoder]

    # -- sending

    def data_to_send(self) -> bytes:
        """The bytes to write to the socket now, in order; clears them."""
        if self._close_unwritten:
            self._close_unwritten = False
            close = self.close_sent
            assert close is not None
            code = None if close.code == CloseCode.NO_STATUS else close.code
            self._output.append(encode_close(code, close.reason))
        data = b"".join(self._output)
        self._output = []
        return data

    def _check_can_send(self) -> None:
        if self._close_unwritten:
            return      # answering the events that came before the Close
        if self.close_sent is not None or self.state is State.CLOSED:
            raise InvalidState("the connection is closing or closed")

    def send_text(self, text: str) -> None:
        self._check_can_send()
        self._output.append(encode_text(text))

    def send_binary(self, data: bytes) -> None:
        self._check_can_send()
        self._output.append(encode_binary(data))

    def send_ping(self, data: bytes = b"") -> None:
        self._check_can_send()
        self._output.append(encode_ping(data))

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake (e.g. 1001 going away, 1008 policy,
        1011 internal error). Does nothing once a Close is sent or owed."""
        if self.state is not State.OPEN:
            return
        self._output.append(encode_close(code, reason))
        self.close_sent = Close(code, reason)
        self.state = State.CLOSING

    def receive_eof(self) -> None:
        """The peer closed the TCP connection: nothing more to read or send."""
        self.state = State.CLOSED
        self._close_unwritten = False

    def _fail(self, code: int, reason: str) -> None:
        """RFC 6455 7.1.7: send a Close with code unless one is sent, then
        stop reading."""
        if self.state is State.OPEN:
            self.close_sent = Close(code, reason)
            self._close_unwritten = True
        self.state = State.CLOSED

    # -- receiving

    def receive_data(self, data: bytes) -> List[Event]:
        """The events in data, which continues the bytes received before."""
        events = []  # type: List[Event]
        if self.state is State.CLOSED:
            return events
        if self._pending:
            data = self._pending + data
            self._pending = b""
        position = 0
        end = len(data)
        while self.state is not State.CLOSED:
            if not self._in_frame:
                header_end = self._read_header(data, position)
                if header_end < 0:
                    break
                position = header_end
            if self._opcode >= _CLOSE:
                if end - position < self._length:
                    break
                payload = data[position:position + self._length]
                position += self._length
                self._in_frame = False
                self._receive_control(apply_mask(payload, self._mask), events)
            else:
                available = min(self._length - self._received, end - position)
                if available == 0 and self._received < self._length:
                    break
                chunk = data[position:position + available]
                position += available
                self._receive_payload(chunk, events)
        if self.state is not State.CLOSED and position < end:
            self._pending = data[position:]
        return events

    def _read_header(self, data: bytes, position: int) -> int:
        """Parse the frame header at position: the position after it, or -1
        when it is incomplete or invalid (then the connection failed)."""
        available = len(data) - position
        if available < 2:
            return -1
        first, second = data[position], data[position + 1]
        opcode = first & 0x0F
        fin = bool(first & 0x80)
        length = second & 0x7F
        # Each check runs as soon as the bytes it needs are there.
        if first & 0x70:
            return self._reject(CloseCode.PROTOCOL_ERROR, "reserved bits set without an extension")
        if opcode not in _OPCODES:
            return self._reject(CloseCode.PROTOCOL_ERROR, "unknown opcode %d" % opcode)
        if not second & 0x80:
            return self._reject(CloseCode.PROTOCOL_ERROR, "client frame not masked")
        if opcode >= _CLOSE:
            if not fin:
                return self._reject(CloseCode.PROTOCOL_ERROR, "fragmented control frame")
            if length > MAX_CONTROL_PAYLOAD:
                return self._reject(CloseCode.PROTOCOL_ERROR, "control frame over 125 bytes")
        elif opcode == _CONTINUATION:
            if not self._message_opcode:
                return self._reject(CloseCode.PROTOCOL_ERROR, "continuation frame without a message")
        elif self._message_opcode:
            return self._reject(CloseCode.PROTOCOL_ERROR, "new message inside a fragmented one")
        if length == 126:
            mask_start = 4
        elif length == 127:
            mask_start = 10
        else:
            mask_start = 2
        if available < mask_start:
            return -1
        if length == 126:
            length = int.from_bytes(data[position + 2:position + 4], "big")
        elif length == 127:
            length = int.from_bytes(data[position + 2:position + 10], "big")
            if length >> 63:
                return self._reject(CloseCode.PROTOCOL_ERROR, "frame length over 2**63")
        if (opcode < _CLOSE and self.max_message_size is not None
                and self._message_size + length > self.max_message_size):
            return self._reject(CloseCode.MESSAGE_TOO_BIG,
                                "message over %d bytes" % self.max_message_size)
        header_length = mask_start + 4
        if available < header_length:
            return -1
        end = position + header_length
        self._in_frame = True
        self._opcode = opcode
        self._fin = fin
        self._mask = data[end - 4:end]
        self._length = length
        self._received = 0
        return end

    def _reject(self, code: int, reason: str) -> int:
        self._fail(code, reason)
        return -1

    def _receive_control(self, payload: bytes, events: List[Event]) -> None:
        opcode = self._opcode
        if opcode == _CLOSE:
            self._receive_close(payload, events)
        elif self.state is not State.OPEN:
            return
        elif opcode == _PING:
            self._output.append(encode_pong(payload))
            events.append(Ping(payload))
        else:
            events.append(Pong(payload))

    def _receive_close(self, payload: bytes, events: List[Event]) -> None:
        if len(payload) == 1:
            self._fail(CloseCode.PROTOCOL_ERROR, "close payload of one byte")
            return
        if not payload:
            code = CloseCode.NO_STATUS  # type: int
        else:
            code = int.from_bytes(payload[:2], "big")
            if not valid_close_code(code):
                self._fail(CloseCode.PROTOCOL_ERROR, "invalid close code %d" % code)
                return
        try:
            reason = payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            self._fail(CloseCode.INVALID_DATA, "close reason not UTF-8")
            return
        self.close_received = Close(code, reason)
        events.append(self.close_received)
        if self.state is State.OPEN:
            # RFC 6455 5.5.1: the reply echoes the status code received.
            self.close_sent = Close(code)
            self._close_unwritten = True
        self.state = State.CLOSED

    def _receive_payload(self, chunk: bytes, events: List[Event]) -> None:
        """Take the next bytes of a data frame's payload.

        A message that is one frame, all there, is unmasked and decoded in
        one go; any other is unmasked and checked piece by piece as its
        bytes arrive, so invalid UTF-8 fails at its first invalid byte.
        """
        if self._received == 0:
            if self._opcode != _CONTINUATION:
                if self._fin and len(chunk) == self._length:
                    self._in_frame = False
                    self._receive_message(self._opcode, apply_mask(chunk, self._mask), events)
                    return
                self._message_opcode = self._opcode
                if self._opcode == _TEXT:
                    self._decoder = Utf8Decoder()
            self._message_size += self._length
        offset = self._received % 4
        mask = self._mask[offset:] + self._mask[:offset] if offset else self._mask
        data = apply_mask(chunk, mask)
        self._received += len(chunk)
        frame_done = self._received == self._length
        if frame_done:
            self._in_frame = False
        last = frame_done and self._fin
        decoder = self._decoder
        if decoder is not None:
            try:
                self._parts.append(decoder.decode(data, last))
            except UnicodeDecodeError:
                self._fail(CloseCode.INVALID_DATA, "text message not UTF-8")
                return
        else:
            self._parts.append(data)
        if not last:
            return
        parts = self._parts
        self._parts = []
        self._decoder = None
        self._message_opcode = 0
        self._message_size = 0
        if self.state is not State.OPEN:
            return
        if decoder is not None:
            events.append(Text("".join(parts)))
        else:
            events.append(Binary(b"".join(parts)))

    def _receive_message(self, opcode: int, payload: bytes, events: List[Event]) -> None:
        if opcode == _TEXT:
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                self._fail(CloseCode.INVALID_DATA, "text message not UTF-8")
                return
            if self.state is State.OPEN:
                events.append(Text(text))
        elif self.state is State.OPEN:
            events.append(Binary(payload))
