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
        self.conn_generation = 0
        # Guarded by lock: the connection (the reply thread reads it while
        # it is set), the calls sent on it, oldest first.
        self.conn = None            # type: Optional[resp.Redis]
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
        """The connection and the calls in flight on it are old news (it
        failed, or the cluster stopped: the owner has the events still).
        With lock held. Closing it wakes whoever waits on it."""
        assert self.lock.locked()
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.in_flight.clear()
        self.replied.notify_all()

    def stop(self) -> None:
        """With lock held: the reply thread ends."""
        self.stopped = True
        self.forget()

    def close(self) -> None:
        with self.lock:
            self.forget()

    def send_waiting(self) -> None:
        """Send the waiting events in batches until none wait (send_lock held)."""
        while True:
            with self.lock:
                generation = self.generation()
                conn = self.conn
                if conn is not None and self.conn_generation != generation:
                    self.forget()   # of an earlier time joined
                    conn = None
            if generation is None:
                return
            if conn is None:
                try:
                    conn = self.connect()
                except (resp.RedisConnectionError, resp.RedisError) as exc:
                    self.lost(exc, generation)
                    return
                if self.pipelined:
                    # Replies wait as long as Redis takes: the control
                    # connection finds a Redis gone, and then forget()
                    # closes this one.
                    conn.settimeout(None)
                with self.lock:
                    if self.generation() != generation:
                        conn.close()
                        continue
                    self.conn, self.conn_generation = conn, generation
                    self.replied.notify_all()
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
            command = self.command(batch, floor)
            try:
                if self.pipelined:
                    conn.send([command])
                    continue
                firsts = conn.call(*command)
            except (resp.RedisConnectionError, resp.RedisError) as exc:
                with self.lock:
                    if self.conn is conn:
                        self.forget()
                self.lost(exc, generation)
                return
            self.published(batch, firsts)

    def read_replies(self) -> None:
        """The reply thread (plain TCP): each call's reply, in order. It
        waits in the connection's recv(), not for a call to be sent: a
        reply then costs one wake-up."""
        while True:
            with self.lock:
                while self.conn is None and not self.stopped:
                    self.replied.wait()
                if self.stopped:
                    return
                conn, generation = self.conn, self.conn_generation
            try:
                firsts = conn.receive(1)[0]
                if isinstance(firsts, resp.RedisError):
                    raise firsts
            except (resp.RedisConnectionError, resp.RedisError) as exc:
                conn.close()
                with self.lock:
                    ours = self.conn is conn
                    if ours:
                        self.forget()
                if ours:
                    self.lost(exc, generation)
                continue
            with self.lock:
                entry = self.in_flight[0] if self.in_flight else None
                current = entry is not None and entry[1] is conn
                if current:
                    self.in_flight.popleft()
                    self.replied.notify_all()
            if current:
                self.published(entry[0], firsts)
