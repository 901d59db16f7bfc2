"""The events this server hands to Redis, on the publishing connection.

Each batch of events goes out as one script call. Over plain TCP several
calls are in flight at once and a thread of their own reads the replies,
in order: a line that comes while a batch is on its way goes out at
once, instead of waiting for that batch's reply. Over TLS one call is in
flight, and its sender waits for the reply: an SSLSocket cannot read in
one thread while another writes on it.

Whoever sends holds send_lock: the publisher thread, or a sender's reader
(flush(), which saves its line the hand-off to that thread). A failed
connection is handed to lost(); the events that were on their way are
still the cluster's, which sends them again once it is back (the script
appends an event once, by its sequence number).
"""

import collections
import threading
from typing import Any, Callable, Deque, List, Optional, Sequence, Tuple

from . import resp


class Publisher:
    """The publishing connection and the calls in flight on it.

    The owner (cluster.Cluster) gives it, as functions:
    - generation(): the owner's count of times joined, or None while
      Redis is out of reach (with lock held);
    - take(): the next batch of events and the floor for its ids, an
      empty batch when none waits (with lock held);
    - command(batch, floor): the script call that appends them;
    - connect(): a new connection, connected and the script loaded;
    - published(batch, firsts): the ids Redis gave them;
    - lost(exc, generation): a connection of that generation failed.
    """

    in_flight_max = 8   # calls sent and not answered, at most (plain TCP)

    def __init__(self, lock: Any, pipelined: bool, generation: Callable[[], Optional[int]],
                 take: Callable[[], Tuple[List[Any], int]],
                 command: Callable[[List[Any], int], Sequence[Any]],
                 connect: Callable[[], resp.Redis],
                 published: Callable[[List[Any], List[int]], None],
                 lost: Callable[[Exception, int], None]) -> None:
        self.lock = lock
        self.pipelined = pipelined
        self.generation = generation
        self.take = take
        self.command = command
        self.connect = connect
        self.published = published
        self.lost = lost
        self.send_lock = threading.Lock()
        self.conn = None            # type: Optional[resp.Redis]  (send_lock)
        self.conn_generation = 0
        # Guarded by lock: the calls sent, oldest first, with their connection.
        self.in_flight = collections.deque()    # type: Deque[Tuple[List[Any], resp.Redis, int]]
        self.replied = threading.Condition(lock)
        self.stopped = False

    def flush(self, waiting: Callable[[], bool]) -> None:
        """Send what waits from this thread, unless another is sending: that
        one looks again once it is done. waiting(): whether anything does."""
        while waiting():
            if not self.send_lock.acquire(False):
                return
            try:
                self.send_waiting()
            finally:
                self.send_lock.release()

    def send_all(self) -> None:
        """The publisher thread's turn: send what waits, waiting for others."""
        with self.send_lock:
            self.send_waiting()

    def forget(self) -> None:
        """The calls in flight are old news (their connection failed, or
        the cluster stopped: the owner has them still). With lock held."""
        assert self.lock.locked()
        self.in_flight.clear()
        self.replied.notify_all()

    def stop(self) -> None:
        """With lock held: the reply thread ends."""
        self.stopped = True
        self.forget()

    def close(self) -> None:
        with self.send_lock:
            if self.conn is not None:
                self.conn.close()

    def send_waiting(self) -> None:
        """Send the waiting events in batches until none wait (send_lock held)."""
        while True:
            with self.lock:
                generation = self.generation()
            if generation is None:
                return
            conn = self.conn
            if conn is None or self.conn_generation != generation:
                if conn is not None:
                    conn.close()    # of an earlier time joined
                self.conn = None
                try:
                    conn = self.connect()
                except (resp.RedisConnectionError, resp.RedisError) as exc:
                    self.lost(exc, generation)
                    return
                self.conn, self.conn_generation = conn, generation
            with self.lock:
                while (self.pipelined and len(self.in_flight) >= self.in_flight_max
                       and self.generation() == generation):
                    self.replied.wait()
                if self.generation() != generation:
                    continue
                batch, floor = self.take()
                if not batch:
                    return
                if self.pipelined:
                    self.in_flight.append((batch, conn, generation))
                    self.replied.notify_all()
            command = self.command(batch, floor)
            try:
                if self.pipelined:
                    conn.send([command])
                    continue
                firsts = conn.call(*command)
            except (resp.RedisConnectionError, resp.RedisError) as exc:
                conn.close()
                self.lost(exc, generation)
                return
            self.published(batch, firsts)

    def read_replies(self) -> None:
        """The reply thread (plain TCP): each call's reply, in order."""
        while True:
            with self.lock:
                while not self.in_flight and not self.stopped:
                    self.replied.wait()
                if self.stopped:
                    return
                entry = self.in_flight[0]
            batch, conn, generation = entry
            try:
                firsts = conn.receive(1)[0]
                if isinstance(firsts, resp.RedisError):
                    raise firsts
            except (resp.RedisConnectionError, resp.RedisError) as exc:
                conn.close()
                self.lost(exc, generation)
                with self.lock:
                    if self.in_flight and self.in_flight[0] is entry:
                        self.forget()
                continue
            with self.lock:
                current = bool(self.in_flight) and self.in_flight[0] is entry
                if current:
                    self.in_flight.popleft()
                    self.replied.notify_all()
            if current:
                self.published(batch, firsts)
