"""The pure helpers, tested directly: no sockets, no threads."""

import json
import os
import random
import tempfile
import threading
import time
import unittest

from tests import support  # (also puts the repository on sys.path)

import helpers
from broadcast_chat import protocol
from helpers import Action, LineFramer


def feed_all(framer, chunks):
    lines, too_long = [], 0
    for chunk in chunks:
        got, refused = framer.feed(chunk)
        lines.extend(got)
        too_long += refused
    return lines, too_long


class LineFramerTest(unittest.TestCase):
    def test_lines_in_one_chunk(self):
        self.assertEqual(LineFramer(100).feed(b"one\ntwo\nthree\n"), ([b"one", b"two", b"three"], 0))

    def test_crlf_is_accepted(self):
        self.assertEqual(LineFramer(100).feed(b"one\r\ntwo\n"), ([b"one", b"two"], 0))

    def test_only_a_final_cr_is_dropped(self):
        self.assertEqual(LineFramer(100).feed(b"a\rb\r\n"), ([b"a\rb"], 0))

    def test_partial_line_waits_for_its_newline(self):
        framer = LineFramer(100)
        self.assertEqual(framer.feed(b"hel"), ([], 0))
        self.assertEqual(framer.feed(b"lo"), ([], 0))
        self.assertEqual(framer.feed(b"\nwor"), ([b"hello"], 0))
        self.assertEqual(framer.feed(b"ld\n"), ([b"world"], 0))

    def test_cr_and_lf_in_different_chunks(self):
        self.assertEqual(feed_all(LineFramer(100), [b"hello\r", b"\n"]), ([b"hello"], 0))

    def test_every_split_point_gives_the_same_lines(self):
        stream = b"alpha\r\nbeta\n\ngamma delta\r\n"
        for cut in range(len(stream) + 1):
            with self.subTest(cut=cut):
                self.assertEqual(feed_all(LineFramer(100), [stream[:cut], stream[cut:]]),
                                 ([b"alpha", b"beta", b"", b"gamma delta"], 0))

    def test_byte_at_a_time(self):
        stream = b"one\r\ntwo\n"
        self.assertEqual(feed_all(LineFramer(100), [stream[i:i + 1] for i in range(len(stream))]),
                         ([b"one", b"two"], 0))

    def test_line_at_the_limit_is_accepted_with_lf_or_crlf(self):
        line = b"x" * 10
        self.assertEqual(LineFramer(10).feed(line + b"\n"), ([line], 0))
        self.assertEqual(LineFramer(10).feed(line + b"\r\n"), ([line], 0))
        self.assertEqual(feed_all(LineFramer(10), [line + b"\r", b"\n"]), ([line], 0))

    def test_overlong_line_with_newline_is_refused_and_counted(self):
        framer = LineFramer(10)
        self.assertEqual(framer.feed(b"ok\n" + b"x" * 11 + b"\nafter\n"), ([b"ok", b"after"], 1))

    def test_overlong_line_split_over_chunks_is_counted_once(self):
        framer = LineFramer(10)
        lines, too_long = feed_all(framer, [b"x" * 8, b"x" * 8, b"x" * 8, b"\nnext\n"])
        self.assertEqual((lines, too_long), ([b"next"], 1))

    def test_overlong_line_whose_newline_never_comes_keeps_memory_bounded(self):
        framer = LineFramer(10)
        lines, too_long = framer.feed(b"y" * 50)
        self.assertEqual((lines, too_long), ([], 1))
        for _ in range(1000):
            self.assertEqual(framer.feed(b"z" * 1000), ([], 0))
            self.assertLessEqual(len(framer._rest), 11)
        # When the newline finally comes, the tail is dropped, not delivered.
        self.assertEqual(framer.feed(b"zzz\nfine\n"), ([b"fine"], 0))

    def test_overlong_line_does_not_eat_the_next_one(self):
        framer = LineFramer(10)
        self.assertEqual(feed_all(framer, [b"x" * 20, b"\n", b"good\n"]), ([b"good"], 1))

    def test_decode_replaces_invalid_utf8(self):
        self.assertEqual(helpers.decode(b"caf\xc3\xa9 \xff"), "caf\u00e9 \ufffd")


class SanitizeTest(unittest.TestCase):
    def test_printable_text_is_unchanged(self):
        for text in ("hello, world", "caf\u00e9 \u00fcber \u4e2d\u6587", "x < y > z * 2"):
            self.assertEqual(helpers.sanitize(text), text)

    def test_c0_controls_become_caret_notation(self):
        self.assertEqual(helpers.sanitize("a\x1b[31mred"), "a^[[31mred")
        self.assertEqual(helpers.sanitize("bell\x07"), "bell^G")
        self.assertEqual(helpers.sanitize("back\x08space"), "back^Hspace")
        self.assertEqual(helpers.sanitize("over\rwrite"), "over^Mwrite")
        self.assertEqual(helpers.sanitize("nul\x00"), "nul^@")
        self.assertEqual(helpers.sanitize("new\nline"), "new^Jline")

    def test_del_and_tab(self):
        self.assertEqual(helpers.sanitize("del\x7f"), "del^?")
        self.assertEqual(helpers.sanitize("a\tb"), "a b")

    def test_c1_controls_are_shown_as_code_points(self):
        self.assertEqual(helpers.sanitize("csi\x9b31m"), "csi<U+009B>31m")
        self.assertEqual(helpers.sanitize("nel\x85"), "nel<U+0085>")

    def test_bidi_overrides_and_isolates_are_shown(self):
        self.assertEqual(helpers.sanitize("abc\u202edef"), "abc<U+202E>def")
        self.assertEqual(helpers.sanitize("\u2066x\u2069"), "<U+2066>x<U+2069>")
        self.assertEqual(helpers.sanitize("\u200f"), "<U+200F>")
        self.assertEqual(helpers.sanitize("line\u2028sep"), "line<U+2028>sep")

    def test_emoji_with_zero_width_joiner_survive(self):
        family = "\U0001F468\u200d\U0001F469\u200d\U0001F467"
        flag = "\U0001F3F3\ufe0f\u200d\U0001F308"
        thumbs = "\U0001F44D\U0001F3FD"
        for text in (family, flag, thumbs, "ok " + family + " ok"):
            self.assertEqual(helpers.sanitize(text), text)

    def test_result_has_no_control_characters(self):
        text = "".join(chr(i) for i in range(0, 0xA0)) + "\u202a\u202b\u202c\u202d\u202e\ufeff"
        shown = helpers.sanitize(text)
        for ch in shown:
            self.assertTrue(0x20 <= ord(ch) < 0x7F, repr(ch))


class NameTest(unittest.TestCase):
    def test_valid_names(self):
        for name in ("alice", "Bob", "carol-2", "d_e.f", "7up", "\u00e9lodie", "x" * helpers.NAME_MAX):
            self.assertEqual(helpers.check_name(name), (name, None))

    def test_surrounding_spaces_are_trimmed(self):
        self.assertEqual(helpers.check_name("  alice "), ("alice", None))

    def test_blank(self):
        for name in ("", "   ", "\t"):
            name_, error = helpers.check_name(name)
            self.assertIsNone(name_)
            self.assertIn("blank", error)

    def test_spaces_inside(self):
        name, error = helpers.check_name("alice smith")
        self.assertIsNone(name)
        self.assertIn("a space", error)

    def test_overlong(self):
        name, error = helpers.check_name("x" * (helpers.NAME_MAX + 1))
        self.assertIsNone(name)
        self.assertIn("at most %d" % helpers.NAME_MAX, error)

    def test_bad_characters(self):
        for bad in ("a<b>", "a*b", "al\x1bice", "bob\u202e", "a/b", "a:b", "a@b"):
            name, error = helpers.check_name(bad)
            self.assertIsNone(name, bad)
            self.assertIn("letters, digits", error)
        self.assertNotIn("\x1b", helpers.check_name("al\x1bice")[1])

    def test_must_start_with_letter_or_digit(self):
        for bad in ("-alice", "_bob", ".carol"):
            name, error = helpers.check_name(bad)
            self.assertIsNone(name)
            self.assertIn("starts with", error)

    def test_reserved_in_any_case(self):
        for bad in ("server", "Server", "ADMIN", "root", "Everyone"):
            name, error = helpers.check_name(bad)
            self.assertIsNone(name, bad)
            self.assertIn("reserved", error)

    def test_nfkc_normalised(self):
        self.assertEqual(helpers.check_name("\uff21\uff4c\uff49\uff43\uff45"), ("Alice", None))

    def test_name_key_folds_cyrillic_and_greek_lookalikes(self):
        key = helpers.name_key("alice")
        for same in ("\u0430lice", "ali\u0441e", "Al\u0399ce", "\u0410LICE"):
            self.assertEqual(helpers.name_key(same), key, same)
        self.assertNotEqual(helpers.name_key("\u0434\u0438\u043c\u0430"), key)   # a real Cyrillic name stays itself
        self.assertIsNone(helpers.check_name("\u0430dmin")[0])      # nor a reserved one

    def test_name_key_makes_case_and_nfkc_duplicates_equal(self):
        key = helpers.name_key("alice")
        for same in ("Alice", "ALICE", "\uff21\uff4c\uff49\uff43\uff45", "aLiCe"):
            self.assertEqual(helpers.name_key(same), key, same)
        self.assertEqual(helpers.name_key("Stra\u00dfe"), helpers.name_key("STRASSE"))
        self.assertNotEqual(helpers.name_key("alice"), helpers.name_key("alice2"))

    def test_name_from_hostname(self):
        self.assertEqual(helpers.name_from_hostname("DESKTOP-ABC123"), "DESKTOP-ABC123")
        self.assertEqual(helpers.name_from_hostname("box.example.com"), "box")
        self.assertEqual(helpers.name_from_hostname("my box"), "my-box")
        self.assertEqual(helpers.name_from_hostname(""), "user")
        self.assertEqual(helpers.name_from_hostname("root"), "user")
        self.assertLessEqual(len(helpers.name_from_hostname("h" * 100)), helpers.NAME_MAX)

    def test_name_variant(self):
        self.assertEqual(helpers.name_variant("bot", 1), "bot-2")
        self.assertEqual(helpers.name_variant("bot", 9), "bot-10")
        long_variant = helpers.name_variant("x" * helpers.NAME_MAX, 1)
        self.assertEqual(long_variant, "x" * (helpers.NAME_MAX - 2) + "-2")
        self.assertEqual(helpers.check_name(long_variant), (long_variant, None))


class InterpretTest(unittest.TestCase):
    def check(self, line, kind, target="", text=""):
        self.assertEqual(helpers.interpret(line), Action(kind, target, text), line)

    def check_error(self, line, fragment):
        action = helpers.interpret(line)
        self.assertEqual(action.kind, "error", line)
        self.assertIn(fragment, action.text)

    def test_plain_text_is_said(self):
        self.check("hello there", "say", text="hello there")
        self.check(" /not a command", "say", text=" /not a command")

    def test_double_slash_sends_literal_slash(self):
        self.check("//text", "say", text="/text")
        self.check("//nick bob", "say", text="/nick bob")
        self.check("//", "say", text="/")

    def test_nick(self):
        self.check("/nick bob", "nick", target="bob")
        self.check("/NICK Bob", "nick", target="Bob")
        self.check("/nick  bob ", "nick", target="bob")
        self.check_error("/nick", "usage: /nick NAME")
        self.check_error("/nick a b", "usage: /nick NAME")

    def test_who_and_help(self):
        self.check("/who", "who")
        self.check("/help", "help")
        self.check_error("/who alice", "usage: /who")
        self.check_error("/help me", "usage: /help")

    def test_msg(self):
        self.check("/msg bob hi there", "msg", target="bob", text="hi there")
        self.check("/msg bob   spaced  ", "msg", target="bob", text="spaced")
        self.check_error("/msg", "usage: /msg NAME TEXT")
        self.check_error("/msg bob", "usage: /msg NAME TEXT")
        self.check_error("/msg bob   ", "usage: /msg NAME TEXT")

    def test_me(self):
        self.check("/me waves", "me", text="waves")
        self.check_error("/me", "usage: /me ACTION")

    def test_quit(self):
        self.check("/quit", "quit")
        self.check("/quit gone fishing", "quit", text="gone fishing")

    def test_unknown_command(self):
        self.check_error("/dance now", "unknown command /dance")
        self.check_error("/", "unknown command /")
        self.assertIn("/help", helpers.interpret("/dance").text)
        self.assertLess(len(helpers.interpret("/" + "x" * 1000).text), 100)


class WireFormatTest(unittest.TestCase):
    def test_formats_parse_back(self):
        cases = [
            (helpers.fmt_message("12:34", "alice", "hello <you>"), "message", "alice", "hello <you>"),
            (helpers.fmt_action("12:34", "alice", "waves"), "action", "alice", "waves"),
            (helpers.fmt_private_in("12:34", "bob", "psst"), "private_in", "bob", "psst"),
            (helpers.fmt_private_out("12:34", "bob", "psst"), "private_out", "bob", "psst"),
            (helpers.fmt_notice("12:34", "bob joined"), "notice", "", "bob joined"),
            (helpers.fmt_error("12:34", "name taken: bob"), "error", "", "name taken: bob"),
        ]
        for line, kind, name, text in cases:
            with self.subTest(line=line):
                self.assertTrue(line.endswith("\n"))
                self.assertEqual(helpers.parse_server_line(line.rstrip("\n")),
                                 helpers.ServerLine("12:34", kind, name, text))

    def test_message_that_looks_like_a_notice_stays_a_message(self):
        line = helpers.fmt_message("09:00", "eve", "-- server shutting down").rstrip("\n")
        self.assertEqual(helpers.parse_server_line(line).kind, "message")
        self.assertEqual(helpers.parse_server_line(line).name, "eve")

    def test_unknown_lines_are_raw(self):
        for line in ("garbage", "", "1:00 <a> b", "12:34 ?? what"):
            self.assertEqual(helpers.parse_server_line(line), helpers.ServerLine("", "raw", "", line))

    def test_clock_stamp(self):
        self.assertRegex(helpers.clock_stamp(), r"^\d\d:\d\d$")


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class TokenBucketTest(unittest.TestCase):
    def test_burst_then_refill_at_rate(self):
        clock = FakeClock()
        bucket = helpers.TokenBucket(5, 5, clock=clock)
        self.assertEqual(bucket.take(3), 3)
        self.assertEqual(bucket.take(3), 2)
        self.assertEqual(bucket.take(1), 0)
        clock.now += 0.2            # one token at 5 a second
        self.assertEqual(bucket.take(5), 1)
        clock.now += 0.1            # half a token: not yet
        self.assertEqual(bucket.take(1), 0)
        clock.now += 0.1
        self.assertEqual(bucket.take(1), 1)

    def test_saving_up_is_capped_at_burst(self):
        clock = FakeClock()
        bucket = helpers.TokenBucket(5, 5, clock=clock)
        clock.now += 3600
        self.assertEqual(bucket.take(100), 5)

    def test_zero_rate_means_no_limit(self):
        bucket = helpers.TokenBucket(0, 1, clock=FakeClock())
        self.assertEqual(bucket.take(10 ** 6), 10 ** 6)

    def test_burst_is_at_least_one(self):
        clock = FakeClock()
        bucket = helpers.TokenBucket(1, 0, clock=clock)
        self.assertEqual(bucket.take(5), 1)
        clock.now += 1
        self.assertEqual(bucket.take(5), 1)


class ClientsFileHelpersTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.path = os.path.join(self.tmp.name, "clients.json")

    def test_address_group_counts_ipv6_by_its_64(self):
        self.assertEqual(helpers.address_group("192.0.2.7"), "192.0.2.7")
        self.assertEqual(helpers.address_group("2001:db8::1"), "2001:db8::/64")
        self.assertEqual(helpers.address_group("2001:db8::ffff:9"), "2001:db8::/64")
        self.assertNotEqual(helpers.address_group("2001:db8:0:1::1"), "2001:db8::/64")
        self.assertEqual(helpers.address_group("::ffff:192.0.2.7"), "192.0.2.7")
        self.assertEqual(helpers.address_group("fe80::1%eth0"), "fe80::/64")

    def test_iso_utc(self):
        self.assertEqual(helpers.iso_utc(0), "1970-01-01T00:00:00Z")
        self.assertEqual(helpers.iso_utc(1764096140.9), "2025-11-25T18:42:20Z")
        self.assertEqual(helpers.iso_utc(1700000000.7), "2023-11-14T22:13:20Z")

    def test_format_address(self):
        self.assertEqual(helpers.format_address(("127.0.0.1", 5000)), "127.0.0.1:5000")
        self.assertEqual(helpers.format_address(("::1", 5000, 0, 0)), "[::1]:5000")

    def test_write_then_read(self):
        value = [{"name": "\u00e9lodie", "address": "127.0.0.1:1", "connected_at": "x"}]
        helpers.write_json_atomic(self.path, value)
        self.assertEqual(helpers.read_json(self.path), value)
        with open(self.path, encoding="utf-8") as handle:
            self.assertEqual(json.load(handle), value)

    def test_replaces_garbage_and_leaves_no_temporary_files(self):
        with open(self.path, "w") as handle:
            handle.write("{not json")
        self.assertIsNone(helpers.read_json(self.path))
        self.assertEqual(helpers.read_json(self.path, []), [])
        helpers.write_json_atomic(self.path, [])
        self.assertEqual(helpers.read_json(self.path), [])
        self.assertEqual(os.listdir(self.tmp.name), ["clients.json"])

    def test_read_json_missing_file(self):
        self.assertEqual(helpers.read_json(os.path.join(self.tmp.name, "nope.json"), "d"), "d")

    def test_failed_write_raises_and_cleans_up(self):
        os.mkdir(self.path)     # a directory in the way
        with self.assertRaises(OSError):
            helpers.write_json_atomic(self.path, [1, 2, 3])
        self.assertEqual(os.listdir(self.tmp.name), ["clients.json"])

    def test_unserialisable_value_leaves_old_file(self):
        helpers.write_json_atomic(self.path, [1])
        with self.assertRaises(TypeError):
            helpers.write_json_atomic(self.path, [object()])
        self.assertEqual(helpers.read_json(self.path), [1])
        self.assertEqual(os.listdir(self.tmp.name), ["clients.json"])

    def test_reader_never_sees_a_partial_file(self):
        helpers.write_json_atomic(self.path, [])
        stop = threading.Event()
        bad = []
        reads = [0]

        def reader():
            while not stop.is_set():
                try:
                    with open(self.path, encoding="utf-8") as handle:
                        text = handle.read()
                except PermissionError:
                    if not support.WINDOWS:     # there: opened while being replaced
                        raise
                    continue
                if support.WINDOWS:
                    # A reader that never lets go keeps Windows from
                    # replacing the file at all: read as a program would.
                    time.sleep(0.001)
                try:
                    json.loads(text)
                except ValueError:
                    bad.append(text)
                reads[0] += 1
        thread = threading.Thread(target=reader)
        thread.start()
        try:
            big = [{"name": "n%d" % i, "address": "127.0.0.1:%d" % i,
                    "connected_at": "2024-01-01T00:00:00Z"} for i in range(300)]
            for i in range(100):
                helpers.write_json_atomic(self.path, big[:(i * 37) % 300])
            support.wait_until(lambda: reads[0] > 10, message="reads")
        finally:
            stop.set()
            thread.join()
        self.assertEqual(bad, [])


class SummarizeNoticesTest(unittest.TestCase):
    def test_short_runs_are_shown_one_by_one_in_order(self):
        events = [("join", "a", ""), ("leave", "b", "quit"),
                  ("rename", "c", "d"), ("join", "e", "")]
        self.assertEqual(helpers.summarize_notices(events),
                         ["a joined", "b left (quit)", "c is now known as d", "e joined"])

    def test_long_runs_of_joins_and_leaves_are_folded(self):
        events = [("join", "n%d" % i, "") for i in range(100)]
        events += [("leave", "n%d" % i, "quit") for i in range(5)]
        self.assertEqual(helpers.summarize_notices(events),
                         ["n0, n1, n2 and 97 others joined", "n0, n1, n2 and 2 others left"])

    def test_a_run_at_the_limit_is_not_folded(self):
        events = [("join", "n%d" % i, "") for i in range(3)]
        self.assertEqual(helpers.summarize_notices(events, limit=3),
                         ["n0 joined", "n1 joined", "n2 joined"])


class TakePlainTest(unittest.TestCase):
    """LineFramer.take_plain: the fast path takes only what feed() would
    turn into plain messages, and leaves everything else to feed()."""

    def test_plain_lines_are_taken_as_one_block_and_the_rest_kept(self):
        framer = LineFramer(10)
        self.assertEqual(framer.take_plain(b"abc\nd  ef\na/b\npart"), (b"abc\nd  ef\na/b\n", 3))
        self.assertEqual(framer.feed(b"ial\n"), ([b"partial"], 0))

    def test_anything_not_plain_is_left_to_feed(self):
        for data in (b"a\n\nb\n", b"a\n \n", b" \n", b"\n", b"/nick x\n", b"a\n/me waves\n", b"ok\r\n",
                     b"caf\xc3\xa9\n", b"bell\x07\n", b"x" * 11 + b"\n", b"no newline",
                     b"a\n" + b"y" * 12):
            framer = LineFramer(10)
            self.assertIsNone(framer.take_plain(data), data)
            self.assertEqual(framer._rest, b"", data)   # nothing consumed

    def test_the_one_pass_check_of_a_short_block_agrees_with_the_long_check(self):
        rng = random.Random(98)
        pieces = [b"plain", b"a/b", b"/cmd", b" lead", b"", b"tab\t", b"cr\r", b"\x7f",
                  b"~}", b"caf\xc3\xa9", b"\x1b[2J", b"x y", b"//", b"\x00"]
        checked = {True: 0, False: 0}
        for _ in range(3000):
            block = b"".join(rng.choice(pieces) + b"\n" for _ in range(rng.randrange(1, 6)))
            self.assertLessEqual(len(block), protocol.SHORT_BLOCK)
            plain = protocol._is_plain_long(block, 4096)
            self.assertEqual(protocol._is_plain_block(block, 4096), plain, block)
            checked[plain] += 1
        self.assertGreater(min(checked.values()), 100)   # both answers were met

    def test_nothing_is_taken_while_an_overlong_line_is_discarded(self):
        framer = LineFramer(10)
        self.assertEqual(framer.feed(b"z" * 20), ([], 1))
        self.assertIsNone(framer.take_plain(b"zz\nok\n"))
        self.assertEqual(framer.feed(b"zz\nok\n"), ([b"ok"], 0))


if __name__ == "__main__":
    unittest.main()
