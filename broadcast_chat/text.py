"""Text safety and names: what a line may show, and who a name is.

Pure functions: no sockets, no threads.
"""

import re
import unicodedata
from typing import Optional, Tuple

NAME_MAX = 24
RESERVED_NAMES = frozenset(
    "server system admin administrator root operator op moderator mod "
    "broadcast everyone all nobody chanserv nickserv".split()
)
NAME_EXTRA_CHARS = frozenset("-_.")


def decode(raw: bytes) -> str:
    """Bytes from the network as text: invalid UTF-8 becomes U+FFFD."""
    return raw.decode("utf-8", "replace")


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
