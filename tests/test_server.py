"""The server over real sockets: a real `server.py` process per test."""

import calendar
import json
import os
import re
import signal
import socket
import tempfile
import threading
import time
import unittest

from tests.support import (TIMEOUT, WINDOWS, Peer, needs_posix_signals, ServerProcess, ServerTestCase, run_server,
                           wait_until)

STAMP = r"^\d\d:\d\d "


class RoomTestCase(ServerTestCase):
    def room(self, *names):
        """Peers with these names, each having seen the later ones join."""
        peers = []
        for name in names:
            peer = self.peer(name)
            for earlier in peers:
                earlier.expect(r"-- %s joined$" % re.escape(name))
            peers.append(peer)
        return peers

    def assertNotSeen(self, pattern, lines):
        for line in lines:
            self.assertNotRegex(line, pattern)


class BroadcastTest(RoomTestCase):
    def test_line_goes_to_every_other_client_not_the_sender(self):
        alice, bob, carol = self.room("alice", "bob", "carol")
        alice.send("hello, everyone")
        bob.expect(STAMP + r"<alice> hello, everyone$")
        carol.expect(STAMP + r"<alice> hello, everyone$")
        self.assertNotSeen("hello, everyone", alice.sync())

    def test_the_server_names_the_sender(self):
        alice, bob = self.room("alice", "bob")
        alice.send("<bob> I am bob")
        bob.expect(STAMP + r"<alice> <bob> I am bob$")

    def test_crlf_lines_and_blank_lines(self):
        alice, bob = self.room("alice", "bob")
        alice.sendraw(b"one\r\n\r\n   \ntwo\n")
        before, _ = bob.collect(r"^\d\d:\d\d <alice> two$")
        self.assertRegex(before[-1], r"^\d\d:\d\d <alice> one$")     # no CR left
        self.assertNotSeen(r"<alice>\s*$", before)                     # blank lines dropped

    def test_control_characters_are_made_harmless(self):
        alice, bob = self.room("alice", "bob")
        alice.sendraw("clear\x1b[2J bell\x07 rtl\u202e end\n".encode())
        line = bob.expect(r"<alice> clear").string
        self.assertTrue(line.endswith("<alice> clear^[[2J bell^G rtl<U+202E> end"), line)

    def test_invalid_utf8_is_replaced(self):
        alice, bob = self.room("alice", "bob")
        alice.sendraw(b"caf\xc3\xa9 \xff\xfe\n")
        bob.expect("<alice> caf\u00e9 \ufffd\ufffd$")

    def test_double_slash_sends_a_literal_slash(self):
        alice, bob = self.room("alice", "bob")
        alice.send("//nick is a command")
        bob.expect(STAMP + r"<alice> /nick is a command$")

    def test_lines_sent_together_arrive_whole_and_in_order(self):
        alice, bob = self.room("alice", "bob")
        alice.sendraw(b"".join(b"line %d\n" % i for i in range(50)))
        got = [bob.expect(r"<alice> (line \d+)$").group(1) for _ in range(50)]
        self.assertEqual(got, ["line %d" % i for i in range(50)])


class NameTest(RoomTestCase):
    def test_banner_on_connect(self):
        peer = Peer(self.server.port, greet=False)
        self.addCleanup(peer.close)
        peer.expect(STAMP + r"-- Broadcast Chat [\d.]+: 0 online\. /nick NAME")

    def test_welcome_counts_the_others(self):
        alice = self.peer()
        alice.send("/nick alice")
        alice.expect(r"-- welcome, alice! You are alone here")
        bob = self.peer()
        bob.send("/nick bob")
        bob.expect(r"-- welcome, bob! 1 other online")
        alice.expect(r"-- bob joined$")

    def test_talking_before_nick_gives_a_guest_name(self):
        (alice,) = self.room("alice")
        guest1, guest2 = self.peer(), self.peer()
        guest1.send("hi from one")
        name1 = alice.expect(r"-- (guest-\d+) joined$").group(1)
        alice.expect(STAMP + r"<%s> hi from one$" % name1)
        guest1.expect(r"-- welcome, %s! " % name1)
        guest2.send("/me is here")
        name2 = alice.expect(r"-- (guest-\d+) joined$").group(1)
        alice.expect(STAMP + r"\* %s is here$" % name2)
        self.assertNotEqual(name1, name2)
        who = self.who(alice)
        self.assertEqual(sorted(who), sorted(["alice", name1, name2]))

    def test_guest_name_skips_a_taken_guest_name(self):
        (taker,) = self.room("guest-1")
        guest = self.peer()
        guest.send("hello")
        guest.expect(r"-- welcome, guest-2! ")
        taker.expect(r"<guest-2> hello$")

    def who(self, peer):
        peer.send("/who")
        match = peer.expect(r"-- (\d+) online: (.*)$")
        names = match.group(2).split(", ")
        self.assertEqual(int(match.group(1)), len(names))
        return names

    def test_who_lists_named_clients_sorted(self):
        self.room("carol", "Bob", "alice")
        unnamed = self.peer()
        self.assertEqual(self.who(unnamed), ["alice", "Bob", "carol"])

    def test_who_comes_after_the_rename_it_shows(self):
        (bob,) = self.room("bob")
        renamer = self.peer("gina")
        renamer.expect(r"-- gina joined$")
        renamer.send("/nick ALICE")
        renamer.send("/who")
        before, _ = renamer.collect(r"-- 2 online: ALICE, bob$")
        # The notice of the rename reached the renamer before the list did.
        self.assertTrue(any(re.search(r"-- gina is now known as ALICE$", line) for line in before),
                        before)

    def test_who_when_nobody_is_named(self):
        peer = self.peer()
        peer.send("/who")
        peer.expect(r"-- 0 online: nobody named yet$")

    def test_name_taken_case_insensitively(self):
        (alice,) = self.room("Alice")
        bob = self.peer()
        for attempt in ("Alice", "alice", "ALICE", "\uff21\uff4c\uff49\uff43\uff45"):
            bob.send("/nick " + attempt)
            bob.expect(STAMP + r"!! name taken: Alice is already in use$")
        bob.nick("bob")
        alice.expect(r"-- bob joined$")

    def test_invalid_names_are_refused_with_a_reason(self):
        peer = self.peer()
        cases = [
            ("/nick root", r"!! invalid name: the name root is reserved$"),
            ("/nick -dash", r"!! invalid name: a name starts with a letter or a digit$"),
            ("/nick " + "x" * 25, r"!! invalid name: a name has at most 24 characters$"),
            ("/nick a<b>", r"!! invalid name: a name has letters, digits"),
            # a character that is shown escaped is named as itself
            ("/nick \u202eevil", r"!! invalid name: .* only, not the invisible <U\+202E>$"),
            ("/nick a\x1bb", r"!! invalid name: .* only, not \^\[$"),
            ("/nick", r"!! usage: /nick NAME$"),
            ("/nick two words", r"!! usage: /nick NAME \(a name has no spaces: try two-words\)$"),
        ]
        for line, pattern in cases:
            peer.send(line)
            peer.expect(STAMP + pattern)
        peer.send("/who")
        peer.expect(r"-- 0 online: nobody named yet$")

    def test_rename_is_announced(self):
        alice, bob = self.room("alice", "bob")
        alice.send("/nick alicia")
        alice.expect(STAMP + r"-- alice is now known as alicia$")   # the renamer too
        bob.expect(STAMP + r"-- alice is now known as alicia$")
        alice.send("hi")
        bob.expect(r"<alicia> hi$")
        self.assertEqual(self.who(bob), ["alicia", "bob"])
        # The old name is free again.
        carol = self.peer("alice")
        bob.expect(r"-- alice joined$")
        carol.close()

    def test_renaming_to_a_new_case_of_ones_own_name(self):
        alice, bob = self.room("alice", "bob")
        alice.send("/nick Alice")
        alice.expect(r"-- alice is now known as Alice$")
        bob.expect(r"-- alice is now known as Alice$")

    def test_server_logs_connect_join_rename_leave(self):
        alice = self.peer("alice")
        address = alice.address
        log = self.server.log
        log.expect(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d connect %s$" % re.escape(address))
        log.expect(r" join alice %s$" % re.escape(address))
        alice.send("/nick alicia")
        alice.expect("now known as alicia")
        log.expect(r" rename alice alicia %s$" % re.escape(address))
        alice.send("/quit bye")
        alice.expect_closed()
        log.expect(r" leave alicia %s quit: bye$" % re.escape(address))


class CommandTest(RoomTestCase):
    def test_private_message(self):
        alice, bob, carol = self.room("alice", "bob", "carol")
        alice.send("/msg BOB psst, secret")
        bob.expect(STAMP + r"\*alice\* psst, secret$")
        alice.expect(STAMP + r"-> \*bob\* psst, secret$")
        self.assertNotSeen("secret", carol.sync())

    def test_private_message_to_oneself(self):
        alice, bob = self.room("alice", "bob")
        alice.send("/msg alice hi me")
        alice.expect(STAMP + r"!! that is you")
        self.assertNotSeen("hi me", bob.sync())

    def test_private_message_to_nobody(self):
        (alice,) = self.room("alice")
        alice.send("/msg zed hello?")
        alice.expect(STAMP + r"!! no such name: zed \(/who lists who is online\)$")

    def test_private_message_usage(self):
        (alice,) = self.room("alice")
        alice.send("/msg bob")
        alice.expect(STAMP + r"!! usage: /msg NAME TEXT$")

    def test_me(self):
        alice, bob = self.room("alice", "bob")
        alice.send("/me waves")
        bob.expect(STAMP + r"\* alice waves$")
        self.assertNotSeen("waves", alice.sync())
        alice.send("/me")
        alice.expect(r"!! usage: /me ACTION$")

    def test_help(self):
        import helpers
        peer = self.peer()
        peer.send("/help")
        for line in helpers.HELP_LINES:
            peer.expect(STAMP + r"-- " + re.escape(line) + "$")

    def test_unknown_command(self):
        alice, bob = self.room("alice", "bob")
        alice.send("/dance wildly")
        alice.expect(STAMP + r"!! unknown command /dance; /help lists the commands$")
        self.assertNotSeen("dance", bob.sync())

    def test_who_with_arguments(self):
        peer = self.peer()
        peer.send("/who is there")
        peer.expect(r"!! usage: /who$")

    def test_quit_with_reason(self):
        alice, bob = self.room("alice", "bob")
        alice.send("/quit gone fishing")
        lines = alice.expect_closed()
        self.assertRegex(lines[-1], STAMP + r"-- goodbye$")
        bob.expect(STAMP + r"-- alice left \(quit: gone fishing\)$")

    def test_quit_ignores_lines_after_it(self):
        alice, bob = self.room("alice", "bob")
        alice.sendraw(b"before\n/quit\nafter\n")
        alice.expect_closed()
        before, _ = bob.collect(r"-- alice left \(quit\)$")
        self.assertTrue(any(line.endswith("<alice> before") for line in before), before)
        self.assertNotSeen("after", before + bob.sync())

    def test_connection_lost_is_announced(self):
        alice, bob = self.room("alice", "bob")
        alice.close()
        bob.expect(STAMP + r"-- alice left \(connection lost\)$")
        self.server.log.expect(r" leave alice \S+ connection lost$")

    def test_unnamed_client_leaving_is_not_announced(self):
        (alice,) = self.room("alice")
        anonymous = self.peer()
        anonymous.close()
        self.server.log.expect(r" leave - \S+ connection lost$")
        self.assertNotSeen("left", alice.sync())


class LimitsTest(RoomTestCase):
    server_args = ("--max-line", "64", "--rate-limit", "5", "--burst", "5",
                   "--max-clients", "4")

    def test_long_line_is_refused_and_the_connection_stays_usable(self):
        alice, bob = self.room("alice", "bob")
        alice.send("x" * 65)
        alice.expect(STAMP + r"!! line too long: 1 line over 64 bytes not sent$")
        alice.send("y" * 64)
        bob.expect(r"<alice> y{64}$")
        self.assertNotSeen("x", bob.lines)

    def test_long_line_without_newline_for_a_long_time(self):
        alice, bob = self.room("alice", "bob")
        for _ in range(64):
            alice.sendraw(b"z" * 16384)     # 1 MiB that is never one line
        alice.expect(r"!! line too long: 1 line over 64 bytes not sent$")
        alice.sendraw(b"zzz\nafter the long one\n")
        bob.expect(r"<alice> after the long one$")
        self.assertNotSeen("z", bob.lines)
        alice.send("/who")
        lines, _ = alice.collect(r"-- \d+ online")
        self.assertNotSeen("too long", lines)

    def test_flood_is_refused_past_the_burst(self):
        alice, bob = self.room("alice", "bob")
        alice.sendraw(b"".join(b"flood %d\n" % i for i in range(20)))
        delivered, refused = [], 0
        deadline = time.monotonic() + TIMEOUT
        # Every one of the 20 lines is either delivered to bob or counted in
        # a flood error to alice: wait until all are accounted for.
        while len(delivered) + refused < 20:
            self.assertLess(time.monotonic(), deadline, (delivered, refused))
            for peer in (alice, bob):
                try:
                    line = peer.readline(0.05)
                except socket.timeout:
                    continue
                match = re.search(r"!! flood: (\d+) lines? not sent; the limit is 5 lines a second$", line)
                if peer is alice and match:
                    refused += int(match.group(1))
                match = re.search(r"<alice> flood (\d+)$", line)
                if peer is bob and match:
                    delivered.append(int(match.group(1)))
        self.assertEqual(len(delivered) + refused, 20)
        # The burst is 5 and /nick took one; a little may refill meanwhile.
        self.assertEqual(delivered[:4], [0, 1, 2, 3])
        self.assertLessEqual(len(delivered), 7)
        self.assertEqual(delivered, sorted(set(delivered)))

    def test_a_client_that_keeps_flooding_is_dropped(self):
        alice, bob = self.room("alice", "bob")
        batch = b"".join(b"spam %d\n" % i for i in range(20))
        for strike in range(9):
            alice.sendraw(batch)
            alice.expect(r"!! flood: \d+ lines not sent")    # one read, one strike
        alice.sendraw(batch)
        alice.expect_closed()
        bob.expect(r"-- alice left \(flooding\)$")
        self.server.log.expect(r" leave alice \S+ flooding$")

    def test_server_full(self):
        self.room("a1", "a2", "a3", "a4")
        extra = Peer(self.server.port, greet=False)
        self.addCleanup(extra.close)
        lines = extra.expect_closed()
        self.assertEqual(len(lines), 1, lines)
        self.assertRegex(lines[0], STAMP + r"!! server full$")
        self.server.log.expect(r" refuse \S+ server full$")


class ConnectionLimitTest(RoomTestCase):
    server_args = ("--max-per-address", "2")

    def test_too_many_from_one_address(self):
        self.room("a1", "a2")
        extra = Peer(self.server.port, greet=False)
        self.addCleanup(extra.close)
        lines = extra.expect_closed()
        self.assertEqual(len(lines), 1, lines)
        self.assertRegex(lines[0], STAMP + r"!! too many connections from your address$")


def have_ipv6():
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@unittest.skipUnless(have_ipv6(), "no IPv6 loopback")
class IPv6Test(unittest.TestCase):
    def test_ipv6_addresses_are_bracketed(self):
        with ServerProcess("--host", "::1") as server:
            self.assertEqual(server.host, "[::1]")
            sock = socket.create_connection(("::1", server.port), timeout=TIMEOUT)
            self.addCleanup(sock.close)
            sock.sendall(b"/nick six\n")
            port = sock.getsockname()[1]
            server.wait_clients(lambda r: r and r[0]["name"] == "six")
            self.assertEqual(server.clients()[0]["address"], "[::1]:%d" % port)


class DeliveryTest(RoomTestCase):
    """Slow readers, many senders: nobody waits, nothing is lost or reordered."""

    server_args = ("--rate-limit", "0", "--queue-limit", "65536")

    def stuck_peer(self, port, name):
        """A client with a tiny receive buffer that never reads."""
        sock = socket.socket()
        self.addCleanup(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(("/nick %s\n" % name).encode())
        return sock

    def bulk(self, sender, progress, count, size=200, batch=25):
        """Send count numbered lines of size bytes from a thread.

        The sender keeps at most two batches (about 11 kB) ahead of what the
        healthy receiver has read (progress), well inside its queue limit:
        the test is about the stuck client, not about outrunning the healthy
        one (the server reads up to 64 kB at once and counts bytes in flight,
        so a sender far ahead can get a healthy reader near a 64 kB limit
        dropped too).
        """
        pad = "." * (size - 8)

        def run():
            for start in range(0, count, batch):
                with progress:
                    if not progress.wait_for(lambda: progress.count >= start - batch, 15):
                        return
                sender.sendraw("".join("%06d %s\n" % (i, pad)
                                       for i in range(start, min(count, start + batch))).encode())
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.addCleanup(thread.join, TIMEOUT)
        return thread

    def receive_numbered(self, receiver, sender_name, count, progress):
        """Read until the last numbered line; check every line came in order."""
        notices = []
        regex = re.compile(r"^\d\d:\d\d <%s> (\d{6}) \.+$" % sender_name)
        deadline = time.monotonic() + 20
        while progress.count < count:
            line = receiver.readline(max(0.01, deadline - time.monotonic()))
            if line is None:
                try:
                    self.server.log.expect(r" leave bob ", timeout=2)
                except AssertionError:
                    pass
            self.assertIsNotNone(line, "connection closed after %d lines; server log:\n%s"
                                 % (progress.count, self.server.log.text()[-2000:]))
            match = regex.match(line)
            if match:
                self.assertEqual(int(match.group(1)), progress.count)
                with progress:
                    progress.count += 1
                    progress.notify_all()
            else:
                notices.append(line)
        return notices

    def progress(self):
        progress = threading.Condition()
        progress.count = 0
        return progress

    # 6.4 MB: more than the kernel buffers hold for a client that never reads
    # (the server's send buffer grows to 4 MB), so a server that writes in
    # the sender's thread would freeze here.
    LINES, SIZE = 32000, 200

    def test_stuck_reader_is_dropped_and_delays_nobody(self):
        alice, bob = self.room("alice", "bob")
        self.stuck_peer(self.server.port, "stuck")
        bob.expect(r"-- stuck joined$")
        started = time.monotonic()
        notices = []
        dropped = r"-- stuck left \(too slow: send queue over 65536 bytes\)$"
        # Until it is dropped: under Wine a socket takes megabytes more
        # than under Linux before a send would block (5.2 MB against 3.1
        # in test_hostile's measure), at times more than one round.
        for _ in range(4):
            progress = self.progress()
            self.bulk(alice, progress, self.LINES, self.SIZE)
            notices += self.receive_numbered(bob, "alice", self.LINES, progress)
            notices += bob.sync()
            if any(re.search(dropped, line) for line in notices):
                break
        elapsed = time.monotonic() - started
        self.assertTrue(any(re.search(dropped, line) for line in notices), notices)
        self.assertLess(elapsed, 10)
        self.server.log.expect(r" leave stuck \S+ too slow: send queue over 65536 bytes$")
        alice.send("/who")
        alice.expect(r"-- 2 online: alice, bob$")

    def test_stuck_reader_under_its_limit_does_not_delay_others(self):
        server = self.start_server("--rate-limit", "0", "--queue-limit", str(64 << 20))
        alice, bob = self.peer("alice", server), self.peer("bob", server)
        self.stuck_peer(server.port, "stuck")
        bob.expect(r"-- stuck joined$")
        progress = self.progress()
        self.bulk(alice, progress, self.LINES, self.SIZE)
        self.receive_numbered(bob, "alice", self.LINES, progress)
        # stuck holds megabytes unread but is still in the room, and a line
        # from bob still reaches alice at once.
        bob.send("/who")
        bob.expect(r"-- 3 online: alice, bob, stuck$")
        bob.send("still quick")
        alice.expect(r"<bob> still quick$", timeout=2)

    def test_one_paste_larger_than_the_queue_limit_drops_nobody(self):
        server = self.start_server("--rate-limit", "0", "--queue-limit", "2048")
        alice, bob = self.peer("alice", server), self.peer("bob", server)
        alice.expect("bob joined")
        alice.sendraw(b"".join(b"%03d %s\n" % (i, b"x" * 95) for i in range(30)))  # 3 kB at once
        got = [int(bob.expect(r"<alice> (\d{3}) x+$").group(1)) for _ in range(30)]
        self.assertEqual(got, list(range(30)))
        alice.send("/who")
        alice.expect(r"-- 2 online: alice, bob$")

    def test_order_under_concurrent_senders(self):
        senders = self.room("s0", "s1", "s2", "s3")
        receivers = [self.peer("r%d" % i) for i in range(3)]
        count = 400
        results = {}

        def receive(receiver):
            seen = {sender.name: [] for sender in senders}
            regex = re.compile(r"^\d\d:\d\d <(s\d)> (s\d) (\d+) [a-z]*$")
            try:
                while sum(len(v) for v in seen.values()) < count * len(senders):
                    line = receiver.readline(15)
                    if line is None:
                        break
                    if "<s" not in line:
                        continue
                    match = regex.match(line)
                    if match is None or match.group(1) != match.group(2):
                        seen.setdefault("bad", []).append(line)
                        continue
                    seen[match.group(1)].append(int(match.group(3)))
            except Exception as exc:    # reported by the main thread
                seen["error"] = [repr(exc)]
            results[receiver] = seen

        def send(sender, seed):
            lines = ["%s %d %s\n" % (sender.name, i, "abcdefghij"[:(i * seed) % 11])
                     for i in range(count)]
            i = 0
            while i < count:
                n = 1 + (i * seed) % 37     # varied batch sizes
                sender.sendraw("".join(lines[i:i + n]).encode())
                i += n

        readers = [threading.Thread(target=receive, args=(r,)) for r in receivers]
        writers = [threading.Thread(target=send, args=(s, k + 3)) for k, s in enumerate(senders)]
        for thread in readers + writers:
            thread.start()
        for thread in writers + readers:
            thread.join(20)
        expected = {sender.name: list(range(count)) for sender in senders}
        for receiver in receivers:
            self.assertEqual(results.get(receiver), expected, receiver.name)
        # Nobody got their own lines back.
        for sender in senders:
            for line in sender.sync():
                self.assertNotIn("<%s> " % sender.name, line)

    def test_no_line_is_lost_when_many_clients_come_and_go(self):
        alice, bob = self.room("alice", "bob")
        churners = []
        for i in range(30):
            peer = self.peer("c%d" % i)
            churners.append(peer)
            alice.send("msg %d" % i)
            if i % 2:
                churners.pop(0).close()
        got = [int(bob.expect(r"<alice> msg (\d+)$").group(1)) for _ in range(30)]
        self.assertEqual(got, list(range(30)))


ISO_UTC = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"


class ClientsFileTest(RoomTestCase):
    def test_content(self):
        before = time.time()
        alice, bob = self.room("alice", "bob")
        unnamed = self.peer()
        records = self.server.wait_clients(
            lambda r: len(r) == 3 and {"alice", "bob"} <= {x["name"] for x in r},
            message="alice, bob and one unnamed in clients.json")
        by_name = {record["name"]: record for record in records}
        self.assertEqual(set(by_name), {"alice", "bob", None})
        for record, peer in ((by_name["alice"], alice), (by_name["bob"], bob), (by_name[None], unnamed)):
            self.assertEqual(set(record), {"name", "address", "connected_at"})
            self.assertEqual(record["address"], peer.address)
            self.assertRegex(record["connected_at"], ISO_UTC)
            when = calendar.timegm(time.strptime(record["connected_at"], "%Y-%m-%dT%H:%M:%SZ"))
            self.assertLessEqual(int(before) - 1, when)
            self.assertLessEqual(when, time.time() + 1)

    def test_follows_renames_and_leaves(self):
        alice, bob = self.room("alice", "bob")
        self.server.wait_names(["alice", "bob"])
        alice.send("/nick alicia")
        alice.expect("now known as alicia")
        self.server.wait_names(["alicia", "bob"], timeout=2)
        bob.close()
        self.server.wait_clients(lambda r: [x["name"] for x in r] == ["alicia"], timeout=2)

    def test_at_most_about_a_second_stale_with_the_real_interval(self):
        server = self.start_server(as_is=True)     # 0.5 s between writes, as shipped
        alice = self.peer("alice", server=server)
        server.wait_clients(lambda r: [x["name"] for x in r] == ["alice"], timeout=1.5)
        bob = self.peer("bob", server=server)
        server.wait_names(["alice", "bob"], timeout=1.5)
        alice.close()
        server.wait_clients(lambda r: [x["name"] for x in r] == ["bob"], timeout=1.5)
        bob.close()
        server.wait_clients(lambda r: r == [], timeout=1.5)

    def test_reset_at_start_up(self):
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        path = os.path.join(folder.name, "clients.json")
        with open(path, "w") as handle:
            handle.write('[{"name": "ghost", "address": "1.2.3.4:5", "connected_at": "x"}, {trunc')
        server = self.start_server(clients_file=path, folder=folder.name)
        # The file is reset before the server says it is running.
        self.assertEqual(server.clients(), [])

    @needs_posix_signals
    def test_emptied_on_shutdown(self):
        self.room("alice", "bob")
        self.server.wait_clients(lambda r: len(r) == 2)
        self.assertEqual(self.server.stop(signal.SIGTERM), 0)
        self.assertEqual(self.server.clients(), [])

    def test_always_valid_json_during_churn(self):
        path = self.server.clients_file
        stop = threading.Event()
        stats = {"reads": 0, "bad": [], "contents": set()}

        def hammer():
            while not stop.is_set():
                try:
                    with open(path, encoding="utf-8") as handle:
                        value = json.load(handle)
                except PermissionError:
                    if not WINDOWS:     # there: opened while being replaced; try again
                        raise
                    continue
                except ValueError as exc:
                    stats["bad"].append(repr(exc))
                    continue
                stats["reads"] += 1
                if not isinstance(value, list):
                    stats["bad"].append(repr(value))
                else:
                    stats["contents"].add(json.dumps(value, sort_keys=True))
        reader = threading.Thread(target=hammer)
        reader.start()
        try:
            watcher = self.peer("watcher")
            serial = [0]

            def churn_until_rewritten():
                """Connect and leave a few clients; true once the file changed often."""
                peers = []
                for _ in range(10):
                    serial[0] += 1
                    peers.append(Peer(self.server.port, "p%d" % serial[0]))
                for peer in peers:
                    peer.close()
                return len(stats["contents"]) >= 5
            wait_until(churn_until_rewritten, timeout=10, message="clients.json rewrites")
            watcher.sync()
            self.server.wait_clients(lambda r: [x["name"] for x in r] == ["watcher"], timeout=3)
        finally:
            stop.set()
            reader.join()
        self.assertEqual(stats["bad"], [])
        self.assertGreater(stats["reads"], 50)

    def test_failed_write_is_logged_and_the_chat_carries_on(self):
        alice, bob = self.room("alice", "bob")
        self.server.wait_clients(lambda r: len(r) == 2)
        os.unlink(self.server.clients_file)
        os.mkdir(self.server.clients_file)      # a directory in the way
        alice.send("/nick alicia")
        self.server.log.expect(r" error cannot write \S+clients\.json: .*; will retry$")
        alice.send("still here")
        bob.expect(r"<alicia> still here$")
        os.rmdir(self.server.clients_file)
        self.server.log.expect(r" info \S+clients\.json is written again$")
        self.server.wait_names(["alicia", "bob"])


@needs_posix_signals
class ShutdownTest(RoomTestCase):
    def check_shutdown(self, signum):
        alice, bob = self.room("alice", "bob")
        self.server.wait_clients(lambda r: len(r) == 2)
        started = time.monotonic()
        self.server.send_signal(signum)
        for peer in (alice, bob):
            lines = peer.expect_closed()
            self.assertTrue(lines, "no goodbye")
            self.assertRegex(lines[-1], STAMP + r"-- server shutting down$")
            self.assertNotSeen(r"left", lines)
        rc = self.server.wait(3)
        self.assertLess(time.monotonic() - started, 2.0)
        self.assertEqual(rc, 0)
        self.assertEqual(self.server.errors.text(), "")
        self.assertEqual(self.server.clients(), [])
        self.server.log.expect(r" stop server stopped$")

    def test_sigterm(self):
        self.check_shutdown(signal.SIGTERM)

    def test_sigint(self):
        self.check_shutdown(signal.SIGINT)

    def test_shutdown_with_a_stuck_client_is_still_quick(self):
        server = self.start_server("--rate-limit", "0")
        alice = Peer(server.port, "alice")
        self.addCleanup(alice.close)
        stuck = socket.socket()
        self.addCleanup(stuck.close)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", server.port))
        stuck.sendall(b"/nick stuck\n")
        alice.expect("stuck joined")
        for _ in range(3):
            alice.sendraw((b"y" * 4000 + b"\n") * 50)     # 600 kB that stuck never reads
        alice.sync()
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        self.assertEqual(server.wait(3), 0)
        self.assertLess(time.monotonic() - started, 2.0)
        self.assertEqual(server.errors.text(), "")

    def test_new_connections_after_shutdown_are_refused(self):
        port = self.server.port
        self.assertEqual(self.server.stop(signal.SIGTERM), 0)
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


def start_failing(*args):
    """Run a server that should fail at once: (exit code, stdout, stderr)."""
    result = run_server(*args)
    return result.returncode, result.stdout, result.stderr


class StartupErrorTest(unittest.TestCase):
    def setUp(self):
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        self.folder = folder.name
        self.clients_file = os.path.join(self.folder, "clients.json")

    def assertOneClearLine(self, err, *fragments):
        lines = err.splitlines()
        self.assertEqual(len(lines), 1, err)
        self.assertNotIn("Traceback", err)
        self.assertTrue(lines[0].startswith("server.py: error: "), lines[0])
        for fragment in fragments:
            self.assertIn(fragment, lines[0])

    def test_port_in_use(self):
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        rc, out, err = start_failing("--port", str(port), "--clients-file", self.clients_file)
        self.assertNotEqual(rc, 0)
        self.assertEqual(out, "")
        self.assertOneClearLine(err, "port %d" % port, "already in use", "--port")

    def test_port_5000_in_use_mentions_airplay(self):
        holder = socket.socket()
        self.addCleanup(holder.close)
        # As the server binds: with SO_REUSEADDR, a connection to 5000 left in
        # TIME_WAIT does not stop the bind (without it, the holder failed,
        # the server did not, and it ran until the timeout).
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            holder.bind(("127.0.0.1", 5000))
            holder.listen(1)
        except OSError:
            pass    # something else listens on it: just as busy
        rc, out, err = start_failing("--port", "5000", "--clients-file", self.clients_file)
        self.assertNotEqual(rc, 0)
        self.assertOneClearLine(err, "already in use", "AirPlay")

    def test_bad_port(self):
        for port in ("70000", "-1"):
            rc, out, err = start_failing("--port", port, "--clients-file", self.clients_file)
            self.assertNotEqual(rc, 0)
            self.assertOneClearLine(err, "bad port " + port)
        self.assertFalse(os.path.exists(self.clients_file))

    def test_clients_file_is_a_directory(self):
        os.mkdir(self.clients_file)
        rc, out, err = start_failing("--port", "0", "--clients-file", self.clients_file)
        self.assertNotEqual(rc, 0)
        self.assertOneClearLine(err, self.clients_file, "directory")

    def test_clients_file_in_a_missing_folder(self):
        path = os.path.join(self.folder, "missing", "clients.json")
        rc, out, err = start_failing("--port", "0", "--clients-file", path)
        self.assertNotEqual(rc, 0)
        self.assertOneClearLine(err, path, "does not exist")

    @unittest.skipUnless(os.path.isdir("/proc/self"), "needs Linux's /proc")
    def test_clients_file_that_cannot_be_created(self):
        # /proc refuses new files even to root, whom os.access lets through.
        path = "/proc/broadcast-chat-clients.json"
        rc, out, err = start_failing("--port", "0", "--clients-file", path)
        self.assertEqual(rc, 2)
        self.assertEqual(out, "")
        self.assertOneClearLine(err, path)

    def test_unknown_host(self):
        rc, out, err = start_failing("--host", "192.0.2.123", "--port", "0",
                                  "--clients-file", self.clients_file)
        self.assertNotEqual(rc, 0)
        self.assertOneClearLine(err, "192.0.2.123")

    def test_version_and_help(self):
        rc, out, err = start_failing("--version")
        self.assertEqual(rc, 0)
        self.assertRegex(out + err, r"server\.py \d+\.\d+\.\d+")
        rc, out, err = start_failing("--help")
        self.assertEqual(rc, 0)
        for option in ("--host", "--port", "--clients-file", "--max-clients", "--queue-limit",
                       "--rate-limit", "--max-line", "--version"):
            self.assertIn(option, out)


if __name__ == "__main__":
    unittest.main()
