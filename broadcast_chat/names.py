"""Chat names: which are valid, and when two are the same name for a reader.

Pure code: no sockets, no threads. NameIndex is not locked; its owner
holds the lock that guards it.
"""

import itertools
import re
import unicodedata
from typing import Dict, Generic, Hashable, List, Optional, Tuple, TypeVar

from .confusables import (SMALL_CAPITALS, default_ignorable, first_default_ignorable,
                          skeleton)
from .text import sanitize

NAME_MAX = 24
# A name is refused by its raw length before anything normalises it, as
# NFKC makes 18 characters of one U+FDFA. No valid name needs more than
# this before NFKC: composing (a letter and its marks, Hangul jamo) makes
# one character of at most 4.
NAME_RAW_MAX = 4 * NAME_MAX
RESERVED_NAMES = frozenset(
    "server system admin administrator root operator op moderator mod "
    "broadcast everyone all nobody chanserv nickserv".split()
)
NAME_EXTRA_CHARS = frozenset("-_.")

Keys = Tuple[str, str, str]

# U+04CF CYRILLIC SMALL LETTER PALOCHKA is drawn as a stroke as tall as l,
# like its capital U+04C0, which UTS #39 maps to l; UTS #39 maps it to i.
_PALOCHKA = {0x04CF: "l"}


def _looks(text: str) -> str:
    """How text is drawn: its skeleton without nonspacing marks, so that
    accents, dots and strokes do not make another name either."""
    return "".join([ch for ch in skeleton(text)
                    if unicodedata.category(ch) != "Mn"])


def _small(text: str) -> str:
    """How text is drawn in small letters."""
    return _looks(text.casefold())


def _keys_of(text: str) -> Keys:
    text = unicodedata.normalize("NFKC", text).translate(_PALOCHKA)
    # A small capital is a case of its letter, like the capital.
    capitals = text.translate(SMALL_CAPITALS)
    return _small(_looks(text)), _small(capitals), _looks(capitals.upper())


# On ASCII each step above (NFKC, skeleton, case) maps every character to
# the same string wherever it stands, so a name's keys are its characters'
# keys put together: one str.translate each, with no normalising.
_ASCII = re.compile(r"[\x00-\x7f]*\Z")
_ASCII_KEYS = tuple(
    {code: _keys_of(chr(code))[place] for code in range(128)}
    for place in range(3))


def name_keys(name: str) -> Keys:
    """The keys of a name. Two names are the same name when they share a
    key at the same place (names_clash):

    0. as drawn, then in small letters: "aIice" is "alice", "b0b" is
       "bob", Cherokee "\u13aa\u13a0\u13b7\u13a5N" is "admin";
    1. in small letters (case folded), as drawn: "ALICE" is "alice",
       "\u0410LICE" (Cyrillic A) is "alice", "Stra\u00dfe" is "STRASSE";
    2. as drawn in capitals: "\u0391L\u0399CE" (Greek) is "ALICE".

    All after NFKC, with small capitals as capitals. No single key can do
    this: one that made "ALICE" and "aIice" both equal to "alice" would
    make i and l one letter everywhere (Neil and Nell, Ali and the reserved
    all), and Greek case pairs would chain more (u, upsilon, Upsilon, Y).

    A name too long to be valid (over NAME_RAW_MAX) is not normalised: its
    keys are itself after a NUL, which no valid name's keys hold."""
    if len(name) > NAME_RAW_MAX:
        raw = "\0" + name
        return raw, raw, raw
    if _ASCII.match(name) is not None:
        return (name.translate(_ASCII_KEYS[0]), name.translate(_ASCII_KEYS[1]),
                name.translate(_ASCII_KEYS[2]))
    return _keys_of(name)


def name_key(name: str) -> str:
    """The key to look a name up by, and to colour it by: case, NFKC forms,
    accents, invisible characters and look-alikes in small letters folded
    (key 1 of name_keys). Whether a name is free takes all of name_keys."""
    return name_keys(name)[1]


def names_clash(a: str, b: str) -> bool:
    """Whether a reader could take name a for name b."""
    return any(x == y for x, y in zip(name_keys(a), name_keys(b)))


_RESERVED_KEYS = frozenset(
    (place, key) for name in RESERVED_NAMES
    for place, key in enumerate(name_keys(name)))


def _shown(ch: str) -> str:
    """ch as an error message may show it: itself when it is visible,
    <U+XXXX> when it is invisible or a control."""
    if ch == " ":
        return "a space"
    if default_ignorable(ch):
        return "<U+%04X>" % ord(ch)
    return sanitize(ch)     # ESC as ^[, a bidi override as <U+202E>


_CHARS_RULE = "a name has letters, digits, '-', '_' and '.' only, not "


def _invisible(text: str) -> Optional[str]:
    """The error for the first character of text drawn as nothing, or None."""
    ch = first_default_ignorable(text)
    return None if ch is None else _CHARS_RULE + "the invisible " + _shown(ch)


def check_name_chars(name: str) -> Optional[str]:
    """Why a name (stripped, in NFKC) may not have one of its characters,
    or None: only letters, digits, '-', '_' and '.', and none drawn as
    nothing (U+3164 HANGUL FILLER is a letter to str.isalnum)."""
    problem = _invisible(name)
    if problem is not None:
        return problem
    for ch in name:
        if not (ch.isalnum() or ch in NAME_EXTRA_CHARS):
            return _CHARS_RULE + _shown(ch)
    return None


def check_name(name: str) -> Tuple[Optional[str], Optional[str]]:
    """Validate a requested name: (normalised name, None) or (None, error).

    The raw length is checked first, so an endless name costs nothing; an
    invisible character is named as typed (U+3164, not the U+1160 that
    NFKC makes of it)."""
    if len(name) > NAME_RAW_MAX:
        return None, "a name has at most %d characters" % NAME_MAX
    name = name.strip()
    problem = _invisible(name)
    if problem is not None:
        return None, problem
    name = unicodedata.normalize("NFKC", name)
    if not name:
        return None, "a name cannot be blank"
    if len(name) > NAME_MAX:
        return None, "a name has at most %d characters" % NAME_MAX
    problem = check_name_chars(name)
    if problem is not None:
        return None, problem
    if not name[0].isalnum():
        return None, "a name starts with a letter or a digit"
    if any(pair in _RESERVED_KEYS for pair in enumerate(name_keys(name))):
        return None, "the name %s is reserved" % name
    return name, None


Holder = TypeVar("Holder", bound=Hashable)


class NameIndex(Generic[Holder]):
    """Who holds which name, by every key of the name, so that no two
    holders have names that clash. Names given to it are valid (check_name)."""

    def __init__(self) -> None:
        self._by_key = {}    # type: Dict[Tuple[int, str], Holder]
        self._keys = {}      # type: Dict[Holder, Keys]

    def __len__(self) -> int:
        return len(self._keys)

    def first(self, count: int) -> List[Holder]:
        """Up to count holders, the longest-held first."""
        return list(itertools.islice(self._keys, count))

    def find(self, name: str) -> Optional[Holder]:
        """The holder of a name that clashes with name, or None; the one
        spelled the same but for case first (a lookup by typed name)."""
        keys = name_keys(name)
        for place in (1, 0, 2):
            holder = self._by_key.get((place, keys[place]))
            if holder is not None:
                return holder
        return None

    def put(self, holder: Holder, name: str) -> Optional[Holder]:
        """Give holder the name, dropping its old one, unless the name
        clashes with another holder's: then return that holder."""
        keys = name_keys(name)
        for pair in enumerate(keys):
            other = self._by_key.get(pair)
            if other is not None and other != holder:
                return other
        self.remove(holder)
        for pair in enumerate(keys):
            self._by_key[pair] = holder
        self._keys[holder] = keys
        return None

    def remove(self, holder: Holder) -> None:
        """Free holder's name, if it has one."""
        for pair in enumerate(self._keys.pop(holder, ())):
            del self._by_key[pair]


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
