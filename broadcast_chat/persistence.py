"""clients.json kept equal to the room, by a thread of its own."""

import threading
from typing import Callable, Dict, List

from .jsonfile import write_json_atomic


class ClientsFile(threading.Thread):
    """Rewrites the clients file when the room changed, at most once per
    interval, so ten thousand joins are a handful of writes."""

    def __init__(self, path: str, interval: float, snapshot: Callable[[], List[Dict]],
                 log: Callable[..., None]) -> None:
        super().__init__(name="clients-file", daemon=True)
        self.path = path
        self.interval = interval
        self.snapshot = snapshot
        self.log = log
        self.dirty = threading.Event()
        self.stopped = threading.Event()
        self.failing = False

    def changed(self) -> None:
        """The room changed: write the file soon. Any thread may call it."""
        self.dirty.set()

    def write(self, records: List[Dict]) -> bool:
        try:
            write_json_atomic(self.path, records)
        except OSError as exc:
            if not self.failing:
                self.log("error", "cannot write %s: %s; will retry" % (self.path, exc.strerror or exc))
                self.failing = True
            return False
        if self.failing:
            self.log("info", "%s is written again" % self.path)
            self.failing = False
        return True

    def run(self) -> None:
        while not self.stopped.is_set():
            self.dirty.wait()
            self.dirty.clear()
            if self.stopped.is_set():
                return
            if not self.write(self.snapshot()):
                self.dirty.set()
            self.stopped.wait(self.interval)

    def stop(self) -> None:
        self.stopped.set()
        self.dirty.set()
        self.join(2.0)
