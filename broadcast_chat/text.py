"""Text safety: what a line may show. Pure functions."""

import re
import unicodedata


def decode(raw: bytes) -> str:
    """Bytes from the network as text: invalid UTF-8 becomes U+FFFD."""
    return raw.decode("utf-8", "replace")


_MAYBE_UNSAFE = re.compile("[^\x20-\x7e]")
# Invisible joiners that emoji sequences need; harmless on a terminal.
JOINERS = frozenset("\u200c\u200d")
_UNSAFE_CATEGORIES = frozenset(("Cc", "Cf", "Zl", "Zp", "Cs"))


def _render_char(ch: str) -> str:
    code = ord(ch)
    if code < 0x20:
        return " " if ch == "\t" else "^" + chr(code + 0x40)
    if code == 0x7F:
        return "^?"
    if ch in JOINERS or unicodedata.category(ch) not in _UNSAFE_CATEGORIES:
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


def columns(ch: str) -> int:
    """Columns ch takes on a terminal: 2 for wide East Asian characters, 0
    for combining marks and the joiners of emoji sequences, 1 otherwise."""
    if ch in JOINERS or unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def width(text: str) -> int:
    """Columns text takes on a terminal (columns() of each character)."""
    return sum(columns(ch) for ch in text)
