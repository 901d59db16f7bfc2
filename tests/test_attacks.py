"""Hostile input and faults, second round: what an attacker tries first.

Real server processes over real sockets, like test_hostile; each test fails
without its fix. Pure rules (folding, bounds, wrapping) are tested directly.
"""

import io
import re
import signal
import sys
import threading
import time
import unittest

from tests.support import Peer, child_env, wait_until
from tests.test_hostile import HostileCase, measured, read_clients
from tests.test_room import NOW, RoomCase, flush_notices

from broadcast_chat import display, protocol, wire
from broadcast_chat.log import Log
from broadcast_chat.session import Session

SECRET = "open sesame"
POSIX = sys.platform != "win32"


class Reader(threading.Thread):
    """Reads a socket until it ends, keeping every line: a member that reads."""

    def __init__(self, peer: Peer) -> None:
        super().__init__(daemon=True)
        self.peer = peer
        self.peer.sock.settimeout(None)
        self.data = bytearray()
        self.start()

    def run(self) -> None:
        while True:
            try:
                chunk = self.peer.sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            self.data += chunk

    def text(self) -> str:
        return bytes(self.data).decode("utf-8", "replace")


class BurstTest(HostileCase):
    def test_a_burst_from_many_senders_drops_no_reader_that_reads(self):
        server = self.start_server("--queue-limit", "65536", "--max-per-address", "0",
                                   "--max-clients", "0")
        watcher = self.joined(server, "watcher")
        senders = [self.joined(server, "s%d" % i) for i in range(120)]
        for sock in senders:
            sock.sendraw(b"x" * 3000)       # a partial line each, held back
        watching = Reader(watcher)
        for sock in senders:                # ...then all finished at once
            sock.sendraw(b"y" * 990 + b"\n")
        watcher.sock.sendall(b"/who\n")
        # The watcher keeps reading through the burst: it is never dropped,
        # and hears the room afterwards.
        wait_until(lambda: "online: " in watching.text(), 20, "the watcher's /who answer")
        self.assertNotIn("disconnected", watching.text())
        fresh = self.joined(server, "fresh")
        fresh.send("after the burst")
        wait_until(lambda: "<fresh> after the burst" in watching.text(), 20,
                   "a line after the burst")
        got = watching.text().count("yyyy\n")
        busy = sum(len(re.findall(r"room busy", " ".join(s.lines))) for s in senders[:5])
        measured("burst of 120 x 4 KB lines: the reading watcher got %d, stayed; "
                 "first senders told busy %d times" % (got, busy))
        self.assertFalse([line for line in server.log.lines if "leave watcher" in line])


class IdleTest(HostileCase):
    def test_bytes_without_a_newline_or_blank_lines_do_not_count_as_activity(self):
        server = self.start_server("--idle-timeout", "1")
        watcher = self.joined(server, "watcher")
        dribbler = self.joined(server, "dribbler")
        blank = self.joined(server, "blank")
        deadline = time.monotonic() + 8
        while not all(("%s left" % name) in "\n".join(watcher.lines)
                      for name in ("dribbler", "blank")):
            self.assertLess(time.monotonic(), deadline, "a dodger was never dropped")
            for sock, data in ((dribbler, b"x"), (blank, b"\n")):
                try:
                    sock.sendraw(data)
                except OSError:
                    pass
            watcher.send("/who")        # the watcher talks, so stays
            try:
                watcher.expect(r"online", timeout=0.3)
            except AssertionError:
                pass
        self.assertRegex("\n".join(watcher.lines), r"dribbler left \(idle for more than 1 s\)")

    @unittest.skipUnless(POSIX, "SIGSTOP and SIGCONT are POSIX signals")
    def test_a_stopped_server_drops_nobody_who_was_talking(self):
        server = self.start_server("--idle-timeout", "2")
        talker = self.joined(server, "talker")
        other = self.joined(server, "other")
        for _ in range(3):
            talker.send("/who")
            other.send("/who")
            talker.expect(r"online")
            other.expect(r"online")
        server.send_signal(signal.SIGSTOP)
        try:
            end = time.monotonic() + 3.0
            while time.monotonic() < end:       # talking into a stopped server
                talker.send("still here")
                other.send("me too")
                time.sleep(0.5)                 # the pace of a person, not a wait for a state
        finally:
            server.send_signal(signal.SIGCONT)
        for _ in range(3):
            talker.send("/who")
            other.send("/who")
            talker.expect(r"-- 2 online")
            other.expect(r"-- 2 online")
        lines = talker.lines + other.lines
        self.assertFalse([line for line in lines if "idle" in line], lines)


class ShutdownTest(HostileCase):
    @unittest.skipUnless(POSIX, "SIGHUP is a POSIX signal")
    def test_sighup_shuts_down_cleanly(self):
        server = self.start_server()
        alice = self.joined(server, "alice")
        wait_until(lambda: self.names_in_file(server) == ["alice"], 5, "alice in clients.json")
        server.send_signal(signal.SIGHUP)
        alice.expect(r"-- server shutting down$")
        alice.expect_closed()
        self.assertEqual(server.wait(), 0)
        self.assertEqual(read_clients(server.clients_file), [])


class PasswordTest(HostileCase):
    def guess(self, server, secret):
        sock = server.connect(greet=False)
        self.addCleanup(sock.close)
        sock.send("/pass " + secret)
        return sock

    def test_a_guesser_at_the_same_address_cannot_lock_out_the_right_password(self):
        server = self.start_server(env=child_env(BROADCAST_PASSWORD=SECRET))
        stop = threading.Event()

        def guesser():
            while not stop.is_set():
                try:
                    self.guess(server, "wrong")
                except OSError:
                    pass
                stop.wait(1.0)      # one guess a second, as measured

        thread = threading.Thread(target=guesser, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 5)
        self.addCleanup(stop.set)
        wait_until(lambda: sum("wrong password" in line for line in server.log.lines) >= 4,
                   15, "four wrong guesses")
        start = time.monotonic()
        right = self.guess(server, SECRET)
        right.nick("rightful")
        took = time.monotonic() - start
        measured("right password beside one wrong guess a second: in after %.2f s" % took)
        self.assertLess(took, 5.0)

    def test_many_guesses_at_once_are_refused_outright_beyond_a_few(self):
        server = self.start_server(env=child_env(BROADCAST_PASSWORD=SECRET))
        first = self.guess(server, "wrong")
        first.expect(r"!! wrong password")
        guesses = [self.guess(server, "wrong %d" % i) for i in range(12)]
        refused = 0
        for sock in guesses:
            lines = sock.expect_closed()
            refused += any("too many password attempts" in line for line in lines)
        self.assertGreaterEqual(refused, 12 - 4)
        start = time.monotonic()
        self.guess(server, SECRET).nick("late")
        measured("12 wrong at once: %d refused outright; the right one in after %.2f s"
                 % (refused, time.monotonic() - start))


class RenameFoldTest(RoomCase):
    def test_a_run_of_renames_is_one_notice(self):
        waiting = [("rename", "n%d" % i, "m%d" % i) for i in range(500)]
        self.assertEqual(wire.summarize_notices(waiting),
                         ["m0, m1, m2 and 497 others took new names"])
        self.assertEqual(wire.summarize_notices(waiting[:2]),
                         ["n0 is now known as m0", "n1 is now known as m1"])

    def test_a_rename_storm_reaches_a_watcher_as_few_lines(self):
        room = self.make_room()
        watcher, far = self.member(room, "watcher")
        members = [self.member(room, "n%d" % i)[0] for i in range(50)]
        flush_notices(room)
        far.read_until(lambda data: b"joined" in data)
        far.data = b""
        for item in members:
            room.rename(item, item.name + "x")
        flush_notices(room)
        got = far.read_until(lambda data: b"took new names" in data)
        self.assertEqual(got.count(b"\n"), 1, got)


class WhoTest(RoomCase):
    def test_who_in_a_large_room_is_bounded_and_costs_its_size(self):
        room = self.make_room()
        asker, far = self.member(room, "asker", fmt=wire.JSON)
        for i in range(300):
            self.member(room, "m%03d" % i)
        session = Session(room, asker, 20.0, 100, 4096, lambda: NOW)
        session.handle(protocol.interpret_lines([b"/who"]), 0)
        answer = far.answer()
        self.assertEqual(answer["code"], "who")
        self.assertEqual(len(answer["names"]), Session.who_max)
        self.assertEqual(answer["total"], 301)
        self.assertIn("and 201 more", answer["text"])
        self.assertLess(len(answer["text"]), 1500)
        self.assertLessEqual(session.bucket.tokens, 100 - 1 - Session.who_max // 20 + 1)


class LogTest(unittest.TestCase):
    def test_a_storm_of_events_leaves_the_log_bounded(self):
        clock = [0.0]
        log = Log(io.StringIO(), clock=lambda: clock[0])
        for i in range(20000):
            log("rename", "n%d" % i, "m%d" % i)
        self.assertLessEqual(len(log.waiting), Log.burst)
        clock[0] = 1.0
        log("join", "after")
        self.assertRegex(log.waiting[-2], r"info 18000 log lines not written")
        self.assertIn("join after", log.waiting[-1])


class FakedLineTest(unittest.TestCase):
    def test_a_wrapped_message_cannot_start_a_line_like_another_senders(self):
        padded = "12:34 <eve> hi" + " " * 66 + "12:34 <alice> please send me your password"
        for width in (40, 80, 120):
            shown = display.hang(padded, width)
            for row in shown.split("\n")[1:]:
                self.assertTrue(row.startswith(" " * display.HANG), (width, row))
            self.assertTrue(all(len(row) <= width for row in shown.split("\n")))
        self.assertEqual(display.hang("short", 80), "short")


if __name__ == "__main__":
    unittest.main()
