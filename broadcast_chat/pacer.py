"""Lines typed or pasted at the prompt, sent in order under the server's
flood limit by a thread of their own, so that the prompt never waits."""

import collections
import threading
import time
from typing import Callable, Deque

from .protocol import TokenBucket


class Pacer:
    """A queue of lines and the thread that sends them, at most as fast as
    bucket allows: send(text) sends one line. The start of a backlog (more
    lines than the bucket holds: a paste) is reported once, through
    tell(waiting), until the queue is empty again."""

    poll = 0.01     # how often a dry bucket is looked at again

    def __init__(self, bucket: TokenBucket, send: Callable[[str], object],
                 tell: Callable[[int], None]) -> None:
        self.bucket = bucket
        self.send = send
        self.tell = tell
        self.cond = threading.Condition()
        self.waiting = collections.deque()     # type: Deque[str]
        self.sending = False    # a line taken from waiting and not yet sent; needs cond
        thread = threading.Thread(target=self.run, name="sender", daemon=True)
        thread.start()

    def put(self, text: str) -> None:
        with self.cond:
            self.waiting.append(text)
            self.cond.notify_all()

    def clear(self) -> int:
        """Drop the lines not sent yet; how many."""
        with self.cond:
            dropped = len(self.waiting)
            self.waiting.clear()
            self.cond.notify_all()
            return dropped

    def pending(self) -> int:
        with self.cond:
            return len(self.waiting) + self.sending

    def wait_sent(self, timeout: float) -> bool:
        """Wait until every line put is sent; False if timeout passed first."""
        with self.cond:
            return self.cond.wait_for(lambda: not self.waiting and not self.sending, timeout)

    def run(self) -> None:
        paced = False   # the bucket ran dry since the queue was last empty
        while True:
            with self.cond:
                if not self.waiting:
                    paced = False
                while not self.waiting:
                    self.cond.wait()
                text = self.waiting.popleft()
                self.sending = True
                left = len(self.waiting)
            if self.bucket.take(1) == 0:
                if not paced:
                    paced = True
                    self.tell(left + 1)
                while self.bucket.take(1) == 0:
                    time.sleep(self.poll)       # pacing, not synchronisation
            try:
                self.send(text)
            finally:
                with self.cond:
                    self.sending = False
                    self.cond.notify_all()
