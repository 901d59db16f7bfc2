"""Lines typed or pasted at the prompt, sent in order under the server's
flood limit by a thread of their own, so that the prompt never waits; and
how what was typed, pasted or piped in is cut into lines."""

import collections
import os
import threading
import time
from typing import Callable, Deque, Iterator, List

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


def typed_lines(text: str) -> List[str]:
    """The lines of what was typed or pasted at once: split at newlines
    only, as the protocol ends a line (str.splitlines() would also split at
    U+2028, form feed and the like, which belong to the line)."""
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def pipe_lines(fd: int) -> Iterator[str]:
    """The lines of a pipe as UTF-8 text that keeps any other bytes as they
    are (surrogateescape), so a stray byte cannot end the client. Read with
    os.read: a daemon thread blocked in sys.stdin's buffered reader makes
    the interpreter abort at exit."""
    rest = b""
    while True:
        data = os.read(fd, 65536)
        if not data:
            break
        *lines, rest = (rest + data).split(b"\n")
        for line in lines:
            yield line.decode("utf-8", "surrogateescape")
    if rest:
        yield rest.decode("utf-8", "surrogateescape")
