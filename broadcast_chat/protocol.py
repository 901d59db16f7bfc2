"""What a client's bytes mean: framing, the one classifier, commands, flood
control. Pure code: no sockets, no threads.

A read goes through `classify()`: it returns the steps the read asks for,
in order. Consecutive messages come as one `Say` holding a ready block of
LF-ended lines, whether the read took the fast path (a run of plain lines
checked in C, `LineFramer.take_plain`) or went line by line; everything
that renders a `Say` works on that block alone, so the two shapes cannot
disagree.
"""

import collections
import re
import time
from typing import Callable, List, Optional, Tuple, Union

from .text import decode, sanitize

DEFAULT_MAX_LINE = 4096


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
        """When every complete line so far is a plain message (printable
        ASCII, not blank, not a command, not too long; lines that start
        with a space are left to feed()), take them as one block of
        LF-ended lines and return (block, line count). Otherwise take
        nothing and return None: then call feed(data).
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
# Not printable, or a line that starts with "/" or a space or is empty.
_NOT_PLAIN = re.compile(b"[^\x20-\x7e\n]|(?:\\A|\n)[/ \n]")
SHORT_BLOCK = 256   # a block this short is checked in one pass


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
    not empty, and surely not over max_line. Checked in C: a short block
    (the usual read of a chat line) in one pass of one regex, since each
    pass costs more to start than to run; a long one in a few passes of
    memchr, which one regex trying every position would make slower."""
    if len(block) <= SHORT_BLOCK and len(block) <= max_line:
        return _NOT_PLAIN.search(block) is None     # no line can be over max_line
    return _is_plain_long(block, max_line)


def _is_plain_long(block: bytes, max_line: int) -> bool:
    return not (block.startswith((b"/", b" ", b"\n")) or b"\n/" in block
                or b"\n " in block or b"\n\n" in block
                or _NOT_PRINTABLE.search(block) is not None
                or _has_long_run(block, (max_line + 1) // 2))


# --------------------------------------------------------------------------
# Commands

HELP_LINES = [
    "commands:",
    "  /nick NAME       take a name, or change it",
    "  /who             list who is online",
    "  /msg NAME TEXT   send TEXT to NAME only",
    "  /me ACTION       say what you are doing (* alice waves)",
    "  /quit [REASON]   leave the chat",
    "  /history [N]     show the last N events again (default 50)",
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
    "hello": "/hello json [resume=ID epoch=EPOCH] [token=TOKEN]",
    "history": "/history [N]",
}

Action = collections.namedtuple("Action", "kind target text")
"""What one input line asks for: kind is a command of COMMAND_USAGE (nick,
who, msg, me, quit, help, pass, hello), "say" (a message), or "error"
(target is then the error's code, text its message for the sender).
For hello, text holds the words after json (key=value), for history the
number asked for (or "")."""


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
        return Action("error", "unknown_command",
                      "unknown command /%s; /help lists the commands" % word[:32])
    usage = "usage: " + COMMAND_USAGE[kind]
    if kind in ("who", "help") and rest:
        return Action("error", "usage", usage)
    if kind == "nick":
        if " " in rest:
            return Action("error", "usage", usage + " (a name has no spaces: try %s)"
                          % "-".join(rest.split())[:40])
        if not rest:
            return Action("error", "usage", usage)
        return Action("nick", rest, "")
    if kind == "msg":
        target, _, text = rest.partition(" ")
        text = text.strip()
        if not target or not text:
            return Action("error", "usage", usage)
        return Action("msg", target, text)
    if kind == "hello":
        first, _, words = rest.partition(" ")
        if first.lower() != "json" or hello_options(words) is None:
            return Action("error", "usage", usage)
        return Action("hello", "", words.strip())
    if kind == "history" and rest and not (len(rest) <= 9 and _is_number(rest)):
        return Action("error", "usage", usage)
    if kind in ("me", "pass") and not rest:
        return Action("error", "usage", usage)
    return Action(kind, "", rest)


HELLO_WORDS = ("resume", "epoch", "token")


def hello_options(words: str) -> Optional[dict]:
    """The key=value words after /hello json, or None when one is not of
    that form. Unknown keys are kept (and ignored): a newer client may send
    more than this server knows. resume must be a number."""
    options = {}
    for word in words.split():
        key, equals, value = word.partition("=")
        if not equals or not key or not value or len(value) > 200:
            return None
        options[key.lower()] = value
    resume = options.get("resume")
    if resume is not None and not (len(resume) <= 18 and _is_number(resume)):
        return None
    return options


def _is_number(text: str) -> bool:
    """Only ASCII digits (str.isdigit also takes other scripts' digits)."""
    return bool(text) and all(c in "0123456789" for c in text)


# --------------------------------------------------------------------------
# The one classifier

Say = collections.namedtuple("Say", "block count")
"""Messages: block holds count lines of safe text, each ending in LF."""

Step = Union[Say, Action]


def classify(framer: LineFramer, data: bytes, fast: bool) -> Tuple[List[Step], int]:
    """What one read asks for: (steps in order, lines refused as too long).

    With fast (a named sender), a read of plain lines only is one Say of the
    bytes as they came, checked in C; otherwise the lines are interpreted one
    by one, and runs of messages still come as one Say.
    """
    if fast:
        plain = framer.take_plain(data)
        if plain is not None:
            return [Say(*plain)], 0
    lines, too_long = framer.feed(data)
    return interpret_lines(lines), too_long


def interpret_lines(lines: List[bytes]) -> List[Step]:
    """Lines as steps: blank lines dropped, text made safe, messages joined."""
    steps = []      # type: List[Step]
    said = []       # type: List[bytes]
    for raw in lines:
        if not raw.strip():
            continue
        text = decode(raw)
        action = interpret(sanitize(text))
        if action.kind == "say":
            said.append(action.text.encode("utf-8") + b"\n")
            continue
        if action.kind == "nick":
            # The name as typed: check_name shows a bad character (an
            # escape, a bidi override) safely, and as what it is.
            action = interpret(text)
        if said:
            steps.append(Say(b"".join(said), len(said)))
            said = []
        steps.append(action)
    if said:
        steps.append(Say(b"".join(said), len(said)))
    return steps


def count_lines(steps: List[Step]) -> int:
    """How many lines the flood limit counts in steps."""
    count = 0
    for step in steps:
        count += step.count if type(step) is Say else 1
    return count


def first_lines(steps: List[Step], wanted: int) -> List[Step]:
    """The steps of the first wanted lines (a Say may be cut short)."""
    kept = []   # type: List[Step]
    for step in steps:
        if wanted <= 0:
            break
        if isinstance(step, Say):
            if step.count > wanted:
                end = -1
                for _ in range(wanted):
                    end = step.block.index(b"\n", end + 1)
                step = Say(step.block[:end + 1], wanted)
            wanted -= step.count
        else:
            wanted -= 1
        kept.append(step)
    return kept


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
