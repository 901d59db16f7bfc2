"""Unicode Security Mechanisms (UTS #39) for chat names: the skeleton, and
the characters drawn as nothing.

Pure functions over the tables generated in _confusables.py from the
Unicode data files (see tools/build_confusables.py).
"""

import re
import unicodedata
from typing import Optional

from . import _confusables

# One character class of every range: searched in C.
_IGNORABLE = re.compile("[%s]" % "".join(
    "%s-%s" % (re.escape(chr(first)), re.escape(chr(last)))
    for first, last in _confusables.DEFAULT_IGNORABLE))
_PROTOTYPES = _confusables.PROTOTYPES
SMALL_CAPITALS = {code: chr(capital)
                  for code, capital in _confusables.SMALL_CAPITALS.items()}
"""For str.translate: LATIN LETTER SMALL CAPITAL A to LATIN CAPITAL LETTER A,
and the like. To a reader a small capital is a case of its letter, but
Unicode gives it no case mapping, and UTS #39 maps only some of them, to
look-alikes (U+026A to i)."""


def default_ignorable(ch: str) -> bool:
    """Whether ch has the Unicode property Default_Ignorable_Code_Point:
    drawn as nothing at all (zero-width characters, joiners, bidi controls,
    variation selectors, the Hangul fillers U+115F, U+1160, U+3164, U+FFA0,
    tags, and the code points kept for more of them)."""
    return _IGNORABLE.match(ch) is not None


def first_default_ignorable(text: str) -> Optional[str]:
    """The first default-ignorable character of text, or None."""
    match = _IGNORABLE.search(text)
    return None if match is None else match.group()


def skeleton(text: str) -> str:
    """The UTS #39 skeleton of text (internalSkeleton, as of Unicode 15.1):
    NFD, default-ignorable code points removed, each character replaced by
    its prototype from confusables.txt, NFD again. Strings drawn alike have
    the same skeleton: "\u0430lice" (Cyrillic a), "aIice" and "alice".

    The table holds the sources a name can meet (letters, marks, numbers,
    '-', '_', '.'): for text in NFKC made of those this is the standard
    skeleton; other symbols and punctuation are left as they are."""
    text = _IGNORABLE.sub("", unicodedata.normalize("NFD", text))
    mapped = "".join([_PROTOTYPES.get(ch, ch) for ch in text])
    return unicodedata.normalize("NFD", mapped)
