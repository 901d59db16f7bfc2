"""Direct tests of the UTS #39 skeleton, invisible characters and name keys."""

import random
import unicodedata
import unittest
from unittest import mock

from broadcast_chat import _confusables, confusables, names
from broadcast_chat.confusables import default_ignorable, first_default_ignorable, skeleton
from broadcast_chat.names import check_name, name_key, name_keys, names_clash

# Look-alikes of names that are online or reserved, each as measured or as
# UTS #39 lists it: every one must be taken for its name.
LOOKALIKES = {
    "alice": [
        "\u1ea1lice",                       # a with dot below (accents fold)
        "\u00e5lice", "alic\u00e9",
        "\u0251lice",                       # LATIN SMALL LETTER ALPHA (IPA)
        "al\u0131ce", "al\u0269ce",         # dotless i, LATIN SMALL LETTER IOTA
        "\u1d00\u029f\u026a\u1d04\u1d07",   # small capitals
        "\u1d00lice",
        "aIice", "AIice", "a1ice",          # capital I and one for l
        "\u13aa\u13de\u13a5\u13df\u13ac",   # Cherokee A L i C E
        "\u13aalice",
        "\u0430lice", "ali\u0441e", "Al\u0399ce", "\u0410LICE",   # Cyrillic, Greek
        "\u0391L\u0399C\u0395",             # Greek capitals
        "a\u04cfice",                       # Cyrillic palochka
        "ALICE", "Alice", "aLiCe", "\uff21\uff4c\uff49\uff43\uff45",
    ],
    "bob": [
        "\u13f4O\u13f4",                    # Cherokee B, Latin O
        "b\u0585b",                         # Armenian oh
        "\u0184ob",                         # LATIN CAPITAL LETTER TONE SIX
        "\u0299\u1d0f\u0299",               # small capitals
        "\u0412ob", "\u042cob", "b\u043eb", "b\u03bfb",
        "BOB", "b0b",
    ],
    "admin": [
        "\u13aa\u13a0\u13b7\u13a5N",        # Cherokee A D M i, Latin N
        "\u1d00\u1d05\u1d0d\u026a\u0274",   # small capitals
        "\u0430dmin", "\u0251dmin", "adm\u0131n", "admIn", "ADMIN",
        "adrnin",                           # rn is drawn as m
    ],
    "server": [
        "\u13da\u13ac\u13d2\u13d9\u13ac\u13d2",   # Cherokee S E R V E R
        "\ua731\u1d07\u0280\u1d20\u1d07\u0280",   # small capitals
        "\u0455\u0435rv\u0435r",            # Cyrillic
        "S\u0395RV\u0395R",                 # Greek capital epsilon
        "\u054ferver",                      # Armenian capital tiwn
        "se\u0280ver", "SERVER",
    ],
    "user": ["\u057dser", "\u03c5ser"],     # Armenian seh, Greek upsilon
}

# The Cyrillic and Greek letters of the table that name_key used before.
OLD_LOOKALIKES = {
    "\u0430": "a", "\u0435": "e", "\u0456": "i", "\u0458": "j", "\u043e": "o",
    "\u0440": "p", "\u0441": "c", "\u0443": "y", "\u0445": "x", "\u0455": "s",
    "\u0501": "d", "\u04bb": "h", "\u04cf": "l", "\u051b": "q", "\u051d": "w",
    "\u03b1": "a", "\u03bf": "o", "\u03c1": "p", "\u03b9": "i", "\u03ba": "k",
    "\u03bd": "v", "\u03c5": "u", "\u03c7": "x",
}

HANGUL_FILLERS = ("\u3164", "\uffa0", "\u115f", "\u1160")
INVISIBLE = HANGUL_FILLERS + (
    "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u034f",
    "\u202e", "\u2066", "\ufe0f", "\U000e0001", "\U000e0041", "\U000e0100",
    "\u180e", "\u17b4", "\u061c", "\U0001d173",
)


def name_chars():
    """The characters of this Python's Unicode a valid name can hold, as
    NFKC leaves them."""
    for code in range(0x110000):
        ch = chr(code)
        if ((ch.isalnum() or ch in names.NAME_EXTRA_CHARS)
                and unicodedata.normalize("NFKC", ch) == ch):
            yield ch


class SkeletonTest(unittest.TestCase):
    def test_look_alikes_share_a_skeleton(self):
        for same in ("\u0430lice", "aIice", "a1ice", "\u0251lice", "al\u0131ce"):
            self.assertEqual(skeleton(same), "alice", same)
        self.assertEqual(skeleton("\u13aa\u13de\u13a5\u13df\u13ac"), "ALiCE")

    def test_skeleton_keeps_case_and_marks(self):
        # UTS #39 compares as drawn: A is not a, and an accent is drawn.
        self.assertEqual(skeleton("ALICE"), "ALlCE")
        self.assertEqual(skeleton("\u00e9"), "e\u0301")
        self.assertNotEqual(skeleton("alice"), skeleton("Alice"))

    def test_prototypes_of_several_characters(self):
        self.assertEqual(skeleton("m"), "rn")
        self.assertEqual(skeleton("admin"), skeleton("adrnin"))

    def test_default_ignorable_code_points_are_removed(self):
        for ch in INVISIBLE:
            self.assertEqual(skeleton("ali" + ch + "ce"), "alice", "U+%04X" % ord(ch))

    def test_skeleton_is_nfd_at_both_ends(self):
        self.assertEqual(skeleton("\u1ea1"), "a\u0323")
        self.assertEqual(skeleton("\u212b"), skeleton("A\u030a"))   # ANGSTROM SIGN

    def test_generated_table(self):
        self.assertEqual(_confusables.SECURITY_VERSION, "16.0.0")
        self.assertTrue(all(len(source) == 1 for source in _confusables.PROTOTYPES))
        self.assertGreater(len(_confusables.PROTOTYPES), 2000)
        ranges = _confusables.DEFAULT_IGNORABLE
        self.assertEqual(list(ranges), sorted(ranges))
        for (_, last), (first, _) in zip(ranges, ranges[1:]):
            self.assertLess(last + 1, first)


class DefaultIgnorableTest(unittest.TestCase):
    def test_invisible_characters(self):
        for ch in INVISIBLE:
            self.assertTrue(default_ignorable(ch), "U+%04X" % ord(ch))

    def test_visible_characters(self):
        for ch in ("a", " ", "\t", "\x00", "\u00ac", "\u00ae", "\u1161", "\u3165",
                   "\u200a", "\u2010", "\ufe10", "\U000e1000", "\U0010ffff", "\u0430"):
            self.assertFalse(default_ignorable(ch), "U+%04X" % ord(ch))

    def test_first_default_ignorable(self):
        self.assertEqual(first_default_ignorable("bob\u200b\u3164"), "\u200b")
        self.assertEqual(first_default_ignorable("bob\U000e0041"), "\U000e0041")
        self.assertIsNone(first_default_ignorable("b\u00f6b \u1161"))


class NameKeyTest(unittest.TestCase):
    def test_look_alikes_are_the_same_name(self):
        for name, same in LOOKALIKES.items():
            for other in same:
                self.assertTrue(names_clash(other, name), "%r for %r" % (other, name))

    def test_old_cyrillic_and_greek_table_still_holds(self):
        for foreign, latin in OLD_LOOKALIKES.items():
            self.assertTrue(names_clash("b" + foreign + "b", "b" + latin + "b"),
                            "U+%04X" % ord(foreign))

    def test_case_compatibility_forms_and_accents(self):
        for a, b in (("alice", "ALICE"), ("Stra\u00dfe", "STRASSE"),
                     ("\u03c5\u03c0\u03b1\u03c4\u03b9\u03b1", "\u03a5\u03a0\u0391\u03a4\u0399\u0391"),
                     ("\u03b5\u03bb\u03b5\u03bd\u03b1", "\u0395\u039b\u0395\u039d\u0391"),
                     ("\u03a9mega", "\u03c9mega"), ("Jos\u00e9", "jose"), ("Zo\u00eb", "ZOE"),
                     ("\u2167", "VIII"), ("\ufb01sh", "fish")):
            self.assertTrue(names_clash(a, b), (a, b))
            self.assertEqual(name_key(a), name_key(b), (a, b))

    def test_distinct_names_stay_distinct(self):
        for a, b in (("anna", "ana"), ("bob", "rob"), ("alice", "alicia"),
                     ("alice", "allce"), ("Neil", "Nell"), ("Ali", "all"),
                     ("dave", "dane"), ("lucy", "lycy"), ("5am", "Sam"),
                     ("8ob", "Bob"), ("2oe", "Zoe"), ("alice", "alice2"),
                     ("\u0434\u0438\u043c\u0430", "alice"), ("\u6797", "\u68ee")):
            self.assertFalse(names_clash(a, b), (a, b))

    def test_digits_drawn_as_letters_are_those_letters(self):
        # UTS #39: 0 is drawn as O, 1 as l. Accepted: "b0b" is bob.
        self.assertTrue(names_clash("b0b", "bob"))
        self.assertTrue(names_clash("a11", "all"))
        self.assertFalse(names_clash("b8b", "bob"))

    def test_invisible_characters_do_not_change_the_key(self):
        for ch in INVISIBLE:
            self.assertEqual(name_keys("ali" + ch + "ce"), name_keys("alice"))

    def test_every_case_of_a_letter_is_the_same_name(self):
        for ch in self._letters():
            for other in (ch.upper(), ch.lower(), ch.casefold()):
                other = unicodedata.normalize("NFKC", other)
                self.assertTrue(names_clash(ch, other), "U+%04X" % ord(ch))

    def test_every_confusable_is_the_same_name_as_its_prototype(self):
        for ch in self._letters():
            if ch in confusables._PROTOTYPES and ch != "\u04cf":
                prototype = unicodedata.normalize("NFKC", skeleton(ch))
                self.assertTrue(names_clash(ch, prototype), "U+%04X" % ord(ch))

    def _letters(self):
        """Name characters with a prototype or another case."""
        return [ch for ch in name_chars()
                if ch in confusables._PROTOTYPES or ch.upper() != ch or ch.lower() != ch]

    def test_ascii_names_take_the_short_way_to_the_same_keys(self):
        chars = [chr(code) for code in range(0x21, 0x7F)]
        rng = random.Random(39)
        samples = [a + b for a in chars for b in chars]
        samples += ["".join(rng.choice(chars) for _ in range(rng.randint(1, 24)))
                    for _ in range(2000)]
        for text in samples:
            self.assertEqual(name_keys(text), names._keys_of(text), text)

    def test_a_long_name_is_not_normalised(self):
        long_name = "\ufdfa" * 1300
        with mock.patch.object(unicodedata, "normalize", side_effect=AssertionError):
            keys = name_keys(long_name)
        self.assertEqual(keys, ("\0" + long_name,) * 3)
        self.assertNotEqual(name_key(long_name), name_key("\ufdfa"))


class CheckNameTest(unittest.TestCase):
    def test_look_alikes_of_reserved_names_are_reserved(self):
        for name in ("admin", "server"):
            for same in LOOKALIKES[name]:
                valid, error = check_name(same)
                self.assertIsNone(valid, same)
                self.assertIn("reserved", error)
        for same in ("AII", "a11", "r00t", "M0D", "\u0430ll", "\u13aa\u13a0\u13b7\u13a5N"):
            self.assertIsNone(check_name(same)[0], same)

    def test_names_near_reserved_ones_are_free(self):
        for name in ("Ali", "alley", "rooted", "moderna", "alice", "bob", "\u00e9lodie"):
            self.assertEqual(check_name(name), (name, None))

    def test_hangul_fillers_are_refused_and_named(self):
        for filler in HANGUL_FILLERS:
            for name in ("alice" + filler, filler + "bob", "ad" + filler + "min"):
                valid, error = check_name(name)
                self.assertIsNone(valid, repr(name))
                self.assertIn("<U+%04X>" % ord(filler), error)
                self.assertIn("invisible", error)

    def test_zero_width_and_other_invisible_characters_are_refused(self):
        for ch in INVISIBLE:
            valid, error = check_name("ali" + ch + "ce")
            self.assertIsNone(valid, "U+%04X" % ord(ch))
            self.assertIn("<U+%04X>" % ord(ch), error)
            self.assertIn("letters, digits", error)

    def test_the_raw_length_is_checked_before_nfkc(self):
        # NFKC makes 18 characters of U+FDFA: refused by its raw length,
        # and without normalising anything.
        self.assertEqual(len(unicodedata.normalize("NFKC", "\ufdfa")), 18)
        with mock.patch.object(unicodedata, "normalize", side_effect=AssertionError):
            self.assertEqual(check_name("\ufdfa" * 1300),
                             (None, "a name has at most %d characters" % names.NAME_MAX))

    def test_raw_length_limit(self):
        name = "alice"
        padded = " " * (names.NAME_RAW_MAX - len(name)) + name
        self.assertEqual(check_name(padded), (name, None))
        self.assertIsNone(check_name(" " + padded)[0])
        # Two U+FDFA are 36 characters after NFKC: refused by NAME_MAX.
        self.assertIn("at most", check_name("\ufdfa\ufdfa")[1])

    def test_rules_kept_from_before(self):
        self.assertEqual(check_name("  alice "), ("alice", None))
        self.assertEqual(check_name("\uff21\uff4c\uff49\uff43\uff45"), ("Alice", None))
        self.assertEqual(check_name("x" * names.NAME_MAX), ("x" * names.NAME_MAX, None))
        self.assertIn("at most", check_name("x" * (names.NAME_MAX + 1))[1])
        self.assertIn("blank", check_name(" \t")[1])
        self.assertIn("a space", check_name("alice smith")[1])
        self.assertIn("starts with", check_name("-alice")[1])
        error = check_name("al\x1bice")[1]
        self.assertIn("^[", error)     # as sanitize() shows an escape
        self.assertNotIn("\x1b", error)
        self.assertIn("not *", check_name("a*b")[1])


class NameIndexTest(unittest.TestCase):
    def test_a_name_that_clashes_is_refused(self):
        index = names.NameIndex()
        self.assertIsNone(index.put("member-1", "alice"))
        for same in ("aIice", "ALICE", "\u0430lice", "\u13aa\u13de\u13a5\u13df\u13ac"):
            self.assertEqual(index.put("member-2", same), "member-1", same)
        self.assertIsNone(index.put("member-2", "bob"))
        self.assertEqual(len(index), 2)

    def test_find_by_any_look_alike(self):
        index = names.NameIndex()
        index.put("member-1", "alice")
        index.put("member-2", "Bob")
        self.assertEqual(index.find("ALICE"), "member-1")
        self.assertEqual(index.find("aIice"), "member-1")
        self.assertEqual(index.find("b0b"), "member-2")
        self.assertIsNone(index.find("carol"))
        self.assertIsNone(index.find("\ufdfa" * 1300))

    def test_rename_and_remove(self):
        index = names.NameIndex()
        index.put("member-1", "alice")
        self.assertIsNone(index.put("member-1", "Alice"))     # its own name
        self.assertIsNone(index.put("member-1", "alicia"))
        self.assertIsNone(index.find("alice"))
        self.assertIsNone(index.put("member-2", "alice"))
        index.remove("member-1")
        index.remove("member-1")
        self.assertIsNone(index.find("alicia"))
        self.assertEqual(len(index), 1)


if __name__ == "__main__":
    unittest.main()
