"""The room, the writer and sessions in one process, over real socket
pairs: rules that an end-to-end test could only reach by racing the server."""

import random
import socket
import ssl
import threading
import time
import unittest

from tests import support  # (also puts the repository on sys.path)

from broadcast_chat import admission, protocol, wire
from broadcast_chat.room import Member, Room
from broadcast_chat.session import Session
from broadcast_chat.writer import Writer, unsent_part

NOW = 1764600000.0      # a fixed clock: both rooms of a comparison agree on every time


class Quiet:
    def __init__(self):
        self.lines = []

    def __call__(self, *args):
        self.lines.append(" ".join(args))


class Far:
    """The far end of a member's socket pair, read with a deadline."""

    def __init__(self, sock):
        self.sock = sock
        self.data = b""

    def read_until(self, predicate, timeout=support.TIMEOUT):
        deadline = time.monotonic() + timeout
        while not predicate(self.data):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out; got %r" % self.data[-500:])
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise AssertionError("closed; got %r" % self.data[-500:])
            self.data += chunk
        return self.data

    def read_lines(self, count):
        data = self.read_until(lambda data: data.count(b"\n") >= count)
        return data.split(b"\n")[:count]

    def answer(self):
        """The next reply or error of the JSON format, consumed with what came before."""
        def found(data):
            return any(line.startswith((b'{"type":"reply"', b'{"type":"error"'))
                       for line in data.split(b"\n")[:-1])
        self.read_until(found)
        lines = self.data.split(b"\n")
        for index, line in enumerate(lines):
            if line.startswith((b'{"type":"reply"', b'{"type":"error"')):
                self.data = b"\n".join(lines[index + 1:])
                return wire.parse_json_line(line.decode())


def flush_notices(room):
    """Send the waiting notices now, as the room's timer would."""
    with room.lock:
        room._flush_notices()


class RoomCase(unittest.TestCase):
    """A started Writer and a Room with a fixed clock; members on socket pairs."""

    def make_room(self, **kwargs):
        log = Quiet()
        writer = Writer(threading.Lock(), kwargs.pop("queue_limit", 1 << 20), log)
        writer.start()
        room = Room(writer, log, clock=lambda: NOW, **kwargs)
        self.addCleanup(room.close, "test over", 0.2)
        return room

    def member(self, room, name=None, fmt=wire.TEXT, host="192.0.2.1"):
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        ours.setblocking(False)
        item = Member(ours, (host, 40000))
        item.fmt = fmt
        self.assertIsNone(room.admit(item))
        far = Far(theirs)
        if name is not None:
            self.assertIsNone(room.rename(item, name))
            far.read_until(lambda data: b"welcome" in data)
            far.data = b""
        return item, far

    def session(self, room, item, rate=0.0, burst=100):
        return Session(room, item, rate, burst, 4096, lambda: NOW)


class OrderTest(RoomCase):
    def test_a_join_is_heard_before_the_newcomers_first_line(self):
        room = self.make_room()
        alice, alice_far = self.member(room, "alice")
        flush_notices(room)     # alice's own join is out of the way
        bob, _ = self.member(room, "bob")
        room.say(bob, b"hi\n", 1)       # bob's join notice is still waiting
        lines = alice_far.read_lines(3)
        self.assertRegex(lines[0], rb"-- alice joined$")
        self.assertRegex(lines[1], rb"-- bob joined$")
        self.assertRegex(lines[2], rb"<bob> hi$")

    def test_events_have_strictly_increasing_ids_and_the_ring_is_bounded(self):
        room = self.make_room()
        room.ring.max_events = 5
        alice, _ = self.member(room, "alice")
        watcher, far = self.member(room, "watcher", fmt=wire.JSON)
        room.say(alice, b"one\ntwo\nthree\n", 3)
        room.act(alice, "waves")
        got = far.read_until(lambda data: b'"waves"' in data)
        ids = [e["id"] for e in map(wire.parse_json_line, got.decode().splitlines())
               if e and e["type"] == "event"]
        self.assertEqual(ids, sorted(set(ids)))
        self.assertEqual(len(ids), len(set(ids)))
        for _ in range(10):
            room.act(alice, "again")
        self.assertLessEqual(room.ring.ids, 5)
        self.assertEqual(room.ring[-1].last, room.last_id)

    def test_a_json_member_gets_its_own_events_back_a_text_member_does_not(self):
        room = self.make_room()
        text, text_far = self.member(room, "text")
        machine, machine_far = self.member(room, "machine", fmt=wire.JSON)
        room.say(machine, b"from machine\n", 1)
        room.say(text, b"from text\n", 1)
        got = machine_far.read_until(lambda data: b"from text" in data)
        self.assertIn(b'"from":"machine","text":"from machine"', got)
        self.assertNotIn(b"from text", text_far.read_until(lambda data: b"from machine" in data))

    def test_lock_rules_are_asserted(self):
        room = self.make_room()
        with self.assertRaises(AssertionError):
            room._flush_notices()
        with self.assertRaises(AssertionError):
            room.writer.crowded()


class ClusterNamesTest(RoomCase):
    """The room's side of names in a cluster, with a stand-in for the cluster."""

    class StandIn:
        HERE = "here"
        elsewhere = []

        def __init__(self, room):
            self.room = room
            self.released = []      # (name, leave notices waiting then)

        def claim(self, member, name, force=False):
            return None

        def release(self, member, name):
            with self.room.lock:
                waiting = [notice for notice in self.room.notices if notice[0] == "leave"]
            self.released.append((name, waiting))

        def send(self, events, sender, flush_after=False):
            pass

    def test_a_name_is_let_go_of_among_the_servers_before_its_leave_is_told(self):
        room = self.make_room()
        room.cluster = cluster = self.StandIn(room)
        bob, _ = self.member(room, "bob")
        room.leave(bob, "quit")
        # Else a server could read "bob left" and still find bob's name held.
        self.assertEqual(cluster.released, [("bob", [])])
        self.assertEqual([notice[:2] for notice in room.notices], [("join", "bob"),
                                                                   ("leave", "bob")])


class SessionTest(RoomCase):
    def test_commands_are_a_table_and_each_answers_in_the_members_format(self):
        room = self.make_room()
        alice, alice_far = self.member(room, "alice", fmt=wire.JSON)
        bob, bob_far = self.member(room, "bob")
        session = self.session(room, alice)
        for line, code in ((b"/who", "who"), (b"/dance", "unknown_command"),
                           (b"/msg", "usage"), (b"/msg nobody hi", "no_such_name"),
                           (b"/msg alice hi", "self_message"), (b"/pass x", "pass_not_needed"),
                           (b"/hello json", "hello_late")):
            with self.subTest(line=line):
                session.handle(protocol.interpret_lines([line]), 0)
                reply = alice_far.answer()
                self.assertEqual(reply["code"], code, reply)
        self.assertEqual(set(Session.COMMANDS), set(protocol.COMMAND_USAGE) | {"error"})

    def test_private_messages_reach_one_member_and_echo_to_the_sender(self):
        room = self.make_room()
        alice, alice_far = self.member(room, "alice")
        bob, bob_far = self.member(room, "bob", fmt=wire.JSON)
        carol, carol_far = self.member(room, "carol")
        self.session(room, alice).handle(protocol.interpret_lines([b"/msg bob psst"]), 0)
        self.assertRegex(alice_far.read_lines(4)[-1], rb"^\d\d:\d\d -> \*bob\* psst$")
        got = bob_far.read_until(lambda data: b"psst" in data).decode().splitlines()[-1]
        self.assertEqual(wire.parse_json_line(got)["to"], "bob")
        room.say(alice, b"public\n", 1)
        self.assertNotIn(b"psst", carol_far.read_until(lambda data: b"public" in data))

    def test_the_flood_limit_cuts_a_read_and_warns_once(self):
        room = self.make_room()
        alice, _ = self.member(room, "alice")
        bob, bob_far = self.member(room, "bob")
        session = self.session(room, alice, rate=1.0, burst=3)
        steps, _ = protocol.classify(protocol.LineFramer(4096), b"a\nb\nc\nd\ne\n", fast=True)
        session.handle(steps, 0)
        got = bob_far.read_until(lambda data: b"<alice> c" in data)
        self.assertNotIn(b"<alice> d", got)

    def test_hello_switches_to_json_and_announces_the_limits(self):
        room = self.make_room()
        item, far = self.member(room)
        session = Session(room, item, 5.0, 7, 1000, lambda: NOW)
        session.handle(protocol.interpret_lines([b"/hello json"]), 0)
        hello = wire.parse_json_line(far.read_lines(1)[0].decode())
        self.assertEqual(hello["type"], "hello")
        self.assertEqual(hello["limits"], {"rate": 5.0, "burst": 7, "max_line": 1000})
        self.assertEqual(item.fmt, wire.JSON)


class DifferentialTest(RoomCase):
    """The fast path is a property of classify(): the same bytes give every
    receiver the same bytes with it and without it."""

    PIECES = [b"plain line", b"another one", b"caf\xc3\xa9", b"\xff\xfe", b"  spaced",
              b"/me waves", b"//slash", b"", b"   ", b"tab\there", b"esc\x1b[2J",
              b"x" * 40, b"quote \" and \\ back", b"/who", b"a/b", b"\xe2\x80\xae rtl"]

    def stream(self, rng):
        lines = [rng.choice(self.PIECES) + (b"\r\n" if rng.random() < 0.2 else b"\n")
                 for _ in range(rng.randrange(1, 40))]
        data = b"".join(lines)
        cuts = sorted(rng.sample(range(len(data)), min(len(data) - 1, rng.randrange(0, 6))))
        return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]

    def deliver(self, chunks, fast):
        room = self.make_room()
        sender, _ = self.member(room, "sender")
        text, text_far = self.member(room, "text")
        machine, machine_far = self.member(room, "machine", fmt=wire.JSON)
        flush_notices(room)
        text_far.read_until(lambda data: b"machine joined" in data)
        machine_far.read_until(lambda data: b"machine joined" in data)
        text_far.data = machine_far.data = b""
        session = self.session(room, sender)
        framer = protocol.LineFramer(32)
        for chunk in chunks:
            steps, too_long = protocol.classify(framer, chunk, fast=fast)
            session.handle(steps, too_long)
        room.say(sender, b"end\n", 1)
        return (text_far.read_until(lambda data: data.endswith(b"<sender> end\n")),
                machine_far.read_until(lambda data: b'"text":"end"}\n' in data))

    def test_random_reads_give_the_same_bytes_with_and_without_the_fast_path(self):
        rng = random.Random(6455)
        for run in range(30):
            chunks = self.stream(rng)
            with self.subTest(run=run, chunks=chunks):
                self.assertEqual(self.deliver(chunks, fast=True), self.deliver(chunks, fast=False))


class LagTest(unittest.TestCase):
    """Readers pause only while most members, from most addresses, lag."""

    def setUp(self):
        self.writer = Writer(threading.Lock(), 1 << 20, Quiet())   # its thread never runs
        self.addCleanup(self.writer.run)    # run() on a stopped writer just closes it
        self.writer.stopping = True
        self.socks = []

    def queue(self, host):
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        with self.writer.lock:
            return self.writer.open(ours, host)

    def lag(self, queue):
        with self.writer.lock:
            self.writer.put(queue, b"x" * (Writer.lag_bytes + 1))
        self.assertTrue(queue.lagging)

    def crowded(self):
        with self.writer.lock:
            self.writer.stopping = False
            try:
                return self.writer.crowded()
            finally:
                self.writer.stopping = True

    def test_stuck_connections_from_one_address_do_not_pause_the_room(self):
        stuck = [self.queue("192.0.2.66") for _ in range(5)]
        self.queue("192.0.2.1")
        self.queue("192.0.2.2")
        for item in stuck:
            self.lag(item)
        self.assertEqual(self.writer.lagging, 5)    # most members...
        self.assertFalse(self.crowded())            # ...but one address of three

    def test_a_room_where_most_addresses_lag_pauses(self):
        slow = [self.queue("192.0.2.%d" % i) for i in range(1, 4)]
        self.queue("192.0.2.9")
        for item in slow:
            self.lag(item)
        self.assertTrue(self.crowded())
        with self.writer.lock:
            for item in slow:
                self.writer._unlag(item)
        self.assertFalse(self.crowded())
        self.assertEqual(dict(self.writer.lagging_groups), {})

    def test_a_dropped_member_stops_counting_before_its_reader_notices(self):
        # Two healthy members lag behind three that were dropped as too
        # slow; the dropped ones' readers have not left yet (on Windows
        # they notice only at their next wake-up). The room is two members
        # now, both lagging: readers must pause, or the next burst drops
        # the healthy ones too.
        dropped = [self.queue("192.0.2.%d" % i) for i in range(1, 4)]
        healthy = [self.queue("192.0.2.%d" % i) for i in range(5, 7)]
        with self.writer.lock:
            for item in dropped:
                self.writer.end(item, "too slow")
        for item in healthy:
            self.lag(item)
        self.assertTrue(self.crowded())
        with self.writer.lock:
            for item in dropped:
                self.writer.retire(item)      # counted once, not twice
            self.assertEqual(sum(self.writer.open_groups.values()), 2)

    def test_one_address_alone_still_pauses_when_most_lag(self):
        # Everyone behind one address (a NAT, or the benchmark on loopback).
        items = [self.queue("127.0.0.1") for _ in range(3)]
        for item in items[:2]:
            self.lag(item)
        self.assertTrue(self.crowded())


class WriterTest(RoomCase):
    def test_a_broken_tls_peer_ends_only_its_own_connection(self):
        room = self.make_room()
        broken, broken_far = self.member(room, "broken")
        healthy, healthy_far = self.member(room, "healthy")

        def refuse(pieces):
            raise ssl.SSLEOFError("EOF occurred in violation of protocol")
        broken.queue.transform = refuse
        room.say(healthy, b"hello\n", 1)
        room.say(broken, b"still here\n", 1)
        broken_far.sock.settimeout(support.TIMEOUT)
        self.assertEqual(broken_far.sock.recv(100), b"")    # shut down: its reader sees the end
        self.assertEqual(broken.queue.reason, "TLS error")
        healthy_far.read_until(lambda data: b"<broken> still here" in data)

    def test_an_unexpected_error_ends_that_member_and_is_logged(self):
        room = self.make_room()
        bad, bad_far = self.member(room, "bad")
        good, good_far = self.member(room, "good")

        def bug(pieces):
            raise KeyError("a bug")
        bad.queue.transform = bug
        room.say(good, b"one\n", 1)
        room.say(bad, b"two\n", 1)
        good_far.read_until(lambda data: b"<bad> two" in data)
        support.wait_until(lambda: bad.queue.reason == "server error", message="the member ended")
        self.assertTrue(any("KeyError" in line and "Traceback" in line
                            for line in room.log.lines), room.log.lines)

    def test_a_partial_send_keeps_the_rest_in_order(self):
        pieces = [b"abc", b"defg", b"h"]
        self.assertEqual(unsent_part(pieces, 0), pieces)
        self.assertEqual([bytes(p) for p in unsent_part(pieces, 2)], [b"c", b"defg", b"h"])
        self.assertEqual([bytes(p) for p in unsent_part(pieces, 7)], [b"h"])


class ArrivalTest(unittest.TestCase):
    """The counts a connection holds between accept and admission are given
    back once, whichever thread gives them back, however often."""

    def test_settle_and_release_give_each_count_back_once(self):
        gate = admission.Gate(counts_handshakes=True)
        self.assertEqual(gate.begin_handshake("192.0.2.1", 0, 0, 0, 0), "")
        item = admission.Arrival(gate, "192.0.2.1", "")
        item.hold_slot()
        item.settle()
        item.settle()
        self.assertEqual(gate.pending, 0)
        item.release()
        item.release()
        self.assertEqual((gate.pending, dict(gate.handshaking)), (0, {}))

    def test_a_refused_connection_holds_no_handshake_slot(self):
        gate = admission.Gate(counts_handshakes=True)
        item = admission.Arrival(gate, "192.0.2.1", "server full")
        item.hold_slot()
        item.release()
        self.assertEqual((gate.pending, dict(gate.handshaking)), (0, {}))

    def test_freeing_a_slot_wakes_the_accept_thread(self):
        gate = admission.Gate(counts_handshakes=False)
        items = []
        for _ in range(gate.max_pending):
            items.append(admission.Arrival(gate, "192.0.2.1", ""))
            items[-1].hold_slot()
        woke = threading.Event()

        def accept_thread():
            gate.wait_for_slot()
            woke.set()

        waiter = threading.Thread(target=accept_thread, daemon=True)
        waiter.start()
        self.assertFalse(woke.wait(0.05))   # all slots taken: it waits
        items[0].settle()
        self.assertTrue(woke.wait(5), "the accept thread was not woken")
        waiter.join(5)


if __name__ == "__main__":
    unittest.main()
