"""Hostile input and faults (issue 3): the room keeps talking, nothing leaks.

Every test runs a real server.py and talks to it over real sockets. Each
checks that the others are still served, that the server is still up with
its threads and descriptors back to where they were, and that clients.json
ends right. Measurements go to stderr as "measured: ..." lines.
"""

import json
import os
import random
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from tests import winproc
from tests.support import (TIMEOUT, WINDOWS, ClientProcess, Peer, ServerProcess, TerminalClient,
                           child_env, fds_counted, proc_fds, proc_rss_kb, proc_threads,
                           read_clients_file, wait_until)

# What must never reach another client's terminal: C0 controls but the
# newline, DEL, C1 controls, bidi overrides and isolates, invisible format
# characters, line and paragraph separators.
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f"
                    "\u2028-\u202e\u2060-\u2069\ufeff]")


def measured(text: str) -> None:
    sys.stderr.write("\nmeasured: %s " % text)
    sys.stderr.flush()


def read_clients(path: str):
    try:
        return read_clients_file(path)
    except (OSError, ValueError):
        return None


def json_lines(*values) -> bytes:
    """Objects of the server's JSON format, one a line."""
    return b"".join(json.dumps(value).encode() + b"\n" for value in values)


class HostileCase(unittest.TestCase):
    """Starts servers and sockets, and checks the room's health afterwards."""

    def start_server(self, *args: str, **kwargs) -> ServerProcess:
        server = ServerProcess(*args, **kwargs)
        server.start()
        self.addCleanup(server.__exit__)
        server.base_threads = proc_threads(server.proc.pid)
        server.base_fds = None if WINDOWS else proc_fds(server.proc.pid)
        return server

    def connect(self, server: ServerProcess) -> Peer:
        sock = server.connect(greet=False)
        self.addCleanup(sock.close)
        self.__dict__.setdefault("opened", []).append(sock)
        return sock

    def joined(self, server: ServerProcess, name: str) -> Peer:
        return self.connect(server).nick(name)

    def names_in_file(self, server: ServerProcess):
        records = read_clients(server.clients_file)
        return None if records is None else sorted(str(r["name"]) for r in records)

    def assert_healthy(self, server: ServerProcess, tag: str = "fresh") -> None:
        """A fresh pair still chats; threads, descriptors and the file are right.

        Every socket the test opened with connect() is closed first.
        """
        self.assertIsNone(server.proc.poll(), "the server died")
        for sock in self.__dict__.get("opened", []):
            sock.close()
        pid = server.proc.pid
        first = self.joined(server, tag + "a")
        second = self.joined(server, tag + "b")
        first.send("hello, still here?")
        second.expect(r"^\d\d:\d\d <%sa> hello, still here\?$" % tag)
        second.send("and back")
        first.expect(r"^\d\d:\d\d <%sb> and back$" % tag)
        # The pair holds one handler thread and one socket each.
        wait_until(lambda: proc_threads(pid) == server.base_threads + 2, 10,
                   "threads back to the baseline %d + 2" % server.base_threads)
        if fds_counted(self):
            wait_until(lambda: proc_fds(pid) == server.base_fds + 2, 10,
                       "descriptors back to the baseline %d + 2" % server.base_fds)
        wait_until(lambda: self.names_in_file(server) == [tag + "a", tag + "b"], 5,
                   "clients.json to list the pair only")
        bugs = [line for line in server.log.lines
                if re.search(r" error \S+ \w+(Error|Exception)\b|server error", line)]
        self.assertEqual(bugs, [], "handler exceptions in the log")
        first.close()
        second.close()


class InputTest(HostileCase):

    def test_invalid_utf8_is_replaced_and_the_connection_kept(self):
        server = self.start_server()
        alice = self.joined(server, "alice")
        bob = self.joined(server, "bob")
        alice.sendraw(b"caf\xc3 \xff\xfe ok \xed\xa0\x80 \xf0\x9f\x98\n")
        bob.expect(r"<alice> caf")
        self.assertEqual(bob.raw_lines[-1].split(b"> ", 1)[1],
                         "caf\ufffd \ufffd\ufffd ok \ufffd\ufffd\ufffd \ufffd".encode())
        alice.send("still here")
        bob.expect(r"<alice> still here$")
        self.assert_healthy(server)

    def test_terminal_controls_never_reach_another_client_raw(self):
        server = self.start_server()
        alice = self.joined(server, "alice")
        bob = self.joined(server, "bob")
        hostile = {
            "colour": ("\x1b[31mred\x1b[0m", "^[[31mred^[[0m"),
            "cursor": ("\x1b[2A\x1b[10;10H", "^[[2A^[[10;10H"),
            "clear": ("\x1b[2J\x1bc", "^[[2J^[c"),
            "title": ("\x1b]0;pwned\x07", "^[]0;pwned^G"),
            "link": ("\x1b]8;;http://evil/\x1b\\click\x1b]8;;\x1b\\",
                     "^[]8;;http://evil/^[\\click^[]8;;^[\\"),
            "bel": ("ding\x07", "ding^G"),
            "backspace": ("abc\x08\x08\x08xyz", "abc^H^H^Hxyz"),
            "cr": ("fake\rreal", "fake^Mreal"),
            "nul": ("a\x00b", "a^@b"),
            "del": ("a\x7fb", "a^?b"),
            "c1csi": ("a\x9b31mb", "a<U+009B>31mb"),
            "bidi": ("abc\u202edcba \u2066x\u2069", "abc<U+202E>dcba <U+2066>x<U+2069>"),
            "invisible": ("a\u200bb\u2060c\ufeffd\u00ade", "a<U+200B>b<U+2060>c<U+FEFF>d<U+00AD>e"),
            "separator": ("a\u2028b\u2029c", "a<U+2028>b<U+2029>c"),
        }
        for label, (sent, shown) in sorted(hostile.items()):
            alice.sendraw(("%s: %s\n" % (label, sent)).encode())
            line = bob.expect(r"<alice> %s: " % label).string
            raw = bob.raw_lines[bob.lines.index(line)]
            self.assertEqual(raw.split(b"> ", 1)[1], ("%s: %s" % (label, shown)).encode(), label)
            self.assertIsNone(UNSAFE.search(line), label)
        # /me and /msg go through the same renderer.
        alice.sendraw(b"/me \x1b]0;title\x07waves\n")
        line = bob.expect(r"\* alice ").string
        self.assertTrue(line.endswith("* alice ^[]0;title^Gwaves"), line)
        alice.sendraw("/msg bob \x1b[2J\u202eboo\n".encode())
        line = bob.expect(r"\*alice\* ").string
        self.assertTrue(line.endswith("*alice* ^[[2J<U+202E>boo"), line)
        # A name with controls in it is refused, and nobody hears of it.
        alice.sendraw(b"/nick ev\x1b[5mil\n")
        alice.expect(r"!! invalid name: .* not \^\[$")
        alice.sendraw("/nick ev\u202eil\n".encode())
        alice.expect(r"!! invalid name: .* not the invisible <U\+202E>$")
        alice.send("end of names")
        bob.expect(r"<alice> end of names$")
        carol = self.joined(server, "carol")
        carol.sendraw(b"/quit \x1b[2J\x07bye\n")
        bob.expect(r"-- carol left \(quit: \^\[\[2J\^Gbye\)$")
        for line in alice.lines + bob.lines:
            self.assertIsNone(UNSAFE.search(line), line)
        for raw in alice.raw_lines + bob.raw_lines:
            self.assertNotIn(b"\x1b", raw)
        self.assertFalse([line for line in bob.lines if "known as" in line])
        self.assert_healthy(server)

    def test_client_sanitises_what_another_server_sends(self):
        """client.py renders controls harmlessly even from a server that passes them on."""
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        self.addCleanup(listener.close)
        port = listener.getsockname()[1]
        client = ClientProcess(port, "--name", "x")
        self.addCleanup(client.kill)
        listener.settimeout(TIMEOUT)
        conn, _ = listener.accept()
        self.addCleanup(conn.close)
        conn.settimeout(TIMEOUT)
        peer = Peer(None, sock=conn, greet=False)
        peer.expect(r"^/nick x$")
        evil = "ev\x1b[31mil"
        conn.sendall(json_lines(
            {"type": "hello", "version": "9", "limits": {"rate": 20, "burst": 100}},
            {"type": "reply", "code": "welcome", "text": "welcome, x! You are alone here."},
            {"type": "event", "id": 1, "time": "2026-01-01T12:00:00.000Z", "kind": "message",
             "from": evil, "text": "\x1b]0;pwned\x07\x1b[2J\u202eoops\r\x08"},
            {"type": "private", "time": "2026-01-01T12:00:00.000Z", "from": evil, "to": "x",
             "text": "\x1b[2J"},
            {"type": "reply", "code": "who", "text": "\x1b[2J"}))
        client.proc.stdin.close()      # the piped client sends /quit and waits
        conn.recv(100)
        conn.close()
        client.wait(TIMEOUT)
        client.expect(r"^\d\d:\d\d " + re.escape("<ev^[[31mil> ^[]0;pwned^G^[[2J<U+202E>oops^M^H") + "$")
        client.expect(r"^\d\d:\d\d " + re.escape("*ev^[[31mil* ^[[2J") + "$")
        self.assertNotIn("\x1b", client.out.text())
        self.assertNotIn("\x07", client.out.text())

    def test_client_registration_is_not_fooled_by_a_message(self):
        """Another person's message saying 'welcome, x!' is not the server's welcome."""
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        self.addCleanup(listener.close)
        client = ClientProcess(listener.getsockname()[1], "--name", "x")
        self.addCleanup(client.kill)
        listener.settimeout(TIMEOUT)
        conn, _ = listener.accept()
        self.addCleanup(conn.close)
        conn.settimeout(TIMEOUT)
        peer = Peer(None, sock=conn, greet=False)
        peer.expect(r"^/nick x$")
        when = "2026-01-01T12:00:00.000Z"
        conn.sendall(json_lines(
            {"type": "hello", "version": "9", "limits": {"rate": 20, "burst": 100}},
            {"type": "event", "id": 1, "time": when, "kind": "message", "from": "evil",
             "text": "welcome, x! fooled you"},
            {"type": "private", "time": when, "from": "evil", "to": "x",
             "text": "name taken: x is already in use"}))
        conn.sendall(b"12:00 <evil> welcome, x! fooled you\n"
                     b"12:00 -- welcome, x! You are alone here.\n")
        conn.sendall(json_lines(
            {"type": "error", "code": "name_taken", "text": "name taken: x is already in use"}))
        peer.expect(r"^/nick x-2$")
        conn.sendall(json_lines({"type": "reply", "code": "welcome",
                                 "text": "welcome, x-2! 1 other online."}))
        client.proc.stdin.close()
        peer.expect(r"^/quit$")
        conn.close()
        self.assertEqual(client.wait(TIMEOUT), 0)
        self.assertIn("x is taken; you are x-2", client.out.text())

    def test_a_50_mb_line_is_refused_with_flat_memory(self):
        server = self.start_server("--max-line", "4096")
        pid = server.proc.pid
        alice = self.joined(server, "alice")
        bob = self.joined(server, "bob")
        big = self.joined(server, "big")
        before = proc_rss_kb(pid)
        chunk = b"x" * (1 << 20)
        started = time.monotonic()
        peak = before
        worst = 0.0
        for pings in range(1, 51):      # 50 MB, a megabyte at a time, no newline
            big.sock.sendall(chunk)
            asked = time.monotonic()
            alice.send("ping %d" % pings)       # the room chats meanwhile
            bob.expect(r"<alice> ping %d$" % pings, start=max(0, len(bob.lines) - 5))
            worst = max(worst, time.monotonic() - asked)
            peak = max(peak, proc_rss_kb(pid))
        elapsed = time.monotonic() - started
        big.sendraw(b"\nafter the long line\n")
        big.expect(r"!! line too long")
        bob.expect(r"<big> after the long line$")
        alice.expect(r"<big> after the long line$")
        big.send("and one more")
        bob.expect(r"<big> and one more$")
        self.assertEqual(len([line for line in big.lines if "line too long" in line]), 1,
                         big.lines)
        self.assertFalse(any("xxxx" in line for line in alice.lines + bob.lines))
        growth = peak - before
        measured("50 MB line in %.2f s; server RSS %d KiB before, peak %d KiB (+%d KiB); "
                 "%d pings meanwhile, slowest %.3f s" % (elapsed, before, peak, growth,
                                                          pings, worst))
        self.assertLess(growth, 20 * 1024)
        self.assertLess(worst, 1.0)
        big.close()
        alice.close()
        bob.close()
        self.assert_healthy(server)


class NameAndCommandTest(HostileCase):

    def test_names_that_must_be_refused(self):
        server = self.start_server()
        alice = self.joined(server, "alice")
        bob = self.joined(server, "bob")
        refused = {
            "server": "reserved", "SYSTEM": "reserved", "Admin": "reserved",
            "\uff41\uff44\uff4d\uff49\uff4e": "reserved",           # fullwidth admin
            "ALICE": "name taken", "Alice": "name taken",
            "\uff41\uff4c\uff49\uff43\uff45": "name taken",         # fullwidth alice
            "\u24b6lice": None,                                     # circled A: NFKC 'A'
            "x" * 25: "at most 24",
            "ev\x07il": "letters, digits",
            "bo\u200bb": "letters, digits",
            "-dash": "starts with",
            "\u3000": "usage",                                      # ideographic space
        }
        for wanted, why in sorted(refused.items()):
            start = len(bob.lines)
            bob.sendraw(("/nick %s\n" % wanted).encode())
            line = bob.expect(r"!! (invalid name|name taken|usage)", start=start).string
            if why:
                self.assertIn(why, line, repr(wanted))
            self.assertIsNone(UNSAFE.search(line), line)
        for usage in ("/nick", "/nick   ", "/nick two words"):
            start = len(bob.lines)
            bob.send(usage)
            bob.expect(r"!! usage: /nick NAME( \(a name has no spaces: try two-words\))?$", start=start)
        bob.send("/who")
        bob.expect(r"-- 2 online: alice, bob$")
        bob.send("/msg \uff21\uff2c\uff29\uff23\uff25 found you")    # fullwidth ALICE
        alice.expect(r"\*bob\* found you$")
        alice.send("checked")
        bob.expect(r"<alice> checked$")
        self.assertFalse([line for line in alice.lines if "known as" in line], alice.lines)
        self.assert_healthy(server)

    def test_commands_with_wrong_arguments(self):
        server = self.start_server()
        alice = self.joined(server, "alice")
        bob = self.joined(server, "bob")
        cases = [
            ("/msg", r"usage: /msg NAME TEXT"),
            ("/msg bob", r"usage: /msg NAME TEXT"),
            ("/msg bob    ", r"usage: /msg NAME TEXT"),
            ("/msg alice hi me", r"that is you"),
            ("/msg ALICE hi me", r"that is you"),
            ("/msg nobody hi", r"no such name: nobody"),
            ("/msg \x1b[31m hi", r"no such name: \^\[\[31m"),
            ("/me", r"usage: /me ACTION"),
            ("/who everyone", r"usage: /who$"),
            ("/help me", r"usage: /help$"),
            ("/", r"unknown command /;"),
            ("/" + "z" * 5000, r"line too long"),
            ("/frobnicate now", r"unknown command /frobnicate"),
        ]
        for text, reply in cases:
            start = len(alice.lines)
            alice.send(text)
            alice.expect(r"!! .*" + reply, start=start)
        alice.send("done")
        bob.expect(r"<alice> done$")
        self.assertEqual([line for line in bob.lines if "alice" in line and "joined" not in line],
                         [line for line in bob.lines if line.endswith("<alice> done")])
        self.assert_healthy(server)

    def test_nick_storm_is_rate_limited_and_a_flooder_dropped(self):
        server = self.start_server("--rate-limit", "20", "--burst", "100")
        watcher = self.joined(server, "watcher")
        storm = self.joined(server, "storm")
        storm.sendraw("".join("/nick n%d\n" % i for i in range(1000)).encode())
        storm.expect(r"!! flood: \d+ lines? not sent")
        storm.expect(r"-- storm is now known as n\d+")
        # Keep flooding after the warnings: disconnected, with the reason.
        deadline = time.monotonic() + TIMEOUT
        i = 0
        closed = False
        while not closed and time.monotonic() < deadline:
            try:
                storm.sendraw("".join("/nick m%d\n" % (i + j) for j in range(50)).encode())
            except OSError:
                break
            i += 50
            readable, _, _ = select.select([storm.sock], [], [], 0.02)
            if readable:
                try:
                    closed = not storm.receive(1.0)
                except OSError:
                    break
                closed = closed or any("disconnected: flooding" in l for l in storm.lines)
        if not any("disconnected: flooding" in line for line in storm.lines):
            storm.expect(r"!! disconnected: flooding$", timeout=5)
        flood_errors = [line for line in storm.lines if "!! flood:" in line]
        self.assertGreaterEqual(len(flood_errors), 2)
        watcher.expect(r"-- \S+ left \(flooding\)$")
        renames = [line for line in watcher.lines if "is now known as" in line]
        # The burst, plus what the rate allowed while the storm went on.
        self.assertLessEqual(len(renames), 100 + 20 * 2, len(renames))
        self.assertGreater(len(renames), 0)
        server.log.expect(r" leave \S+ \S+ flooding$")
        measured("nick storm: %d of 1000 renames went through, %d flood warnings, "
                 "then disconnected" % (len(renames), len(flood_errors)))
        watcher.close()
        self.assert_healthy(server)


class ConnectionTest(HostileCase):

    def test_a_stuck_reader_is_dropped_and_nobody_waits(self):
        server = self.start_server("--queue-limit", "262144", "--rate-limit", "0")
        talker = self.joined(server, "talker")
        listener = self.joined(server, "listener")
        stuck = socket.socket()
        self.addCleanup(stuck.close)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", server.port))
        stuck.sendall(b"/nick stuck\n")
        listener.expect(r"-- stuck joined$")
        line = "y" * 4000 + "\n"
        started = time.monotonic()
        batches = 0
        worst = 0.0
        dropped_at = None
        while dropped_at is None:
            self.assertLess(time.monotonic() - started, TIMEOUT, "stuck reader never dropped")
            batches += 1
            talker.sendraw((line * 10 + "mark %d\n" % batches).encode())
            asked = time.monotonic()
            listener.expect(r"<talker> mark %d$" % batches, start=max(0, len(listener.lines) - 20))
            worst = max(worst, time.monotonic() - asked)
            if any("stuck left (too slow" in l for l in listener.lines[-20:]):
                dropped_at = time.monotonic()
        server.log.expect(r" leave stuck 127\.0\.0\.1:\d+ too slow: send queue over 262144 bytes$")
        measured("stuck reader dropped %.3f s after the talk began (%d KiB sent to it); "
                 "slowest line to a listener %.3f s" % (dropped_at - started,
                                                        batches * 40, worst))
        self.assertLess(worst, 1.0)
        talker.send("after the drop")
        listener.expect(r"<talker> after the drop$")
        talker.close()
        listener.close()
        stuck.close()
        self.assert_healthy(server)

    def test_connection_storms(self):
        server = self.start_server("--rate-limit", "0")
        pid = server.proc.pid
        alice = self.joined(server, "alice")
        bob = self.joined(server, "bob")
        took = {}

        def storm() -> None:
            # 2,000 connect/close cycles, as fast as one client makes them,
            started = time.monotonic()
            for _ in range(2000):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
                sock.close()
            took["cycles"] = time.monotonic() - started
            # then 300 resets right after connect.
            for _ in range(300):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()

        stormer = threading.Thread(target=storm, daemon=True)
        began = time.monotonic()
        stormer.start()
        pings = 0
        worst = 0.0
        peak_threads = peak_fds = 0
        deadline = began + 30
        # The pair keeps talking throughout: while the storm is made, and
        # until the server has worked through every connection it queued.
        while stormer.is_alive() or proc_threads(pid) != server.base_threads + 2:
            self.assertLess(time.monotonic(), deadline, "the storm was never worked through")
            pings += 1
            asked = time.monotonic()
            alice.send("ping %d" % pings)
            bob.expect(r"<alice> ping %d$" % pings, start=max(0, len(bob.lines) - 5))
            worst = max(worst, time.monotonic() - asked)
            peak_threads = max(peak_threads, proc_threads(pid))
            if not WINDOWS:
                peak_fds = max(peak_fds, proc_fds(pid))
        served = time.monotonic() - began
        stormer.join()
        self.assertIn("cycles", took)
        # Connections that send nothing, held open while the pair talks.
        silent = [socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
                  for _ in range(60)]
        for sock in silent:
            self.addCleanup(sock.close)
        wait_until(lambda: proc_threads(pid) == server.base_threads + 62, 5,
                   "the silent connections to be served")
        asked = time.monotonic()
        alice.send("among the silent")
        bob.expect(r"<alice> among the silent$")
        latency = time.monotonic() - asked
        for sock in silent:
            sock.close()
        measured("2000 connect/close cycles made in %.2f s, then 300 resets; the server "
                 "worked through all 2300 in %.2f s (%d a second); %d lines between the pair "
                 "meanwhile, slowest %.3f s; peak %d threads, %s fds (baseline %d, %s); a line "
                 "among 60 silent connections took %.3f s"
                 % (took["cycles"], served, 2300 / served, pings, worst, peak_threads,
                    peak_fds, server.base_threads, server.base_fds, latency))
        if winproc.under_wine():
            with self.subTest("the pair's latency during the storm"):
                self.skipTest("not a figure of the server under Wine, whose wineserver serves "
                              "every socket call of every process in one thread (%.1f s)" % worst)
        else:
            self.assertLess(worst, 1.0)
        self.assert_healthy(server)

    def assert_keepalive(self, server: ServerProcess, client: Peer) -> None:
        """The kernel probes the server's end of client's connection (half-open peers)."""
        if not shutil.which("ss"):
            return      # iproute2 missing: nothing to look with
        out = subprocess.check_output(
            ["ss", "-tnoH", "state", "established", "( sport = :%d and dport = :%d )"
             % (server.port, client.sock.getsockname()[1])]).decode()
        self.assertIn("keepalive", out)

    def test_keepalive_and_idle_timeout_drop_a_silent_client_with_a_reason(self):
        server = self.start_server("--idle-timeout", "1")
        watcher = self.joined(server, "watcher")
        silent = self.joined(server, "silent")
        joined_at = time.monotonic()
        self.assert_keepalive(server, silent)
        deadline = joined_at + 5
        while not any("silent left" in line for line in watcher.lines):
            self.assertLess(time.monotonic(), deadline, "the silent client was never dropped")
            watcher.send("/who")    # the watcher keeps talking, so stays
            try:
                watcher.expect(r"silent left", timeout=0.3, start=len(watcher.lines))
            except AssertionError:
                pass
        took = time.monotonic() - joined_at
        line = [l for l in watcher.lines if "silent left" in l][0]
        self.assertRegex(line, r"-- silent left \(idle for more than 1 s\)$")
        silent.expect(r"!! disconnected: idle for more than 1 s$")
        silent.expect_closed()
        self.assertNotIn("watcher left", " ".join(silent.lines + watcher.lines))
        measured("silent client dropped %.2f s after joining (--idle-timeout 1)" % took)
        self.assertGreaterEqual(took, 1.0)
        watcher.send("still here")
        watcher.send("/who")
        watcher.expect(r"-- 1 online: watcher$")
        watcher.close()
        # The health check's pair is not idle long enough to be dropped.
        self.assert_healthy(server)

    def test_silent_connections_before_the_password_count_per_address(self):
        server = self.start_server("--max-per-address", "5",
                                   env=child_env(BROADCAST_PASSWORD="s3cret"))
        pid = server.proc.pid
        silent = []
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
            self.addCleanup(sock.close)
            silent.append(sock)
        # Five wait for their password; the other fifteen are turned away at once.
        turned_away = 0
        for sock in silent[5:]:
            data = b""
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            self.assertRegex(data.decode(), r"^\d\d:\d\d !! too many connections from your address\n$")
            turned_away += 1
        wait_until(lambda: proc_threads(pid) == server.base_threads + 5, 5,
                   "one thread per waiting connection only")
        # Another host still gets in, and chats.
        other = Peer(None, greet=False, sock=socket.create_connection(
            ("127.0.0.1", server.port), timeout=TIMEOUT, source_address=("127.0.0.2", 0)))
        self.addCleanup(other.close)
        other.send("/pass s3cret")
        other.nick("other")
        for sock in silent:
            sock.close()
        wait_until(lambda: proc_threads(pid) == server.base_threads + 1, 5,
                   "the silent connections' threads to end")
        if fds_counted(self):
            wait_until(lambda: proc_fds(pid) == server.base_fds + 1, 5, "their descriptors closed")
        wait_until(lambda: self.names_in_file(server) == ["other"], 5, "clients.json")
        measured("password server, --max-per-address 5: 20 silent connections hold %d "
                 "threads, %d turned away" % (5, turned_away))

    def test_max_clients_and_max_per_address(self):
        server = self.start_server("--max-clients", "2")
        alice = self.joined(server, "alice")
        bob = self.joined(server, "bob")
        newcomer = self.connect(server)
        newcomer.expect_closed()
        self.assertEqual(len(newcomer.lines), 1, newcomer.lines)
        self.assertRegex(newcomer.lines[0], r"^\d\d:\d\d !! server full$")
        alice.send("still two")
        bob.expect(r"<alice> still two$")
        server.log.expect(r" refuse 127\.0\.0\.1:\d+ server full$")
        bob.close()
        alice.expect(r"-- bob left")
        self.joined(server, "carol")

        per_host = self.start_server("--max-per-address", "2", "--max-clients", "0")
        first = self.joined(per_host, "first")
        second = self.joined(per_host, "second")
        third = self.connect(per_host)
        third.expect_closed()
        self.assertEqual(len(third.lines), 1, third.lines)
        self.assertRegex(third.lines[0], r"!! too many connections from your address$")
        # Another host may still come in.
        other = Peer(None, greet=False, sock=socket.create_connection(
            ("127.0.0.1", per_host.port), timeout=TIMEOUT, source_address=("127.0.0.2", 0)))
        self.addCleanup(other.close)
        other.nick("other")
        first.send("hi")
        other.expect(r"<first> hi$")
        second.close()
        first.expect(r"-- second left")
        self.joined(per_host, "fourth")
        wait_until(lambda: self.names_in_file(per_host) == ["first", "fourth", "other"], 5,
                   "clients.json right")


class ProcessTest(HostileCase):

    def client_process(self, port: int, name: str) -> ClientProcess:
        client = ClientProcess(port, "--name", name, "--no-color")
        self.addCleanup(client.kill)
        return client

    def test_kill_9_of_a_client_then_of_the_server(self):
        server = self.start_server()
        alice = self.joined(server, "alice")
        # A client killed: the others see it leave within a second.
        victim = self.client_process(server.port, "victim")
        alice.expect(r"-- victim joined$")
        killed = time.monotonic()
        victim.proc.kill()
        alice.expect(r"-- victim left \(connection lost\)$", timeout=1.0)
        measured("kill -9 of a client seen by the others after %.3f s"
                 % (time.monotonic() - killed))
        # The server killed: the new one starts with a clean clients.json.
        piped = self.client_process(server.port, "piped")
        alice.expect(r"-- piped joined$")
        port = server.port
        server.proc.kill()
        server.proc.wait()
        # Its clients see the connection end, and the piped client says so
        # and exits, even with its input still open (not waited for under
        # Wine, for alice neither: winproc.KILLED_SOCKET_LINGERS).
        if not (WINDOWS and winproc.under_wine()):
            alice.expect_closed()
            self.assertEqual(piped.wait(5), 1)
            self.assertIn("connection to the server lost", piped.out.text())
        with open(server.clients_file, "wb") as handle:      # left corrupt
            handle.write(b"\x00\xffnot json{[")
        again = ServerProcess(clients_file=server.clients_file, port=port)
        again.start()
        self.addCleanup(again.__exit__)
        self.assertEqual(read_clients(again.clients_file), [])
        again.base_threads = server.base_threads
        again.base_fds = None if WINDOWS else proc_fds(again.proc.pid)
        self.assert_healthy(again)

    @unittest.skipIf(WINDOWS, "needs a POSIX pty (Windows' interactive client is tested with fakes)")
    def test_interactive_client_reconnects_after_a_server_kill(self):
        server = self.start_server()
        port = server.port
        tty = TerminalClient(port, "--name", "x", "--no-color", env={"TERM": "dumb"})
        self.addCleanup(tty.close)
        watcher = self.joined(server, "watcher")
        tty.expect("welcome, x", 5)
        server.proc.kill()
        server.proc.wait()
        tty.expect("reconnecting", 5)
        again = ServerProcess(clients_file=server.clients_file, port=port)
        again.start()
        self.addCleanup(again.__exit__)
        tty.expect("reconnected as x", 10)
        wait_until(lambda: self.names_in_file(again) == ["x"], 5, "clients.json to list x")
        watcher.close()
        other = self.joined(again, "other")
        tty.type("back again\r")
        other.expect(r"<x> back again$")

    def test_clients_file_write_failures_are_logged_once_and_healed(self):
        state = tempfile.mkdtemp(prefix="chat-state-")
        self.addCleanup(shutil.rmtree, state, True)
        self.addCleanup(shutil.rmtree, state + ".away", True)
        path = os.path.join(state, "clients.json")
        server = self.start_server(clients_file=path)
        alice = self.joined(server, "alice")
        wait_until(lambda: self.names_in_file(server) == ["alice"], 5, "the file")
        # A directory where the file was.
        os.remove(path)
        os.mkdir(path)
        self.joined(server, "p0").close()
        server.log.expect(r" error cannot write .*clients\.json")
        bob = self.joined(server, "bob")
        alice.send("chat carries on")
        bob.expect(r"<alice> chat carries on$")
        # Each attempt makes and removes a temporary file in the folder, so
        # the folder's mtime counts the retries: wait for two more.
        stamps = {os.stat(state).st_mtime_ns}
        wait_until(lambda: stamps.add(os.stat(state).st_mtime_ns) or len(stamps) >= 3,
                   5, "the server to retry the write")
        failures = [line for line in server.log.lines if "cannot write" in line]
        self.assertEqual(len(failures), 1, failures)
        os.rmdir(path)
        server.log.expect(r"clients\.json is written again")
        wait_until(lambda: self.names_in_file(server) == ["alice", "bob"], 5,
                   "clients.json right again")
        # Its folder taken away: logged once more (a new failure), healed again.
        os.rename(state, state + ".away")
        carol = self.joined(server, "carol")
        wait_until(lambda: len([line for line in server.log.lines if "cannot write" in line]) == 2,
                   5, "the second failure to be logged")
        carol.send("hi all")
        alice.expect(r"<carol> hi all$")
        os.mkdir(state)
        wait_until(lambda: self.names_in_file(server) == ["alice", "bob", "carol"], 5, "healed")
        self.assertEqual(len([line for line in server.log.lines if "cannot write" in line]), 2)
        self.assert_healthy(server)


class FuzzTest(HostileCase):

    SEED = 20261125
    CLIENTS = 20
    SECONDS = 1.5

    def fuzz_one(self, port: int, rng: random.Random, until: float, stats: dict) -> None:
        words = ["/nick", "/msg", "/me", "/who", "/help", "/quit", "//", "/", "/pass",
                 "/NICK", "/msg fz1", "/nick fz%d" % rng.randrange(30)]
        sock = None
        while time.monotonic() < until:
            if sock is None:
                try:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                    sock.setblocking(False)
                    stats["connects"] += 1
                except OSError:
                    stats["refused"] += 1
                    continue
            choice = rng.random()
            if choice < 0.3:
                data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
            elif choice < 0.6:
                data = (rng.choice(words) + " " + "".join(
                    rng.choice("ab \x1b\u202e\u00e9/\t\r") for _ in range(rng.randrange(20)))
                        ).encode("utf-8", "surrogatepass") + b"\n"
            elif choice < 0.7:
                data = b"z" * rng.choice((4095, 4096, 4097, 5000, 70000)) + b"\n"
            elif choice < 0.75:
                data = b"\n" * rng.randrange(1, 50)
            else:
                data = ("chatter %d\n" % rng.randrange(1000)).encode()
            try:
                sock.send(data)
                while select.select([sock], [], [], 0)[0]:
                    if not sock.recv(65536):
                        raise ConnectionError("closed")
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                sock.close()
                sock = None
                stats["dropped"] += 1
                continue
            stats["sends"] += 1
            if rng.random() < 0.03:
                if rng.random() < 0.5:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
                sock = None
            else:
                select.select([sock], [], [], rng.random() * 0.01)   # a random pause
        if sock is not None:
            sock.close()

    def test_fuzz_then_a_fresh_pair_chats(self):
        server = self.start_server("--max-line", "4096", "--queue-limit", "200000")
        until = time.monotonic() + self.SECONDS
        stats = {"connects": 0, "refused": 0, "dropped": 0, "sends": 0}
        errors = []

        def run(index: int) -> None:
            try:
                self.fuzz_one(server.port, random.Random(self.SEED + index), until, stats)
            except Exception as exc:    # reported below, not lost in a thread
                errors.append(repr(exc))

        threads = [threading.Thread(target=run, args=(i,), daemon=True)
                   for i in range(self.CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(self.SECONDS + TIMEOUT)
        self.assertEqual(errors, [])
        measured("fuzz (seed %d): %d clients, %d connects, %d sends, %d dropped by the "
                 "server" % (self.SEED, self.CLIENTS, stats["connects"], stats["sends"],
                             stats["dropped"]))
        self.assert_healthy(server)


if __name__ == "__main__":
    unittest.main()
