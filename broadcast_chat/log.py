"""The server's log: one line per event on standard output."""

import sys
import threading
import time
from typing import List

from .protocol import TokenBucket


class Log(threading.Thread):
    """One line per event: time, event, details.

    Lines are written by this thread, many at a time: a write and a flush per
    line from each reader thread costs a third of a connection under churn.
    It writes at most every `batch` seconds, so that it is woken once per
    batch rather than once per line. Text the stream cannot encode is
    replaced, never lost with the rest of its batch.
    """

    batch = 0.05
    rate = 200.0        # lines a second past the burst; more are counted, not written
    burst = 2000

    def __init__(self, stream=None, clock=time.monotonic) -> None:
        super().__init__(name="log", daemon=True)
        self.stream = stream or sys.stdout
        self.waiting = []       # type: List[str]
        self.closed = False
        self.changed = threading.Condition()
        self.bucket = TokenBucket(self.rate, self.burst, clock)
        self.suppressed = 0

    def __call__(self, event: str, *details: str) -> None:
        """Log one event. Under a storm (thousands of renames a second) the
        log stays bounded: past the budget, lines are counted, and the count
        is written once lines may be written again."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        line = "%s %s %s\n" % (stamp, event, " ".join(details))
        with self.changed:
            if not self.bucket.take(1):
                self.suppressed += 1
                return
            if self.suppressed:
                self.waiting.append("%s info %d log lines not written: too many at once\n"
                                    % (stamp, self.suppressed))
                self.suppressed = 0
            self.waiting.append(line)
            if len(self.waiting) <= 2:
                self.changed.notify()

    def run(self) -> None:
        while True:
            with self.changed:
                while not self.waiting and not self.closed:
                    self.changed.wait()
                lines, self.waiting = self.waiting, []
                closed = self.closed
            if lines:
                self.write("".join(lines))
            if closed:
                return
            time.sleep(self.batch)   # let lines gather: one wake-up per batch

    def write(self, text: str) -> None:
        stream = self.stream
        try:
            try:
                stream.write(text)
            except UnicodeEncodeError:
                encoding = getattr(stream, "encoding", None) or "ascii"
                stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
            stream.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        """Write what is left, then stop."""
        with self.changed:
            self.closed = True
            self.changed.notify()
        self.join(2.0)
