"""Pure helpers for Broadcast Chat: no sockets, no threads.

Line framing, text safety, names, commands, the wire format, flood control
and the clients.json file all live here, so they can be tested directly and
the threaded server and client stay thin.
"""

import collections
import json
import os
import re
import tempfile
import time
import unicodedata
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

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
        lines = []
        limit = self.max_line
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


def name_key(name: str) -> str:
    """The form in which two names are the same name."""
    return unicodedata.normalize("NFKC", name).casefold()


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
    if name.casefold() in RESERVED_NAMES:
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
]

COMMAND_USAGE = {
    "nick": "/nick NAME",
    "who": "/who",
    "msg": "/msg NAME TEXT",
    "me": "/me ACTION",
    "quit": "/quit [REASON]",
    "help": "/help",
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
    if kind == "me" and not rest:
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


ServerLine = collections.namedtuple("ServerLine", "stamp kind name text")

_SERVER_LINE = re.compile(
    r"(\d\d:\d\d) (?:<([^>\s]+)> |\* ([^\s]+) |\*([^*\s]+)\* |-> \*([^*\s]+)\* |(--) |(!!) )(.*)\Z",
    re.S)
_GROUP_KINDS = (None, "message", "action", "private_in", "private_out",
                "notice", "error")


def parse_server_line(line: str) -> ServerLine:
    """Classify a line from the server for display; unknown lines are 'raw'."""
    match = _SERVER_LINE.match(line)
    if match is None:
        return ServerLine("", "raw", "", line)
    for group in range(2, 8):       # group 1 is the stamp, 8 the text
        value = match.group(group)
        if value is not None:
            kind = _GROUP_KINDS[group - 1]
            name = value if group <= 5 else ""
            return ServerLine(match.group(1), kind, name, match.group(8))
    return ServerLine("", "raw", "", line)      # pragma: no cover


# Replies the client recognises while it registers its name.
WELCOME_PREFIX = "welcome, "
NAME_TAKEN_PREFIX = "name taken: "


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


def client_record(name: Optional[str], address: str, connected_at: float) -> Dict[str, Any]:
    return {"name": name, "address": address, "connected_at": iso_utc(connected_at)}


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
            json.dump(value, handle, ensure_ascii=False, indent=1)
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


def chunked(items: Iterable[Any], size: int) -> Iterable[List[Any]]:
    batch = []  # type: List[Any]
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
