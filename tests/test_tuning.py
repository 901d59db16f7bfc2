"""What differs between platforms: the Windows paths run here too, on
small numbers (a chunk of 3 sockets stands for Windows' 512)."""

import errno
import selectors
import socket
import time
import unittest

from broadcast_chat import server, startup, tuning


class SmallChunks(tuning.ChunkedSelectSelector):
    chunk = 3


def socket_pairs(test, count):
    pairs = [socket.socketpair() for _ in range(count)]
    for pair in pairs:
        for sock in pair:
            test.addCleanup(sock.close)
            sock.setblocking(False)
    return pairs


def fill(sock):
    """Write until the socket takes no more."""
    try:
        while True:
            sock.send(b"x" * 65536)
    except BlockingIOError:
        pass


class ChunkedSelectTest(unittest.TestCase):
    def setUp(self):
        self.selector = SmallChunks()
        self.addCleanup(self.selector.close)

    def test_writable_sockets_in_every_chunk_are_found(self):
        pairs = socket_pairs(self, 10)
        wake, other = socket_pairs(self, 1)[0]
        self.selector.register(wake, selectors.EVENT_READ, "wake")
        for i, (ours, _) in enumerate(pairs):
            if i != 8:
                fill(ours)
            self.selector.register(ours, selectors.EVENT_WRITE, i)
        ready = self.selector.select(0)
        self.assertEqual([key.data for key, _ in ready], [8])   # in the fourth chunk

    def test_a_late_chunk_wakes_a_wait_without_a_timeout(self):
        pairs = socket_pairs(self, 10)
        for ours, _ in pairs:
            fill(ours)
            self.selector.register(ours, selectors.EVENT_WRITE, ours)
        # Nothing is writable: a timed wait ends empty, at its timeout.
        started = time.monotonic()
        self.assertEqual(self.selector.select(0.1), [])
        self.assertGreaterEqual(time.monotonic() - started, 0.09)
        # The last socket's peer reads: a wait without timeout sees it.
        last, peer = pairs[-1]
        while True:
            try:
                peer.recv(1 << 20)
            except BlockingIOError:
                break
        ready = self.selector.select(None)
        self.assertEqual([key.data for key, _ in ready], [last])

    def test_the_wake_socket_is_waited_on(self):
        pairs = socket_pairs(self, 6)
        wake, other = socket_pairs(self, 1)[0]
        self.selector.register(wake, selectors.EVENT_READ, "wake")
        for ours, _ in pairs:
            fill(ours)
            self.selector.register(ours, selectors.EVENT_WRITE, ours)
        other.send(b"!")
        ready = self.selector.select(None)
        self.assertEqual([(key.data, events) for key, events in ready],
                         [("wake", selectors.EVENT_READ)])

    def test_the_default_is_uncapped_where_it_is_select(self):
        selector = tuning.many_socket_selector()
        self.addCleanup(selector.close)
        if isinstance(selectors.DefaultSelector(), selectors.SelectSelector):
            self.assertIsInstance(selector, tuning.ChunkedSelectSelector)
        else:
            self.assertNotIsInstance(selector, selectors.SelectSelector)


class ReadWaiterTest(unittest.TestCase):
    def select_waiter(self, sock, wake_every):
        """The Windows path: select() on the socket, woken every wake_every s."""
        class Waiter(tuning.ReadWaiter):
            __slots__ = ()
        Waiter.wake_every = wake_every
        waiter = Waiter(sock)
        waiter.poller = None
        return waiter

    def test_the_select_path_wakes_by_itself(self):
        ours, _ = socket_pairs(self, 1)[0]
        waiter = self.select_waiter(ours, 0.05)
        started = time.monotonic()
        waiter.wait()
        self.assertLess(time.monotonic() - started, 2.0)

    def test_the_select_path_returns_for_data_and_for_a_closed_socket(self):
        ours, theirs = socket_pairs(self, 1)[0]
        waiter = self.select_waiter(ours, 10.0)
        theirs.send(b"x")
        started = time.monotonic()
        waiter.wait()
        self.assertLess(time.monotonic() - started, 2.0)
        ours.close()
        waiter.wait()      # no exception: the recv() after it says what happened


class WakeIntervalTest(unittest.TestCase):
    def test_a_large_room_wakes_its_readers_less_often(self):
        class Waiter(tuning.ReadWaiter):
            __slots__ = ()
            wake_every = 1.0
        Waiter.room_size(10)
        self.assertEqual(Waiter.wake_every, 1.0)
        Waiter.room_size(1000)
        self.assertEqual(Waiter.wake_every, 1000 / Waiter.wakes_per_second)
        Waiter.room_size(3)
        self.assertEqual(Waiter.wake_every, 1.0)

    def test_with_poll_there_is_no_interval(self):
        class Waiter(tuning.ReadWaiter):
            __slots__ = ()
            wake_every = None
        Waiter.room_size(1000)
        self.assertIsNone(Waiter.wake_every)


class ErrorsTest(unittest.TestCase):
    def test_a_connection_reset_before_accept_is_not_a_descriptor_shortage(self):
        self.assertTrue(server.gone_before_accept(ConnectionResetError(errno.ECONNRESET, "x")))
        self.assertTrue(server.gone_before_accept(ConnectionAbortedError(errno.ECONNABORTED, "x")))
        not_connected = OSError(errno.ENOTCONN, "not connected")
        self.assertTrue(server.gone_before_accept(not_connected))
        self.assertFalse(server.gone_before_accept(OSError(errno.EMFILE, "too many open files")))

    def test_windows_access_denied_on_bind_says_in_use_or_reserved(self):
        exc = OSError(errno.EACCES, "access denied")
        exc.winerror = 10013
        self.assertIn("in use or reserved by Windows", startup.bind_error("127.0.0.1", 5000, exc))


if __name__ == "__main__":
    unittest.main()
