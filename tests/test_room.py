"""Room and Outbox directly, over socket pairs: rules that an end-to-end
test could only reach by racing the server."""

import socket
import ssl
import threading
import unittest

import server


class Quiet:
    def __call__(self, *args):
        pass


def member(test: unittest.TestCase, host: str) -> server.Member:
    """A member on one end of a socket pair; the other end (test.peer_ends)
    is never read."""
    ours, theirs = socket.socketpair()
    test.addCleanup(ours.close)
    test.addCleanup(theirs.close)
    test.peer_ends[ours] = theirs
    return server.Member(ours, (host, 40000))


class LagTest(unittest.TestCase):
    """Readers pause only while most members, from most addresses, lag."""

    def setUp(self):
        self.room = server.Room(queue_limit=1 << 20, max_clients=0, max_per_address=0,
                                log=Quiet())
        self.addCleanup(self.room.outbox.release)   # its thread never runs
        self.peer_ends = {}

    def join(self, host):
        item = member(self, host)
        self.room.members[item] = None
        self.room.per_host[host] += 1
        return item

    def make_lag(self, item):
        with self.room.lock:
            self.room._enqueue(item, b"x" * (server.LAG_BYTES + 1))
        self.assertTrue(item.lagging)

    def test_stuck_connections_from_one_address_do_not_pause_the_room(self):
        stuck = [self.join("192.0.2.66") for _ in range(5)]
        self.join("192.0.2.1")
        self.join("192.0.2.2")
        for item in stuck:
            self.make_lag(item)
        self.assertEqual(self.room.lagging, 5)      # most members...
        self.assertFalse(self.room._crowded())      # ...but one address of three

    def test_a_room_where_most_addresses_lag_pauses(self):
        slow = [self.join("192.0.2.%d" % i) for i in range(1, 4)]
        self.join("192.0.2.9")
        for item in slow:
            self.make_lag(item)
        self.assertTrue(self.room._crowded())
        with self.room.lock:
            for item in slow:
                self.room._unlag(item)
        self.assertFalse(self.room._crowded())
        self.assertEqual(dict(self.room.lagging_hosts), {})

    def test_one_address_alone_still_pauses_when_most_lag(self):
        # Everyone behind one address (a NAT, or the benchmark on loopback).
        items = [self.join("127.0.0.1") for _ in range(3)]
        for item in items[:2]:
            self.make_lag(item)
        self.assertTrue(self.room._crowded())


class BrokenCodec:
    def encrypt(self, data):
        raise ssl.SSLEOFError("EOF occurred in violation of protocol")


class OutboxWriteTest(unittest.TestCase):
    def test_a_broken_tls_peer_ends_only_its_own_connection(self):
        self.peer_ends = {}
        item = member(self, "192.0.2.7")
        item.tls = BrokenCodec()
        item.unsent = [b"left over"]
        server.Outbox._write(item, [b"hello\n"])    # must not raise
        self.assertEqual(item.unsent, [])
        theirs = self.peer_ends[item.sock]
        theirs.settimeout(5)
        self.assertEqual(theirs.recv(100), b"")     # shut down: the handler sees the end

    def test_a_partial_send_keeps_the_rest_in_order(self):
        pieces = [b"abc", b"defg", b"h"]
        self.assertEqual(server.unsent_part(pieces, 0), pieces)
        self.assertEqual([bytes(p) for p in server.unsent_part(pieces, 2)], [b"c", b"defg", b"h"])
        self.assertEqual([bytes(p) for p in server.unsent_part(pieces, 7)], [b"h"])


if __name__ == "__main__":
    unittest.main()


class ArrivalTest(unittest.TestCase):
    """The counts a connection holds between accept and admission are given
    back once, whichever thread gives them back, however often."""

    class Server:
        def __init__(self):
            self.pending = 0
            self.pending_changed = threading.Condition()
            self.handshake_lock = threading.Lock()
            self.ended = []

        def end_handshake(self, host):
            self.ended.append(host)

    def arrival(self, refusal=""):
        fake = self.Server()
        item = server.Arrival(fake, "192.0.2.1", refusal)
        fake.pending += 1
        item.pending = True
        return fake, item

    def test_settle_and_release_give_each_count_back_once(self):
        fake, item = self.arrival()
        item.settle()
        item.settle()
        self.assertEqual(fake.pending, 0)
        item.release()
        item.release()
        self.assertEqual(fake.pending, 0)
        self.assertEqual(fake.ended, ["192.0.2.1"])

    def test_a_refused_connection_holds_no_handshake_slot(self):
        fake, item = self.arrival(refusal="server full")
        item.release()
        self.assertEqual((fake.pending, fake.ended), (0, []))

    def test_freeing_a_slot_wakes_the_accept_thread(self):
        fake = self.Server()
        items = []
        for _ in range(server.MAX_PENDING):
            fake.pending += 1
            items.append(server.Arrival(fake, "192.0.2.1", ""))
            items[-1].pending = True
        woke = threading.Event()

        def accept_thread():
            with fake.pending_changed:
                while fake.pending >= server.MAX_PENDING:
                    fake.pending_changed.wait()
            woke.set()

        waiter = threading.Thread(target=accept_thread, daemon=True)
        waiter.start()
        self.assertFalse(woke.wait(0.05))   # all slots taken: it waits
        items[0].settle()
        self.assertTrue(woke.wait(5), "the accept thread was not woken")
        waiter.join(5)
