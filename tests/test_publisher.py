"""publisher.Publisher against a real redis-server: calls in flight, their
replies in order, and a connection lost with calls on their way."""

import collections
import threading
import unittest

from broadcast_chat import resp
from broadcast_chat.publisher import Publisher
from tests.redisbed import RedisServer, needs_redis
from tests.support import wait_until


class Owner:
    """What a Cluster gives a Publisher: batches of one value each; the
    first value "hold" is a BLPOP that keeps the connection's later
    replies back until the test pushes to "go"."""

    def __init__(self, redis: RedisServer, pipelined: bool = True) -> None:
        self.redis = redis
        self.lock = threading.Lock()
        self.queue = collections.deque()
        self.up = 1             # the generation, None while "out of reach"
        self.published = []
        self.lost = []
        self.publisher = Publisher(self.lock, pipelined, lambda: self.up, self.take,
                                   self.command, self.connect, self.on_published, self.on_lost)

    def take(self):
        assert self.lock.locked()
        return ([self.queue.popleft()] if self.queue else []), 0

    @staticmethod
    def command(batch, floor):
        if batch[0] == "hold":
            return ["BLPOP", "go", "10"]
        return ["RPUSH", "log", batch[0]]

    def connect(self):
        conn = self.redis._make_client(timeout=10)
        conn.connect()
        return conn

    def on_published(self, batch, reply):
        self.published.append((batch[0], reply))

    def on_lost(self, exc, generation):
        with self.lock:
            self.lost.append((type(exc).__name__, generation))
            if generation == self.up:
                self.up = None
                self.publisher.forget()

    def start_replies(self):
        thread = threading.Thread(target=self.publisher.read_replies, daemon=True)
        thread.start()
        return thread

    def stop(self, thread):
        with self.lock:
            self.publisher.stop()
        self.publisher.close()
        thread.join(10)


@needs_redis
class PublisherTest(unittest.TestCase):
    def setUp(self):
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.close)

    def test_calls_go_out_without_waiting_for_replies_which_come_in_order(self):
        owner = Owner(self.redis)
        owner.publisher.in_flight_max = 4
        replies = owner.start_replies()
        self.addCleanup(owner.stop, replies)
        owner.queue.extend(["hold", "a", "b"])
        owner.publisher.send_all()      # returns with all three on their way
        self.assertEqual(len(owner.publisher.in_flight), 3)
        self.assertEqual(owner.published, [])
        # Two more: the fourth goes out, the fifth waits for a reply.
        owner.queue.extend(["c", "d"])
        sender = threading.Thread(target=owner.publisher.send_all, daemon=True)
        sender.start()
        wait_until(lambda: list(owner.queue) == ["d"] and len(owner.publisher.in_flight) == 4,
                   message="four calls in flight, one waiting")
        self.assertTrue(sender.is_alive())
        self.redis.client().call("RPUSH", "go", "1")
        sender.join(10)
        wait_until(lambda: len(owner.published) == 5, message="every reply")
        self.assertEqual(owner.published, [("hold", [b"go", b"1"]), ("a", 1), ("b", 2),
                                           ("c", 3), ("d", 4)])
        self.assertEqual(self.redis.client().call("LRANGE", "log", 0, -1),
                         [b"a", b"b", b"c", b"d"])
        self.assertEqual(owner.lost, [])

    def test_without_pipelining_the_sender_waits_for_each_reply(self):
        owner = Owner(self.redis, pipelined=False)
        self.addCleanup(owner.publisher.close)
        owner.queue.extend(["hold", "a"])
        sender = threading.Thread(target=owner.publisher.send_all, daemon=True)
        sender.start()
        wait_until(lambda: list(owner.queue) == ["a"], message="the first call sent")
        self.assertEqual(owner.publisher.in_flight, collections.deque())
        self.assertTrue(sender.is_alive())      # waiting for the BLPOP's reply
        self.redis.client().call("RPUSH", "go", "1")
        sender.join(10)
        self.assertEqual(owner.published, [("hold", [b"go", b"1"]), ("a", 1)])

    def test_a_connection_lost_with_calls_on_their_way_is_told_once_and_forgotten(self):
        owner = Owner(self.redis)
        replies = owner.start_replies()
        self.addCleanup(owner.stop, replies)
        owner.queue.extend(["hold", "a"])
        owner.publisher.send_all()
        self.assertEqual(len(owner.publisher.in_flight), 2)
        self.redis.kill()
        wait_until(lambda: owner.lost, message="the loss told")
        self.assertEqual(owner.lost, [("RedisConnectionError", 1)])
        self.assertEqual(owner.publisher.in_flight, collections.deque())
        self.assertEqual(owner.published, [])
        # Back, under a new generation: a new connection, the reply thread reads on.
        self.redis.restart()
        with owner.lock:
            owner.up = 2
        owner.queue.append("b")
        owner.publisher.send_all()
        wait_until(lambda: owner.published == [("b", 1)], message="b published")
        self.assertEqual(owner.lost, [("RedisConnectionError", 1)])

    def test_a_connection_that_cannot_be_made_is_lost_at_once(self):
        owner = Owner(self.redis)
        self.redis.kill()
        owner.queue.append("a")
        owner.publisher.send_all()
        self.assertEqual(owner.lost, [("RedisConnectionError", 1)])
        self.assertEqual(list(owner.queue), ["a"])      # not taken: still the owner's


if __name__ == "__main__":
    unittest.main()
