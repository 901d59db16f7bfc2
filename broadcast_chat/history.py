"""The room's history: recent events kept in memory (Ring), what a member
is sent of them when it joins, resumes or asks (replay), and the optional
SQLite file that keeps them across restarts (HistoryFile).

Replayed events are the Event objects the room ordered: each renders its
history form once, and every member replaying it is queued the same bytes,
so ten thousand members resuming at once cost references, not copies.
"""

import collections
import json
import os
import sqlite3
import threading
import time
from typing import Callable, Deque, Dict, List, Optional, Tuple

from . import wire
from .tokens import NameTokens


class Ring:
    """The newest events, at most max_events ids and max_bytes of text;
    the oldest go first. Guarded by the room's lock."""

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.events = collections.deque()   # type: Deque[wire.Event]
        self.ids = 0            # ids held (a block holds several)
        self.size = 0           # bytes of their text

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, index: int) -> wire.Event:
        return self.events[index]

    def keep(self, event: wire.Event) -> None:
        if self.max_events <= 0:
            return
        events = self.events
        events.append(event)
        self.ids += event.count
        self.size += len(event.block) + len(event.text)
        while len(events) > 1 and (self.ids > self.max_events or self.size > self.max_bytes):
            old = events.popleft()
            self.ids -= old.count
            self.size -= len(old.block) + len(old.text)

    def first_id(self) -> int:
        """The oldest id held, 0 when empty."""
        return self.events[0].first if self.events else 0


Replay = collections.namedtuple("Replay", "pieces first last count missed")
"""What a member is sent of the history: pieces (shared bytes, oldest
first) holding count ids from first to last; missed: ids after the point
asked for that are no longer kept (or too many to send at once)."""


def replay(ring: Ring, after: int, last_id: int, fmt: str, max_bytes: int,
           not_before: float = 0.0) -> Replay:
    """The events of ring with ids after `after`, newest first until
    max_bytes, none older than not_before (a time; 0: any age)."""
    pieces = []     # type: List[bytes]
    size = 0
    first = last_id + 1
    for event in reversed(ring.events):
        if event.last <= after or event.time < not_before:
            break
        piece = event.render_after(fmt, after)
        if size + len(piece) > max_bytes:
            break
        size += len(piece)
        pieces.append(piece)
        first = max(event.first, after + 1)
    pieces.reverse()
    count = last_id - first + 1 if pieces else 0
    missed = max(0, first - after - 1) if pieces else max(0, last_id - after)
    return Replay(pieces, first, last_id, count, missed)


class SharedReplays:
    """Replays shared by members asking for the same point while no event
    comes: asked for twice, one is joined into one piece, so that ten
    thousand members resuming from one id (after a restart, a network cut)
    queue one piece each, and the room's lock is held for a dictionary
    look-up, not a walk through the ring. Pure (the room's lock guards it)."""

    kept = 64       # replays kept for members asking for the same point

    def __init__(self) -> None:
        self.replays = {}   # type: Dict[Tuple[int, str], Replay]
        self.last_id = 0    # the last id when they were made

    def clear(self) -> None:
        self.replays.clear()

    def get(self, ring: Ring, after: int, last_id: int, fmt: str, max_bytes: int,
            not_before: float) -> Replay:
        """replay(), shared."""
        if self.last_id != last_id:
            self.replays.clear()
            self.last_id = last_id
        key = (after, fmt)
        got = self.replays.get(key)
        if got is None:
            got = replay(ring, after, last_id, fmt, max_bytes, not_before)
            if len(self.replays) < self.kept:
                self.replays[key] = got
        elif len(got.pieces) > 1:
            got = self.replays[key] = got._replace(pieces=[b"".join(got.pieces)])
        return got


def replay_answer(got: Replay, fmt: str, why: str, now: float) -> List[bytes]:
    """What a member is sent of a replay, in its format: the events between
    two markers (why: "resume" says first how many were missed, "join" and
    "request" need events to say anything)."""
    out = []    # type: List[bytes]
    if why == "resume":
        text = "%d event%s while you were away" % (got.count, "" if got.count == 1 else "s")
        if got.missed:
            text = "%d events missed: older than the server keeps; %s" % (
                got.missed, ("the last %d follow" % got.count) if got.count else
                "none of them follow")
        out.append(wire.reply(fmt, "resumed", text, now, events=got.count,
                              missed=got.missed, first=got.first, last=got.last))
    if not got.pieces:
        return out
    if why != "resume":
        out.append(wire.reply(fmt, "history", "earlier messages: the last %d event%s" % (
            got.count, "" if got.count == 1 else "s"), now, events=got.count,
            missed=got.missed, first=got.first, last=got.last))
    out.extend(got.pieces)
    out.append(wire.reply(fmt, "history_end", "end of earlier messages", now, last=got.last))
    return out


class HistoryError(ValueError):
    """The history file cannot be used: said at start-up, in one line."""


class HistoryFile(threading.Thread):
    """The history in SQLite (WAL), written by this thread alone.

    The room hands it each event it keeps (add(), under the room's lock:
    a deque append, nothing more); the thread writes what came every
    `interval` seconds in one transaction, and drops what is past the
    retention bounds. A write that fails (a full disk) is logged once and
    retried; the room never waits for the file. The file also keeps the
    run's epoch and the secret of the reconnect tokens, so both survive a
    restart.
    """

    interval = 0.2          # seconds between two transactions
    prune_every = 5.0       # seconds between two deletions of old events
    retry_max = 100000      # events kept for a retry while writes fail

    SCHEMA = ("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
              "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, count INTEGER "
              "NOT NULL, time REAL NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, "
              "body BLOB NOT NULL)")

    def __init__(self, path: str, keep: int, max_age: float,
                 log: Callable[..., None]) -> None:
        """Opens and checks the file; raises HistoryError when it cannot be used."""
        super().__init__(name="history-file", daemon=True)
        self.path = path
        self.keep = keep
        self.max_age = max_age
        self.log = log
        self.waiting = collections.deque()  # type: Deque[wire.Event]
        self.retry = []         # type: List[wire.Event]
        self.failing = False
        self.stopped = threading.Event()
        self.written = 0        # events written (tests and the log)
        self.db = None     # type: Optional[sqlite3.Connection]
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA busy_timeout=2000")
            mode = self.db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            check = self.db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError("damaged: " + check)
            self.db.execute("PRAGMA synchronous=NORMAL")
            for statement in self.SCHEMA:
                self.db.execute(statement)
            self.epoch = self._meta("epoch", lambda: os.urandom(6).hex())
            self.secret = bytes.fromhex(self._meta("secret", lambda: os.urandom(32).hex()))
        except sqlite3.OperationalError as exc:     # cannot open, locked, read-only
            self._close_db()
            raise HistoryError("cannot use the history file %s: %s" % (path, exc))
        except (sqlite3.Error, ValueError) as exc:  # not a database, or damaged
            self._close_db()
            raise HistoryError("cannot use the history file %s: %s (move it away to start "
                               "afresh)" % (path, exc))
        if mode.lower() != "wal":
            log("error", "history file %s: WAL mode refused (%s): writes may wait for readers"
                % (path, mode))

    def _close_db(self) -> None:
        """Let go of a file that cannot be used (Windows cannot move or
        delete a file still open)."""
        if self.db is not None:
            self.db.close()
            self.db = None

    def _meta(self, key: str, make: Callable[[], str]) -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is not None:
            return row[0]
        value = make()
        self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
        return value

    def load(self, now: float) -> Tuple[List[wire.Event], int]:
        """The events within the retention bounds, and the last id ever given."""
        try:
            row = self.db.execute("SELECT MAX(id + count - 1) FROM events").fetchone()
            last_id = row[0] or 0
            rows = self.db.execute(
                "SELECT id, count, time, kind, name, body FROM events WHERE id + count - 1 > ? "
                "AND time >= ? ORDER BY id", (last_id - self.keep,
                                          now - self.max_age if self.max_age else 0.0))
            events = [event_from_row(*row) for row in rows]
        except (sqlite3.Error, ValueError, TypeError) as exc:
            raise HistoryError("cannot read the history file %s: %s (move it away to start "
                               "afresh)" % (self.path, exc))
        return events, last_id

    def add(self, event: wire.Event) -> None:
        """Take an event to write (any thread; the room calls it under its lock)."""
        self.waiting.append(event)

    def run(self) -> None:
        pruned = time.monotonic()
        while not self.stopped.wait(self.interval):
            self.write_waiting()
            if time.monotonic() - pruned >= self.prune_every and not self.failing:
                self.prune()
                pruned = time.monotonic()
        self.write_waiting()

    def write_waiting(self) -> bool:
        """Write every event waiting, in one transaction; False if it failed."""
        batch, self.retry = self.retry, []
        take = self.waiting.popleft
        try:
            while True:
                batch.append(take())
        except IndexError:
            pass
        if not batch:
            return True
        # What retention would delete at once is not written: under a flood
        # most of a batch is past --history-keep before it reaches the file.
        horizon = batch[-1].last - self.keep
        if batch[0].last <= horizon:
            batch = [event for event in batch if event.last > horizon]
        try:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO events (id, count, time, kind, name, "
                                "body) VALUES (?, ?, ?, ?, ?, ?)", map(event_row, batch))
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self.retry = batch[-self.retry_max:]
            if not self.failing:
                self.failing = True
                self.log("error", "cannot write the history file %s: %s; the chat goes on, "
                                  "history is kept in memory and written when it can be"
                         % (self.path, exc))
            return False
        self.written += len(batch)
        if self.failing:
            self.failing = False
            self.log("info", "the history file %s is written again" % self.path)
        return True

    def prune(self) -> None:
        """Drop events past the retention bounds (count of ids, age)."""
        try:
            row = self.db.execute("SELECT MAX(id + count - 1) FROM events").fetchone()
            self.db.execute("DELETE FROM events WHERE id + count - 1 <= ?",
                            ((row[0] or 0) - self.keep,))
            if self.max_age:
                self.db.execute("DELETE FROM events WHERE time < ?",
                                (time.time() - self.max_age,))
        except sqlite3.Error:
            pass    # the next write says what is wrong, once

    def close(self) -> None:
        """Write what waits, then close the file."""
        self.stopped.set()
        if self.is_alive():
            self.join(10.0)
        else:
            self.write_waiting()
        try:
            self.db.close()
        except sqlite3.Error:
            pass


def event_row(event: wire.Event) -> Tuple:
    if event.kind == "message":
        body = event.block
    elif event.kind == "action":
        body = event.text.encode("utf-8")
    else:
        notice = event.notice
        body = json.dumps([notice.kind, notice.names, notice.others,
                           notice.detail]).encode("utf-8")
    return event.first, event.count, event.time, event.kind, event.name, body


def event_from_row(first: int, count: int, when: float, kind: str, name: str,
                   body: bytes) -> wire.Event:
    body = bytes(body)
    if kind == "message":
        return wire.Event(first, when, kind, name, block=body, count=count)
    if kind == "action":
        return wire.Event(first, when, kind, name, text=body.decode("utf-8"))
    notice = wire.Notice(*json.loads(body.decode("utf-8")))
    return wire.Event(first, when, kind, name, notice=notice)


def open_history_file(config, log: Callable[..., None]) -> Optional[HistoryFile]:
    """The server's history file (a ServerConfig's), or None without one."""
    if not config.history_file:
        return None
    return HistoryFile(config.history_file, config.history_keep, config.history_max_age, log)


def room_options(config, store: Optional[HistoryFile]) -> dict:
    """The Room's history keywords for a ServerConfig: with a file, its
    epoch, token secret and events; without, a new epoch."""
    secret = store.secret if store is not None else None
    options = {"backlog": config.history, "history_keep": config.history_keep,
               "history_max_age": config.history_max_age, "store": store,
               "epoch": store.epoch if store is not None else os.urandom(6).hex(),
               "tokens": NameTokens(secret, config.name_grace) if config.name_grace else None}
    if store is not None:
        options["restored"] = store.load(time.time())
    return options
