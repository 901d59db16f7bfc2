"""The client's connection: a socket to the server read as lines (TLS in
memory), joining under a name in the JSON mode, where in the room's
stream of events the client is (to resume after a reconnect), and which
of the lines it sent the room has been seen to take."""

import collections
import socket
import ssl
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from .config import DEFAULT_PORT
from .net import format_address
from .names import name_variant
from .protocol import LineFramer, Say, interpret_lines
from .text import decode
from .tls import TlsCodec, describe_tls_error, tls_handshake
from .wire import parse_json_line, parse_server_line

REGISTER_TIMEOUT = 10.0

Received = Union[Dict[str, Any], str]   # an object of the JSON format, or a line that is not


class ChatError(Exception):
    """A problem to tell the person in one line, then exit with .code.
    final: the server refused us, so trying again would not help; brief:
    the message without advice, for a status line while reconnecting."""

    def __init__(self, message: str, code: int = 1, final: bool = False,
                 brief: Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code
        self.final = final
        self.brief = brief or message


class StreamPosition:
    """Where the client is in the room's stream, kept across connections:
    the last event id seen and its epoch, and the name's reconnect token.
    Pure: fed every object received, it says which are duplicates."""

    def __init__(self) -> None:
        self.last_id = None     # type: Optional[int]
        self.epoch = None       # type: Optional[str]
        self.token = None       # type: Optional[str]

    def hello_line(self) -> str:
        """/hello json, asking for what was missed and for the name back."""
        words = ["/hello", "json"]
        if self.last_id is not None and self.epoch:
            words += ["resume=%d" % self.last_id, "epoch=" + self.epoch]
        if self.token:
            words.append("token=" + self.token)
        return " ".join(words)

    def see(self, got: Dict[str, Any]) -> bool:
        """Take note of an object; False for an event already seen."""
        kind = got.get("type")
        if kind == "event":
            number = got.get("id")
            if not isinstance(number, int):
                return True
            if self.last_id is not None and number <= self.last_id:
                return bool(got.get("history"))    # shown again on request (/history)
            self.last_id = number
        elif kind == "hello":
            epoch = got.get("epoch")
            if isinstance(epoch, str):
                if self.epoch is not None and epoch != self.epoch:
                    self.last_id = None     # another run of ids: start afresh
                self.epoch = epoch
            if self.last_id is None and isinstance(got.get("last_id"), int):
                self.last_id = got["last_id"]
        elif kind == "reply":
            token = got.get("token")
            if isinstance(token, str) and got.get("code") in ("welcome", "token"):
                self.token = token
            if got.get("code") == "history_reset":
                self.last_id = None
        return True


def expected_event(line: str) -> Optional[Tuple[str, str]]:
    """The (kind, text) of the event the room makes of a line sent, or None
    for a line that makes none (a command, a blank line): the server's own
    interpret_lines() says what it will read."""
    steps = interpret_lines([line.encode("utf-8", "surrogateescape")])
    if len(steps) != 1:
        return None
    step = steps[0]
    if isinstance(step, Say):
        return "message", step.block[:-1].decode("utf-8", "replace")
    if step.kind == "me":
        return "action", step.text
    return None


REFUSED_CODES = frozenset(("flood", "line_too_long", "busy"))    # errors of lines not taken
RESEND = "resend"   # SentLines.settle(): the room never took them: send them again
UNKNOWN = "unknown"  # whether the room took them cannot be told


class SentLines:
    """The lines sent that the room has not been seen to take yet (its echo
    of each), so that after a reconnect those it never took are sent again:
    once the resume shows every event since the last one seen, a line not
    among them never reached the room. Pure."""

    limit = 1000        # lines kept; older ones are taken as taken

    def __init__(self) -> None:
        self.lines = collections.deque()    # type: collections.deque  (name, kind, text, line)
        self.until_end = False      # the resume's events come before the verdict

    def __len__(self) -> int:
        return len(self.lines)

    def sent(self, name: str, line: str) -> None:
        """line went out under name."""
        expected = expected_event(line)
        if expected is not None:
            self.lines.append((name,) + expected + (line,))
            if len(self.lines) > self.limit:
                self.lines.popleft()

    def renamed(self, old: str, new: str) -> None:
        """The server now calls us new: the lines it has not echoed yet, it
        echoes under that name (it handles a connection's lines in order)."""
        for index, entry in enumerate(self.lines):
            if entry[0] == old:
                self.lines[index] = (new,) + entry[1:]

    def unsend(self, line: str) -> None:
        """line, noted as sent last, did not go out after all."""
        if self.lines and self.lines[-1][3] == line:
            self.lines.pop()

    def see(self, got: Dict[str, Any]) -> None:
        """An object received: an event of ours takes its line and every
        line before it off (those the room did not take, it refused)."""
        if not self.lines:
            return      # the common case: everything sent was seen taken
        kind = got.get("type")
        if kind == "error" and got.get("code") in REFUSED_CODES:
            self.lines.clear()      # refused, and which ones is not said: none sent again
            return
        if kind != "event" or got.get("kind") not in ("message", "action"):
            return
        key = (got.get("from"), got.get("kind"), got.get("text"))
        for index, entry in enumerate(self.lines):
            if entry[:3] == key:
                for _ in range(index + 1):
                    self.lines.popleft()
                return

    def settle(self, got: Dict[str, Any]) -> Optional[str]:
        """After a reconnect that asked to resume, fed what comes: RESEND
        once the resume showed all that the room took since, UNKNOWN when
        it cannot (events missed, ids reset), None until then."""
        if got.get("type") == "event" and not got.get("history"):
            return UNKNOWN      # live already: the server said nothing of a resume
        if got.get("type") != "reply":
            return None
        code = got.get("code")
        if code == "resumed":
            if got.get("missed"):
                return UNKNOWN
            if got.get("events"):
                self.until_end = True
                return None
            return RESEND
        if code == "history_reset":
            return UNKNOWN
        if code == "history_end" and self.until_end:
            self.until_end = False
            return RESEND
        return None

    def take(self) -> List[str]:
        """The lines not seen taken, oldest first; forgotten here."""
        lines = [entry[3] for entry in self.lines]
        self.lines.clear()
        self.until_end = False
        return lines


class Connection:
    """A socket to the server read as lines, with TLS done in memory."""

    def __init__(self, host: str, port: int, context: Optional[ssl.SSLContext] = None) -> None:
        try:
            self.sock = socket.create_connection((host, port), timeout=REGISTER_TIMEOUT)
        except socket.gaierror:
            raise ChatError("cannot find the host %s" % host)
        except ConnectionRefusedError:
            refused = "cannot connect to %s: nothing is listening there" % format_address(
                (host, port))
            raise ChatError("%s. Is the server running? Start it with: python3 server.py%s"
                            % (refused, "" if port == DEFAULT_PORT else " --port %d" % port),
                            brief=refused)
        except OSError as exc:
            raise ChatError("cannot connect to %s: %s" % (format_address((host, port)),
                                                         exc.strerror or exc))
        self.framer = LineFramer(1 << 20)
        self.pending = []   # type: List[str]
        self.send_lock = threading.Lock()
        self.tls = None     # type: Optional[TlsCodec]
        self.limits = {}    # type: Dict[str, Any]  as the server announced them
        self.backlog = 0    # events of history the server shows a newcomer (0: it keeps none)
        if context is not None:
            self.start_tls(context, host)

    def start_tls(self, context: ssl.SSLContext, host: str) -> None:
        codec = TlsCodec(context, server_side=False, server_hostname=host)
        try:
            arrived = tls_handshake(self.sock, codec)
        except (ssl.SSLError, ssl.CertificateError) as exc:  # 3.6: a name mismatch is no SSLError
            self.close()
            reason = describe_tls_error(exc)
            hint = (" (is it a server without TLS? try without --tls)"
                    if "does not speak TLS" in reason else
                    " (it is for another name: use that name with --host)"
                    if "match" in reason else
                    " (for a self-signed certificate use --cafile CERT)"
                    if "certificate" in reason else "")
            raise ChatError("TLS handshake failed: %s%s" % (reason, hint), final=True)
        except (OSError, ConnectionError) as exc:
            self.close()
            raise ChatError("TLS handshake failed: %s" % (getattr(exc, "strerror", None) or exc))
        self.tls = codec
        lines, _ = self.framer.feed(arrived)
        self.pending.extend(decode(line) for line in lines)

    def read_line(self) -> Optional[str]:
        """The next line from the server, or None at the end."""
        while not self.pending:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise ChatError("the server did not answer in time")
            except OSError:
                return None
            if not data:
                return None
            if self.tls is not None:
                try:
                    data, reply, closed = self.tls.decrypt(data)
                    if reply:
                        self.send_bytes(b"")
                except (ssl.SSLError, OSError):
                    return None
                if closed and not data:
                    return None
            lines, _ = self.framer.feed(data)
            self.pending.extend(decode(line) for line in lines)
        return self.pending.pop(0)

    def read(self) -> Optional[Received]:
        """The next object of the JSON format, or a line that is none; None at the end."""
        line = self.read_line()
        if line is None:
            return None
        event = parse_json_line(line)
        return line if event is None else event

    def send_line(self, text: str) -> None:
        # surrogateescape: bytes of the input that were not UTF-8 go out as
        # they came; the server shows them as U+FFFD.
        self.send_bytes(text.encode("utf-8", "surrogateescape") + b"\n")

    def send_bytes(self, data: bytes) -> None:
        with self.send_lock:
            if self.tls is not None:
                data = self.tls.encrypt(data)
            self.sock.sendall(data)

    def register(self, wanted: str, say: Callable[[Received], None],
                 password: Optional[bytes] = None,
                 position: Optional[StreamPosition] = None) -> str:
        """Take the name wanted, or the first free variant; return it.

        Raises ChatError for every way it can fail, the network's included.
        """
        try:
            return self._register(wanted, say, password, position or StreamPosition())
        except (OSError, ssl.SSLError) as exc:
            # A server that turns us away (full) may close before our first
            # lines arrive: what it said is still there to read.
            refusal = self.refusal()
            if refusal:
                raise ChatError(refusal, final=True)
            raise ChatError("lost the connection while joining: %s" % (
                getattr(exc, "strerror", None) or exc))

    def refusal(self) -> Optional[str]:
        """The error line a server sent before closing, if one is left to read."""
        try:
            while True:
                line = self.read_line()
                if line is None:
                    return None
                parsed = parse_server_line(line)
                if parsed.kind == "error":
                    return parsed.text
        except (ChatError, OSError, ssl.SSLError):
            return None

    def _register(self, wanted: str, say: Callable[[Received], None],
                  password: Optional[bytes], position: StreamPosition) -> str:
        attempt = 0
        name = wanted
        # One write: a server that refuses us (full) answers and closes at
        # once, and a second write would fail before its answer is read.
        first = (position.hello_line() + "\n/nick " + name + "\n").encode("utf-8",
                                                                     "surrogateescape")
        self.send_bytes(first if password is None else b"/pass " + password + b"\n" + first)
        while True:
            got = self.read()
            if got is None:
                raise ChatError("the server closed the connection%s" % (
                    "" if self.tls else " (if it uses TLS, add --tls)"))
            if isinstance(got, str):
                # Before the hello: the banner for people, or a refusal
                # before joining (full, wrong password), which comes as an
                # error line of the text format.
                if got.startswith("HTTP/"):
                    raise ChatError("that is a web server, not a chat server: "
                                    "check --host and --port", final=True)
                line = parse_server_line(got)
                if line.kind == "error":
                    raise ChatError(line.text, final=True)
                continue
            kind, code = got.get("type"), got.get("code")
            position.see(got)
            if kind == "hello":
                limits = got.get("limits")
                self.limits = limits if isinstance(limits, dict) else {}
                history = got.get("history")
                self.backlog = history.get("backlog", 0) if isinstance(history, dict) else 0
            elif kind == "reply" and code == "welcome":
                if name != wanted:
                    say({"type": "reply", "code": "taken",
                         "text": "%s is taken; you are %s" % (wanted, name)})
                say(got)
                self.sock.settimeout(None)
                return name
            elif kind == "error" and code == "name_taken":
                attempt += 1
                if attempt >= 100:
                    raise ChatError("no free variant of the name %s" % wanted, final=True)
                name = name_variant(wanted, attempt)
                self.send_line("/nick " + name)
            elif kind == "error" and code == "name_invalid":
                raise ChatError(str(got.get("text")), code=2, final=True)
            elif kind == "error":
                raise ChatError(str(got.get("text")), final=True)
            else:
                say(got)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
