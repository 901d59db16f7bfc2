"""The client's memory of the room (Tab, /reply), its pacer, and the pure
display helpers it uses: no sockets, no terminal."""

import threading
import unittest

from tests.support import TIMEOUT  # noqa: F401  (puts the project on sys.path)

from broadcast_chat import display
from broadcast_chat.completion import RoomMemory
from broadcast_chat.pacer import Pacer
from broadcast_chat.protocol import TokenBucket


class RoomMemoryTest(unittest.TestCase):
    def test_names_follow_joins_leaves_and_renames(self):
        memory = RoomMemory()
        memory.see({"type": "reply", "code": "welcome", "names": ["bob", "Carol"]}, "me")
        memory.see({"type": "event", "kind": "join", "names": ["cathy"]}, "me")
        self.assertEqual(memory.candidates("c", False), ["Carol ", "cathy "])
        memory.see({"type": "event", "kind": "leave", "names": ["carol"]}, "me")
        memory.see({"type": "event", "kind": "rename", "name": "bob", "new": "robert"}, "me")
        self.assertEqual(memory.candidates("", False), ["cathy ", "robert "])

    def test_commands_only_at_the_start_of_the_line(self):
        memory = RoomMemory()
        self.assertEqual(memory.candidates("/m", True), ["/me ", "/msg "])
        self.assertEqual(memory.candidates("/m", False), [])
        self.assertNotIn("/hello ", memory.candidates("/", True))

    def test_complete_follows_readlines_protocol(self):
        memory = RoomMemory()
        memory.add(["bob", "bobby"])
        self.assertEqual([memory.complete("bo", state, False) for state in range(3)],
                         ["bob ", "bobby ", None])

    def test_reply_goes_to_the_last_private_sender(self):
        memory = RoomMemory()
        self.assertIsNone(memory.expand_reply("/r hi"))
        self.assertEqual(memory.expand_reply("hello"), "hello")
        memory.see({"type": "private", "from": "bob", "to": "me", "text": "x"}, "me")
        memory.see({"type": "private", "from": "me", "to": "carol", "text": "y"}, "me")
        self.assertEqual(memory.expand_reply("/reply got it"), "/msg bob got it")
        self.assertEqual(memory.expand_reply("/R ok"), "/msg bob ok")


class PacerTest(unittest.TestCase):
    def test_lines_go_out_in_order_and_a_backlog_is_told_once(self):
        now = [0.0]

        def clock():
            now[0] += 0.01      # a tick each time it is read
            return now[0]
        bucket = TokenBucket(10.0, 3, clock=clock)
        sent, told = [], []
        done = threading.Event()

        def send(text):
            sent.append(text)
            if len(sent) == 20:
                done.set()
        pacer = Pacer(bucket, send, told.append)
        pacer.poll = 0.001
        for number in range(20):
            pacer.put("line %d" % number)
        self.assertTrue(done.wait(TIMEOUT))
        self.assertTrue(pacer.wait_sent(TIMEOUT))
        self.assertEqual(sent, ["line %d" % number for number in range(20)])
        self.assertEqual(len(told), 1, told)


class DisplayTest(unittest.TestCase):
    def test_encodable_escapes_what_the_encoding_cannot_carry(self):
        self.assertEqual(display.encodable("caf\u00e9 \U0001f600", "ascii"),
                         "caf\\xe9 \\U0001f600")
        self.assertEqual(display.encodable("caf\u00e9", "utf-8"), "caf\u00e9")
        self.assertEqual(display.encodable("x", "no-such-encoding"), "x")

    def test_mentions(self):
        event = {"type": "event", "kind": "message", "from": "bob", "text": "hi Tty!"}
        self.assertTrue(display.mentions(event, "tty"))
        self.assertFalse(display.mentions(dict(event, text="tty-2 is here"), "tty"))
        self.assertFalse(display.mentions(dict(event, history=True), "tty"))
        self.assertFalse(display.mentions(dict(event, **{"from": "tty"}), "tty"))
        self.assertTrue(display.mentions({"type": "private", "from": "bob", "text": "x"}, "tty"))

    def test_welcome_names_who_is_here(self):
        self.assertEqual(display.welcome_text({"name": "tty", "others": 0, "names": []}),
                         "welcome, tty! You are alone here. /help lists the commands.")
        self.assertEqual(display.welcome_text({"name": "tty", "others": 1234,
                                               "names": ["a", "b"]}),
                         "welcome, tty! 1,234 others online: a, b and 1,232 more. "
                         "/help lists the commands.")
        self.assertIsNone(display.welcome_text({"name": "tty", "others": 1}))

    def test_rows(self):
        self.assertEqual(display.rows("", 80), 1)
        self.assertEqual(display.rows("x" * 80, 80), 1)
        self.assertEqual(display.rows("x" * 81, 80), 2)
        self.assertEqual(display.rows("\u4e2d" * 41, 80), 2)
        # Combining marks and emoji joiners take no column of their own.
        self.assertEqual(display.rows("e\u0301" * 80, 80), 1)
        self.assertEqual(display.rows("\U0001f469\u200d\U0001f52c" * 20, 80), 1)

    def test_clip_keeps_a_line_to_one_row(self):
        self.assertEqual(display.clip("short", 80), "short")
        self.assertEqual(display.clip("x" * 79, 80), "x" * 79)
        self.assertEqual(display.clip("x" * 80, 80), "x" * 76 + "...")
        coloured = display.DIM + "12:34" + display.RESET + " " + "y" * 100
        self.assertEqual(display.clip(coloured, 40),
                         display.DIM + "12:34" + display.RESET + " " + "y" * 30 + "..."
                         + display.RESET)

    def test_hang_counts_a_combining_mark_with_its_letter(self):
        line = "23:24 <tty> " + "e\u0301" * 30     # 42 columns
        self.assertEqual(display.hang(line, 60), line)
        self.assertEqual(display.hang(line, 40),
                         "23:24 <tty> " + "e\u0301" * 28 + "\n      " + "e\u0301" * 2)


if __name__ == "__main__":
    unittest.main()
