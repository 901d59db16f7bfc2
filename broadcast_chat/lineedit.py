"""A line editor for a console without GNU readline (Windows'), with no I/O.

LineEditor holds the line being typed and its history; feed() takes one
key and says what it did; render() gives the escape sequences that draw the
line again, so a chat line can be printed above it at any time. A key is a
name from LineEditor.KEYS ("left", "backspace", ...) or the one character
typed; insert() takes a paste. WindowsKeys turns what msvcrt.getwch()
returns into keys. The console's side (reading keys, writing, knowing the
width) is the caller's.
"""

import collections
from typing import Callable, List, Optional

from .text import JOINERS, columns

# What feed() did, as Outcome.kind:
NOTHING = "nothing"       # the key changed nothing (Left at the start, ...)
REDRAW = "redraw"         # the line changed: draw render() again
SUBMIT = "submit"         # Enter: .line is the line, and the editor is empty again
END = "end"               # end of input: Ctrl-D on an empty line, or Ctrl-Z then Enter
INTERRUPT = "interrupt"   # Ctrl-C: .line is what was typed, now cleared

Outcome = collections.namedtuple("Outcome", "kind line")

# Ctrl-Z: typed as a character, shown as ^Z; Enter on a line that starts
# with it ends the input, as on a Windows console.
CTRL_Z = "\x1a"


def char_width(ch: str) -> int:
    """Columns ch takes on a terminal: 2 for wide East Asian characters and
    for ^Z, 0 for combining marks and joiners, 1 otherwise."""
    return 2 if ch == CTRL_Z else columns(ch)


def text_width(text: str) -> int:
    return sum(char_width(ch) for ch in text)


def _shown(text: str) -> str:
    return text.replace(CTRL_Z, "^Z")


def _typable(text: str) -> bool:
    return bool(text) and all(ch.isprintable() or ch in JOINERS for ch in text)


class LineEditor:
    """The line being typed: .buffer, .cursor (an index into it), .history
    (oldest first) and .position in it (len(history) when on a new line).

    complete, if given, is the Tab hook: it gets the text before the cursor
    and returns what should replace it, or None for no change.
    """

    def __init__(self, history_size: int = 500,
                 complete: Optional[Callable[[str], Optional[str]]] = None) -> None:
        self.buffer = ""
        self.cursor = 0
        self.history = []       # type: List[str]
        self.position = 0
        self.history_size = history_size
        self.complete = complete
        self._draft = ""        # the new line, kept while history is shown

    def feed(self, key: str) -> Outcome:
        """Apply one key: a name from KEYS, or the character typed. A name
        of no key here ("unknown", "page-up") changes nothing."""
        action = self.KEYS.get(key)
        if action is not None:
            return action(self)
        if len(key) == 1:
            return self.insert(key)
        return Outcome(NOTHING, "")

    def insert(self, text: str) -> Outcome:
        """Insert text at the cursor; nothing if any of it is a control or
        format character (a pasted escape sequence stays out of the line)."""
        if not _typable(text):
            return Outcome(NOTHING, "")
        return self._insert(text)

    # -- editing --------------------------------------------------------------

    def _set(self, buffer: str, cursor: int) -> Outcome:
        if (buffer, cursor) == (self.buffer, self.cursor):
            return Outcome(NOTHING, "")
        self.buffer, self.cursor = buffer, cursor
        return Outcome(REDRAW, "")

    def _insert(self, text: str) -> Outcome:
        at = self.cursor
        return self._set(self.buffer[:at] + text + self.buffer[at:], at + len(text))

    def _backspace(self) -> Outcome:
        at = self.cursor
        if at == 0:
            return Outcome(NOTHING, "")
        return self._set(self.buffer[:at - 1] + self.buffer[at:], at - 1)

    def _delete(self) -> Outcome:
        at = self.cursor
        return self._set(self.buffer[:at] + self.buffer[at + 1:], at)

    def _left(self) -> Outcome:
        return self._set(self.buffer, max(0, self.cursor - 1))

    def _right(self) -> Outcome:
        return self._set(self.buffer, min(len(self.buffer), self.cursor + 1))

    def _home(self) -> Outcome:
        return self._set(self.buffer, 0)

    def _end(self) -> Outcome:
        return self._set(self.buffer, len(self.buffer))

    def _tab(self) -> Outcome:
        if self.complete is None:
            return Outcome(NOTHING, "")
        before = self.complete(self.buffer[:self.cursor])
        if before is None:
            return Outcome(NOTHING, "")
        return self._set(before + self.buffer[self.cursor:], len(before))

    # -- history --------------------------------------------------------------

    def _recall(self, position: int) -> Outcome:
        if not 0 <= position <= len(self.history) or position == self.position:
            return Outcome(NOTHING, "")
        if self.position == len(self.history):
            self._draft = self.buffer
        self.position = position
        line = self.history[position] if position < len(self.history) else self._draft
        self.buffer, self.cursor = line, len(line)
        return Outcome(REDRAW, "")

    def _up(self) -> Outcome:
        return self._recall(self.position - 1)

    def _down(self) -> Outcome:
        return self._recall(self.position + 1)

    def _remember(self, line: str) -> None:
        if line.strip() and not (self.history and self.history[-1] == line):
            self.history.append(line)
            if len(self.history) > self.history_size:
                del self.history[:len(self.history) - self.history_size]

    # -- ending a line --------------------------------------------------------

    def _clear(self) -> None:
        self.buffer, self.cursor, self._draft = "", 0, ""
        self.position = len(self.history)

    def _enter(self) -> Outcome:
        line = self.buffer
        if line.startswith(CTRL_Z):
            self._clear()
            return Outcome(END, "")
        self._remember(line)
        self._clear()
        return Outcome(SUBMIT, line)

    def _ctrl_c(self) -> Outcome:
        line = self.buffer
        self._clear()
        return Outcome(INTERRUPT, line)

    def _ctrl_d(self) -> Outcome:
        """End of input on an empty line; elsewhere, Delete (as readline)."""
        if not self.buffer:
            return Outcome(END, "")
        return self._delete()

    def _ctrl_z(self) -> Outcome:
        return self._insert(CTRL_Z)     # shown as ^Z; insert() refuses it

    KEYS = {
        "backspace": _backspace, "delete": _delete, "left": _left, "right": _right,
        "home": _home, "end": _end, "up": _up, "down": _down, "tab": _tab,
        "enter": _enter, "ctrl-c": _ctrl_c, "ctrl-d": _ctrl_d, "ctrl-z": _ctrl_z,
    }   # type: dict

    # -- drawing --------------------------------------------------------------

    def render(self, prompt: str, width: int) -> str:
        """Escape sequences that draw prompt and line over the current line
        and leave the cursor at its place in it.

        The line never reaches the last column (a terminal that wraps there
        would scroll): a longer line is shown from wherever it must start
        for the cursor to be in view, and a prompt wider than half the
        terminal loses its start.
        """
        while text_width(prompt) > width // 2:
            prompt = prompt[1:]
        room = max(1, width - 1 - text_width(prompt))
        widths = [char_width(ch) for ch in self.buffer]
        start = 0
        before = sum(widths[:self.cursor])     # columns from start to the cursor
        while start < self.cursor and before >= room:   # the cursor in view
            before -= widths[start]
            start += 1
        while 0 < start < self.cursor and widths[start] == 0:
            start += 1      # not on a mark that belongs to the character before it
        end = start
        used = 0
        while end < len(self.buffer) and used + widths[end] <= room:
            used += widths[end]
            end += 1
        column = text_width(prompt) + before
        move = "\x1b[%dC" % column if column else ""
        return "\r\x1b[2K" + prompt + _shown(self.buffer[start:end]) + "\r" + move

    def render_above(self, text: str, prompt: str, width: int) -> str:
        """text printed on the line where the prompt was, then the prompt and
        the half-typed line drawn again below it."""
        return "\r\x1b[2K" + text + "\r\n" + self.render(prompt, width)


class WindowsKeys:
    """Keys from msvcrt.getwch(), fed one character at a time.

    A special key comes as two: '\\xe0' or '\\x00', then its scan code; a
    character past U+FFFF as two UTF-16 surrogates. feed() returns the keys
    complete so far: none while it waits for a second half, "unknown" for
    a key that has no name here.
    """

    PREFIXES = frozenset("\x00\xe0")
    SCAN_CODES = {"H": "up", "P": "down", "K": "left", "M": "right",
                  "G": "home", "O": "end", "S": "delete"}
    CONTROLS = {"\r": "enter", "\n": "enter", "\x08": "backspace", "\x7f": "backspace",
                "\t": "tab", "\x03": "ctrl-c", "\x04": "ctrl-d", "\x1a": "ctrl-z",
                "\x01": "home", "\x05": "end"}

    def __init__(self) -> None:
        self._pending = ""      # a prefix or a high surrogate

    def feed(self, ch: str) -> List[str]:
        first, self._pending = self._pending, ""
        if first in self.PREFIXES and first:
            return [self.SCAN_CODES.get(ch, "unknown")]
        if first and _is_low_surrogate(ch):
            return [(first + ch).encode("utf-16-le", "surrogatepass").decode("utf-16-le")]
        keys = ["unknown"] if first else []     # a high surrogate without its pair
        if ch in self.PREFIXES or "\ud800" <= ch <= "\udbff":
            self._pending = ch
        elif ch in self.CONTROLS:
            keys.append(self.CONTROLS[ch])
        else:
            keys.append(ch if ch.isprintable() or ch in JOINERS else "unknown")
        return keys


def _is_low_surrogate(ch: str) -> bool:
    return "\udc00" <= ch <= "\udfff"
