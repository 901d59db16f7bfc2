"""Build broadcast_chat/_confusables.py from the Unicode data files.

    python3 tools/build_confusables.py CONFUSABLES_TXT UCD_DIR [OUTPUT]

CONFUSABLES_TXT is confusables.txt of UTS #39, Unicode Security Mechanisms
(16.0.0 here). unicode.org is out of reach from the project's machines; the
PyPI wheel of stringalign 0.1.5 ships the 16.0.0 file unchanged, with the
Unicode License v3 beside it:

    python3 -m pip download --no-deps --only-binary :all: \\
        --python-version 3.11 --platform manylinux2014_x86_64 \\
        -d /tmp/sa stringalign==0.1.5
    unzip -o -d /tmp/sa /tmp/sa/stringalign-0.1.5-*.whl \\
        'stringalign/unicode_data/*'
    # -> /tmp/sa/stringalign/unicode_data/confusables.txt  (sha256 b199c74a...)
    #    /tmp/sa/stringalign/unicode_data/license.txt      (Unicode License v3)

UCD_DIR holds DerivedCoreProperties.txt and UnicodeData.txt of the Unicode
Character Database: Debian's package unicode-data (15.0.0 on bookworm)
installs them in /usr/share/unicode:

    apt-get install unicode-data        # or: apt-get download unicode-data
                                        #     dpkg-deb -x unicode-data_*.deb DIR

OUTPUT defaults to broadcast_chat/_confusables.py beside this folder. The
same inputs always give the same bytes, whatever Python runs the build: the
script takes every property from the files, none from unicodedata.

What the chat needs, and so what is written:
- PROTOTYPES, the confusables mapping (source character -> prototype string)
  for the sources that can reach the skeleton of a name: letters, marks,
  digits and other numbers, '-', '_', '.', and code points that
  UnicodeData.txt does not know yet (newer than it, so perhaps letters).
  Left out: sources with a decomposition mapping (NFD takes canonical ones
  apart before the mapping; a name is in NFKC, so compatibility ones never
  occur) and symbols, punctuation, separators and controls (a name never
  holds one, and case mapping never makes one from a letter).
- DEFAULT_IGNORABLE, the Default_Ignorable_Code_Point ranges.
- SMALL_CAPITALS: each "<script> LETTER SMALL CAPITAL X" (and "LATIN SMALL
  CAPITAL LETTER X") mapped to "<script> CAPITAL LETTER X" where that
  letter exists. To a reader a small capital is a case of its letter, as
  the capital is; UTS #39 maps only a few of them, to look-alikes (U+026A
  to i) and Unicode gives them no case mapping.
"""

import hashlib
import os
import re
import sys
from typing import Dict, Iterable, List, Tuple

NAME_PUNCTUATION = frozenset("-_.")
# General categories whose characters a name never holds.
NEVER_IN_A_NAME = ("S", "P", "Z", "C")

SMALL_CAPITAL_NAME = re.compile(
    r"^(LATIN|GREEK|CYRILLIC) (?:LETTER SMALL CAPITAL|SMALL CAPITAL LETTER) (.+)$")


def read_lines(path: str) -> Tuple[bytes, List[str]]:
    with open(path, "rb") as f:
        raw = f.read()
    return raw, raw.decode("utf-8-sig").splitlines()


def header_field(lines: List[str], prefix: str) -> str:
    """The value of the first comment line "# <prefix>..." in a data file."""
    for line in lines:
        if line.startswith("# " + prefix):
            return line[len("# " + prefix):].strip()
    raise SystemExit("no '# %s' line in the header" % prefix)


def parse_confusables(lines: Iterable[str]) -> Dict[int, str]:
    """source code point -> prototype string, from confusables.txt."""
    prototypes = {}
    for line in lines:
        data = line.split("#", 1)[0].strip()
        if not data:
            continue
        source, target, kind = [field.strip() for field in data.split(";")]
        if kind != "MA":
            raise SystemExit("unexpected mapping type %r in %r" % (kind, line))
        prototypes[int(source, 16)] = "".join(
            chr(int(code, 16)) for code in target.split())
    return prototypes


def parse_unicode_data(lines: Iterable[str]) -> Dict[int, Tuple[str, str, str]]:
    """code point -> (name, general category, decomposition mapping).

    First/Last range pairs (ideographs, Hangul syllables, ...) are expanded;
    Hangul syllables are given their algorithmic canonical decomposition
    as "<hangul>", since they are taken apart by NFD."""
    table = {}
    pending = None
    for line in lines:
        if not line:
            continue
        fields = line.split(";")
        code, name, category, decomposition = (
            int(fields[0], 16), fields[1], fields[2], fields[5])
        if name.endswith(", First>"):
            pending = code
            continue
        if name.endswith(", Last>"):
            if "Hangul Syllable" in name:
                decomposition = "<hangul>"
            for each in range(pending, code + 1):
                table[each] = ("", category, decomposition)
            pending = None
            continue
        table[code] = (name, category, decomposition)
    return table


def parse_default_ignorable(lines: Iterable[str]) -> List[Tuple[int, int]]:
    """The Default_Ignorable_Code_Point ranges, merged and sorted."""
    ranges = []
    for line in lines:
        data = line.split("#", 1)[0].strip()
        if not data:
            continue
        codes, prop = [field.strip() for field in data.split(";")]
        if prop != "Default_Ignorable_Code_Point":
            continue
        first, _, last = codes.partition("..")
        ranges.append((int(first, 16), int(last or first, 16)))
    ranges.sort()
    merged = []
    for first, last in ranges:
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(last, merged[-1][1]))
        else:
            merged.append((first, last))
    if not merged:
        raise SystemExit("no Default_Ignorable_Code_Point in the file")
    return merged


def can_reach_a_skeleton(code: int, ucd: Dict[int, Tuple[str, str, str]]) -> bool:
    """Whether a character can be mapped by the skeleton of a valid name."""
    if chr(code) in NAME_PUNCTUATION:
        return True
    if code not in ucd:
        return True
    _, category, decomposition = ucd[code]
    return not decomposition and not category.startswith(NEVER_IN_A_NAME)


def small_capitals(ucd: Dict[int, Tuple[str, str, str]]) -> Dict[int, int]:
    by_name = {name: code for code, (name, _, _) in ucd.items() if name}
    table = {}
    for code, (name, category, _) in sorted(ucd.items()):
        match = SMALL_CAPITAL_NAME.match(name)
        if match is None or category != "Ll":
            continue
        capital = by_name.get("%s CAPITAL LETTER %s" % match.groups())
        if capital is not None:
            table[code] = capital
    return table


def literal(text: str) -> str:
    """A Python string literal for text, in ASCII, \\u escapes for the rest."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in "\\\"":
            out.append("\\" + ch)
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code <= 0xFFFF:
            out.append("\\u%04x" % code)
        else:
            out.append("\\U%08x" % code)
    return '"%s"' % "".join(out)


def render(confusables: Tuple[bytes, List[str]], derived: Tuple[bytes, List[str]],
           unicode_data: Tuple[bytes, List[str]]) -> str:
    ucd = parse_unicode_data(unicode_data[1])
    prototypes = {code: target
                  for code, target in parse_confusables(confusables[1]).items()
                  if can_reach_a_skeleton(code, ucd)}
    ignorable = parse_default_ignorable(derived[1])
    capitals = small_capitals(ucd)

    security_version = header_field(confusables[1], "Version:")
    ucd_version = header_field(derived[1], "DerivedCoreProperties-")
    ucd_version = ucd_version[:-len(".txt")] if ucd_version.endswith(".txt") else ucd_version

    out = [
        '"""Unicode data for chat names. GENERATED by tools/build_confusables.py:',
        "do not edit; run the script again.",
        "",
        "From confusables.txt, UTS #39 Unicode Security Mechanisms %s"
        % security_version,
        "  (%s, sha256 %s)" % (header_field(confusables[1], "Date:"),
                               hashlib.sha256(confusables[0]).hexdigest()),
        "and the Unicode Character Database %s: DerivedCoreProperties.txt" % ucd_version,
        "  (sha256 %s)" % hashlib.sha256(derived[0]).hexdigest(),
        "  and UnicodeData.txt (sha256 %s)."
        % hashlib.sha256(unicode_data[0]).hexdigest(),
        "",
        "Copyright (c) 1991-2025 Unicode, Inc. Derived from the Unicode data files",
        "under the Unicode License v3: see LICENSES/Unicode-3.0.txt. Unicode and",
        "the Unicode Logo are registered trademarks of Unicode, Inc.",
        '"""',
        "",
        "SECURITY_VERSION = %s" % literal(security_version),
        "UCD_VERSION = %s" % literal(ucd_version),
        "",
        "# Default_Ignorable_Code_Point: (first, last) code points, inclusive, sorted.",
        "DEFAULT_IGNORABLE = (",
    ]
    for first, last in ignorable:
        out.append("    (0x%04X, 0x%04X)," % (first, last))
    out += [
        ")",
        "",
        "# LATIN LETTER SMALL CAPITAL A -> LATIN CAPITAL LETTER A, and the like.",
        "SMALL_CAPITALS = {",
    ]
    for code, capital in sorted(capitals.items()):
        out.append("    0x%04X: 0x%04X," % (code, capital))
    out += [
        "}",
        "",
        "# confusables.txt: source character -> prototype, for the sources a",
        "# name's skeleton can meet (see tools/build_confusables.py).",
        "PROTOTYPES = {",
    ]
    for code, target in sorted(prototypes.items()):
        out.append("    %s: %s," % (literal(chr(code)), literal(target)))
    out += ["}", ""]
    return "\n".join(out)


def main(argv: List[str]) -> int:
    if len(argv) not in (3, 4):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    here = os.path.dirname(os.path.abspath(__file__))
    output = argv[3] if len(argv) == 4 else os.path.join(
        here, os.pardir, "broadcast_chat", "_confusables.py")
    text = render(read_lines(argv[1]),
                  read_lines(os.path.join(argv[2], "DerivedCoreProperties.txt")),
                  read_lines(os.path.join(argv[2], "UnicodeData.txt")))
    with open(output, "w", encoding="ascii", newline="\n") as f:
        f.write(text)
    print("wrote %s (%d bytes)" % (os.path.normpath(output), len(text)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
