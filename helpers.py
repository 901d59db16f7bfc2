"""Pure helpers for Broadcast Chat: no sockets, no threads.

Line framing, text safety, names, commands, the wire format, flood control
and the clients.json file all live here, so they can be tested directly and
the threaded server and client stay thin.
"""

import collections
import ipaddress
import json
import os
import re
import ssl
import tempfile
import threading
import time
import unicodedata
from typing import Any, Callable, Dict, List, Optional, Tuple

__version__ = "1.0.0"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DEFAULT_CLIENTS_FILE = "clients.json"
DEFAULT_MAX_LINE = 4096           # bytes in one line, newline excluded
DEFAULT_QUEUE_LIMIT = 1 << 20     # bytes waiting for one slow reader
DEFAULT_RATE_LIMIT = 20.0         # lines per second per client
DEFAULT_BURST = 100               # lines a person may paste at once
DEFAULT_MAX_CLIENTS = 10000
DEFAULT_MAX_PER_ADDRESS = 100

NAME_MAX = 24
RESERVED_NAMES = frozenset(
    "server system admin administrator root operator op moderator mod "
    "broadcast everyone all nobody chanserv nickserv".split()
)
NAME_EXTRA_CHARS = frozenset("-_.")


# --------------------------------------------------------------------------
# Framing


class LineFramer:
    """Split a byte stream into lines ending in LF (a CR before it is dropped).

    Memory stays bounded by max_line: a line longer than that is discarded
    as it arrives, even if its newline never comes, and counted as refused.
    """

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.max_line = max_line
        self._rest = b""
        self._discarding = False

    def take_plain(self, data: bytes) -> Optional[Tuple[bytes, int]]:
        """The fast path: when every complete line so far is a plain message
        (printable ASCII, not blank, not a command, not too long; lines
        that start with a space are left to feed()), take them
        as one block of LF-ended lines and return (block, line count).
        Otherwise take nothing and return None: then call feed(data).

        A flood of chat lines costs a few passes in C per read, instead of
        a bytes object and some Python per line.
        """
        if self._discarding:
            return None
        buf = self._rest + data if self._rest else data
        cut = buf.rfind(b"\n") + 1
        if not cut or len(buf) - cut > self.max_line + 1:
            return None
        block = buf[:cut] if cut < len(buf) else buf
        if not _is_plain_block(block, self.max_line):
            return None
        self._rest = buf[cut:]
        return block, block.count(b"\n")

    def feed(self, data: bytes) -> Tuple[List[bytes], int]:
        """Return the complete lines in data and how many were too long."""
        buf = self._rest + data if self._rest else data
        parts = buf.split(b"\n")
        rest = parts.pop()
        too_long = 0
        if self._discarding and parts:
            # The head is the tail of a line already refused and counted.
            parts.pop(0)
            self._discarding = False
        limit = self.max_line
        if b"\r" not in buf and not _has_long_run(buf, (limit + 1) // 2):
            lines = parts   # the common case, checked at C speed
        else:
            lines = []
            for part in parts:
                if part.endswith(b"\r"):
                    part = part[:-1]
                if len(part) > limit:
                    too_long += 1
                else:
                    lines.append(part)
        if self._discarding:
            rest = b""
        elif len(rest) > limit + 1:     # + 1: room for a CR before the LF
            too_long += 1
            self._discarding = True
            rest = b""
        self._rest = rest
        return lines, too_long


_NOT_PRINTABLE = re.compile(b"[^\x20-\x7e\n]")


def _has_long_run(block: bytes, span: int) -> bool:
    """True when some aligned span of block has no LF: always so when a line
    is 2 * span - 1 bytes or longer, sometimes for shorter ones. One memchr
    per span, where a regex for long lines tried every position."""
    for start in range(0, len(block) - span + 1, span):
        if block.find(b"\n", start, start + span) < 0:
            return True
    return False


def _is_plain_block(block: bytes, max_line: int) -> bool:
    """Every line of block (LF-ended lines) is a plain message: printable
    ASCII, not starting with '/' or a space (so neither a command nor blank),
    not empty, and surely not over max_line. Checked in C, a few passes."""
    return not (block.startswith((b"/", b" ", b"\n")) or b"\n/" in block
                or b"\n " in block or b"\n\n" in block
                or _NOT_PRINTABLE.search(block) is not None
                or _has_long_run(block, (max_line + 1) // 2))


def decode(raw: bytes) -> str:
    """Bytes from the network as text: invalid UTF-8 becomes U+FFFD."""
    return raw.decode("utf-8", "replace")


# --------------------------------------------------------------------------
# Text safety

_MAYBE_UNSAFE = re.compile("[^\x20-\x7e]")
# Invisible joiners that emoji sequences need; harmless on a terminal.
_KEPT_FORMAT_CHARS = frozenset("\u200c\u200d")
_UNSAFE_CATEGORIES = frozenset(("Cc", "Cf", "Zl", "Zp", "Cs"))


def _render_char(ch: str) -> str:
    code = ord(ch)
    if code < 0x20:
        return " " if ch == "\t" else "^" + chr(code + 0x40)
    if code == 0x7F:
        return "^?"
    if ch in _KEPT_FORMAT_CHARS or unicodedata.category(ch) not in _UNSAFE_CATEGORIES:
        return ch
    return "<U+%04X>" % code


def sanitize(text: str) -> str:
    """Render control and invisible format characters visibly and harmlessly.

    ESC becomes ^[, DEL ^?, a tab a space; C1 controls, bidi overrides and
    other format characters become <U+XXXX>. Printable text is unchanged.
    """
    if _MAYBE_UNSAFE.search(text) is None:
        return text
    return "".join([_render_char(ch) for ch in text])


# --------------------------------------------------------------------------
# Names


# Cyrillic and Greek letters drawn like Latin ones (after casefold): a name
# spelled with them is the same name as the Latin one, so "\u0430lice"
# cannot pass for "alice".
_LOOKALIKES = str.maketrans({
    "\u0430": "a", "\u0435": "e", "\u0456": "i", "\u0458": "j", "\u043e": "o",
    "\u0440": "p", "\u0441": "c", "\u0443": "y", "\u0445": "x", "\u0455": "s",
    "\u0501": "d", "\u04bb": "h", "\u04cf": "l", "\u051b": "q", "\u051d": "w",
    "\u03b1": "a", "\u03bf": "o", "\u03c1": "p", "\u03b9": "i", "\u03ba": "k",
    "\u03bd": "v", "\u03c5": "u", "\u03c7": "x",
})


def name_key(name: str) -> str:
    """The form in which two names are the same name: compatibility forms,
    case, and Cyrillic or Greek look-alikes of Latin letters folded."""
    return unicodedata.normalize("NFKC", name).casefold().translate(_LOOKALIKES)


def check_name(name: str) -> Tuple[Optional[str], Optional[str]]:
    """Validate a requested name: (normalised name, None) or (None, error)."""
    name = unicodedata.normalize("NFKC", name.strip())
    if not name:
        return None, "a name cannot be blank"
    if len(name) > NAME_MAX:
        return None, "a name has at most %d characters" % NAME_MAX
    for ch in name:
        if not (ch.isalnum() or ch in NAME_EXTRA_CHARS):
            shown = sanitize(ch) if ch != " " else "a space"
            return None, ("a name has letters, digits, '-', '_' and '.' only, "
                          "not %s" % shown)
    if not name[0].isalnum():
        return None, "a name starts with a letter or a digit"
    if name_key(name) in RESERVED_NAMES:
        return None, "the name %s is reserved" % name
    return name, None


def name_from_hostname(hostname: str) -> str:
    """A valid default name made from this machine's host name."""
    base = hostname.split(".")[0]
    name = "".join(ch if (ch.isalnum() or ch in "-_") else "-" for ch in base)
    name = name.strip("-_")[:NAME_MAX]
    if check_name(name)[0] is None:
        return "user"
    return name


def name_variant(name: str, attempt: int) -> str:
    """The attempt-th alternative to a taken name: name-2, name-3, ..."""
    suffix = "-%d" % (attempt + 1)
    return name[:NAME_MAX - len(suffix)] + suffix


# --------------------------------------------------------------------------
# Commands

HELP_LINES = [
    "commands:",
    "  /nick NAME       take a name, or change it",
    "  /who             list who is online",
    "  /msg NAME TEXT   send TEXT to NAME only",
    "  /me ACTION       say what you are doing (* alice waves)",
    "  /quit [REASON]   leave the chat",
    "  /help            this list",
    "  //text           send a line that starts with /",
    "  /pass SECRET     the first line, on a chat with a password",
]

COMMAND_USAGE = {
    "nick": "/nick NAME",
    "who": "/who",
    "msg": "/msg NAME TEXT",
    "me": "/me ACTION",
    "quit": "/quit [REASON]",
    "help": "/help",
    "pass": "/pass SECRET",
}

Action = collections.namedtuple("Action", "kind target text")
"""What one input line asks for: kind is say, nick, who, msg, me, quit,
help, or error (text is then the message for the sender)."""


def interpret(line: str) -> Action:
    """Turn one line from a client into an Action, checking arguments."""
    if not line.startswith("/"):
        return Action("say", "", line)
    if line.startswith("//"):
        return Action("say", "", line[1:])
    word, _, rest = line[1:].partition(" ")
    kind = word.lower()
    rest = rest.strip()
    if kind not in COMMAND_USAGE:
        return Action("error", "", "unknown command /%s; /help lists the commands"
                      % word[:32])
    usage = "usage: " + COMMAND_USAGE[kind]
    if kind in ("who", "help") and rest:
        return Action("error", "", usage)
    if kind == "nick":
        if not rest or " " in rest:
            return Action("error", "", usage)
        return Action("nick", rest, "")
    if kind == "msg":
        target, _, text = rest.partition(" ")
        text = text.strip()
        if not target or not text:
            return Action("error", "", usage)
        return Action("msg", target, text)
    if kind in ("me", "pass") and not rest:
        return Action("error", "", usage)
    return Action(kind, "", rest)


# --------------------------------------------------------------------------
# The wire format: one UTF-8 line per event, readable as it is in nc.
#
#   12:34 <alice> hello            a message
#   12:34 * alice waves            an action (/me)
#   12:34 *alice* psst             a private message to you
#   12:34 -> *bob* psst            your private message, as sent
#   12:34 -- bob joined            a notice from the server
#   12:34 !! name taken: bob       an error, for you only


def clock_stamp(now: Optional[float] = None) -> str:
    return time.strftime("%H:%M", time.localtime(now))


def fmt_message(stamp: str, name: str, text: str) -> str:
    return "%s <%s> %s\n" % (stamp, name, text)


def fmt_action(stamp: str, name: str, text: str) -> str:
    return "%s * %s %s\n" % (stamp, name, text)


def fmt_private_in(stamp: str, name: str, text: str) -> str:
    return "%s *%s* %s\n" % (stamp, name, text)


def fmt_private_out(stamp: str, name: str, text: str) -> str:
    return "%s -> *%s* %s\n" % (stamp, name, text)


def fmt_notice(stamp: str, text: str) -> str:
    return "%s -- %s\n" % (stamp, text)


def fmt_error(stamp: str, text: str) -> str:
    return "%s !! %s\n" % (stamp, text)


NOTICE_RUN_LIMIT = 3    # joins (or leaves) in a row shown one by one


def summarize_notices(events: List[Tuple[str, str, str]],
                      limit: int = NOTICE_RUN_LIMIT) -> List[str]:
    """The text of notices waiting together, with long runs folded.

    events are (kind, name, detail): kind "join", "leave" (detail: the
    reason) or "other" (detail: the whole notice). A run of more than limit
    joins becomes one line "a, b, c and 97 others joined"; leaves alike.
    """
    lines = []  # type: List[str]
    start = 0
    while start < len(events):
        kind = events[start][0]
        end = start + 1
        if kind in ("join", "leave"):
            while end < len(events) and events[end][0] == kind:
                end += 1
        run = events[start:end]
        if kind == "other":
            lines.append(run[0][2])
        elif len(run) > limit:
            lines.append("%s and %d others %s" % (
                ", ".join(name for _, name, _ in run[:limit]), len(run) - limit,
                "joined" if kind == "join" else "left"))
        elif kind == "join":
            lines.extend("%s joined" % name for _, name, _ in run)
        else:
            lines.extend("%s left (%s)" % (name, reason) for _, name, reason in run)
        start = end
    return lines


ServerLine = collections.namedtuple("ServerLine", "stamp kind name text")

_SERVER_LINE = re.compile(
    r"(\d\d:\d\d) (?:<([^>\s]+)> |\* ([^\s]+) |\*([^*\s]+)\* |-> \*([^*\s]+)\* |(--) |(!!) )(.*)\Z",
    re.S)
_GROUP_KINDS = {2: "message", 3: "action", 4: "private_in", 5: "private_out",
                6: "notice", 7: "error"}


def parse_server_line(line: str) -> ServerLine:
    """Classify a line from the server for display; unknown lines are 'raw'."""
    match = _SERVER_LINE.match(line)
    if match is None:
        return ServerLine("", "raw", "", line)
    for group, kind in _GROUP_KINDS.items():
        value = match.group(group)
        if value is not None:
            name = value if group <= 5 else ""
            return ServerLine(match.group(1), kind, name, match.group(8))
    return ServerLine("", "raw", "", line)      # pragma: no cover


# Replies the client recognises while it registers its name.
WELCOME_PREFIX = "welcome, "
NAME_TAKEN_PREFIX = "name taken: "
PASSWORD_NEEDED = ("password needed: this chat has a password; send /pass SECRET first "
                   "(client.py reads it from BROADCAST_PASSWORD or --password-file)")
WRONG_PASSWORD = "wrong password"
PASSWORD_ENV = "BROADCAST_PASSWORD"


def read_password(path: Optional[str], environ: Dict[str, str]) -> Optional[bytes]:
    """The room password from a file (first line) or the environment.

    Raises ValueError with a message for a file that cannot be used.
    """
    if path:
        try:
            with open(path, "rb") as handle:
                secret = handle.read().split(b"\n", 1)[0].rstrip(b"\r")
        except OSError as exc:
            raise ValueError("cannot read the password file %s: %s" % (path, exc.strerror or exc))
        if not secret:
            raise ValueError("the password file %s is empty" % path)
        return secret
    secret_text = environ.get(PASSWORD_ENV)
    return secret_text.encode("utf-8") if secret_text else None


# --------------------------------------------------------------------------
# Flood control


class TokenBucket:
    """rate tokens a second, at most burst saved up; rate 0 means no limit."""

    def __init__(self, rate: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.clock = clock
        self.tokens = float(self.burst)
        self.stamp = clock()

    def take(self, wanted: int) -> int:
        """Take up to wanted tokens; return how many were granted."""
        if self.rate <= 0:
            return wanted
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        granted = min(wanted, int(self.tokens))
        self.tokens -= granted
        return granted


# --------------------------------------------------------------------------
# clients.json


def iso_utc(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def address_group(host: str) -> str:
    """What per-address limits count by: the IPv4 address, or the IPv6
    /64 network (one host usually has a whole /64 to pick addresses from)."""
    if ":" not in host:
        return host     # IPv4, as the socket gives it: already one form
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network("%s/64" % address, strict=False))
    return str(address)


def is_loopback(host: str) -> bool:
    """Whether host is this machine only (127.0.0.0/8, ::1, localhost)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def format_address(address: Tuple) -> str:
    host, port = address[0], address[1]
    if ":" in host:
        return "[%s]:%d" % (host, port)
    return "%s:%d" % (host, port)


def write_json_atomic(path: str, value: Any) -> None:
    """Write value as JSON so that a reader never sees a partial file.

    The text goes to a temporary file in the same folder, is flushed and
    synced, then replaces the old file in one step. The file is readable by
    its owner only. Raises OSError when it cannot be written.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".clients-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            # Compact: indent= would use the pure-Python encoder, 3 times
            # slower (26 ms instead of 10 for 10,000 clients).
            json.dump(value, handle, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_json(path: str, default: Any = None) -> Any:
    """Read a JSON file; default when it is missing or not valid JSON."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return default


# --------------------------------------------------------------------------
# TLS in memory


class TlsCodec:
    """TLS over memory buffers (ssl.MemoryBIO): bytes in, bytes out.

    The socket stays a plain socket, so the server can write it without
    blocking (MSG_DONTWAIT) and two threads can share one connection: the
    lock keeps the reader's decrypt and the writer's encrypt apart.
    """

    def __init__(self, context: ssl.SSLContext, server_side: bool,
                 server_hostname: Optional[str] = None) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_side=server_side,
                                    server_hostname=server_hostname)
        self.lock = threading.Lock()

    def handshake(self, data: bytes) -> Tuple[bool, bytes]:
        """Feed what arrived; return (finished, bytes to send). Raises ssl.SSLError."""
        with self.lock:
            if data:
                self.incoming.write(data)
            try:
                self.obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            return done, self.outgoing.read()

    def decrypt(self, data: bytes) -> Tuple[bytes, bool, bool]:
        """Feed what arrived: (plain text, has bytes to send back, peer closed).

        Bytes to send back (a TLS reply) wait for the next encrypt().
        """
        with self.lock:
            self.incoming.write(data)
            parts = []
            closed = False
            while True:
                try:
                    chunk = self.obj.read(65536)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:
                    closed = True
                    break
                if not chunk:
                    closed = True
                    break
                parts.append(chunk)
            return b"".join(parts), self.outgoing.pending > 0, closed

    def encrypt(self, data: bytes) -> bytes:
        """Plain text to TLS records, with anything else waiting to go out."""
        with self.lock:
            if data:
                self.obj.write(data)
            return self.outgoing.read()


def recv_before(sock: Any, size: int, deadline: Optional[float], what: str) -> bytes:
    """sock.recv(size), over by deadline (a time.monotonic() value, or None
    for the socket's own timeout); TimeoutError "what took too long" if not."""
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("%s took too long" % what)
        sock.settimeout(left)
    return sock.recv(size)


def tls_handshake(sock: Any, codec: TlsCodec, deadline: Optional[float] = None) -> bytes:
    """Run the handshake over a blocking socket, done by deadline (a
    time.monotonic() value) if one is given: a peer that sends a byte now
    and then cannot hold it open for longer.

    Returns the plain text that arrived with the handshake's last message:
    it is already off the socket, so waiting on the socket would not find it.
    """
    done, out = codec.handshake(b"")
    while True:
        if out:
            sock.sendall(out)
        if done:
            break
        data = recv_before(sock, 16384, deadline, "the TLS handshake")
        if not data:
            raise ConnectionError("connection closed during the TLS handshake")
        done, out = codec.handshake(data)
    arrived, reply, _ = codec.decrypt(b"")
    if reply:
        sock.sendall(codec.encrypt(b""))
    return arrived


def describe_tls_error(exc: Exception) -> str:
    """A TLS failure in words a person can act on."""
    text = str(getattr(exc, "reason", None) or exc)
    if "WRONG_VERSION_NUMBER" in text or "UNKNOWN_PROTOCOL" in text or "record layer" in text:
        return "the other side does not speak TLS"
    if "CERTIFICATE_VERIFY_FAILED" in text or isinstance(exc, getattr(ssl, "CertificateError", ())):
        return "the certificate was not accepted (%s)" % (
            getattr(exc, "verify_message", None) or text)
    return text
