"""One room across several servers, through Redis.

Every server of a cluster hands the events its members make (lines, actions,
folded notices) to Redis, where one script gives them the room's next ids
and appends them to one Stream; every server, this one included, reads the
Stream back in order and delivers what it reads. So all members everywhere
see one order, a sender's lines keep theirs, and the Stream is the room's
history: a member resumes on any server. The Stream, not pub/sub, carries
live delivery: a reader that was cut off reads on from the last id it had,
so nothing is skipped unseen, and a gap (the Stream trimmed, Redis restarted
empty) is a gap in the ids, told to members as events missed.

Names are claimed in Redis, under every key of the name (names.name_keys),
by a script that also lists the member under its server; a server's presence
is a key that expires, so the names and members of a server killed outright
are free again within presence_ttl, and another server announces that they
left. Private messages go to a Stream of the target's server.

While Redis cannot be reached, this server's room goes on alone: events are
shown here without ids and sent on when Redis answers again (a sequence
number per server keeps the script from appending one twice), names are
checked here only. Three connections: the publisher's (taken with
publish_lock, by the publisher thread or a sender's reader), the reader's
(its thread's alone, blocked in XREAD) and the control one (control_lock:
presence, names, /who, whispers).
"""

import collections
import functools
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import resp, wire
from .clusterdata import (CLAIM, RELEASE, SCRIPTS, Delivery, InOrder, Keys, Outgoing,
                          entry_event, follow, node_name, publish_args, stale_names)
from .member import LEFT

UP = "up"           # connected: events go through Redis
DOWN = "down"       # not (yet, or not any more): the room goes on alone
STOPPED = "stopped"


class Cluster:
    """This server's part in a room shared through Redis."""

    HERE = "\0here"         # claim(): the name is held by a member of this server
    heartbeats = 5          # refreshes of this server's presence within its lifetime
    read_block = 1.0        # seconds one XREAD waits for events
    read_count = 1000       # most entries one XREAD takes
    batch_max = 256         # most events one publish carries
    busy_bytes = 1 << 20    # text waiting for Redis before lines wait (the room is busy)
    batch_bytes = 1 << 20   # most text one publish carries
    queue_max = 20000       # events kept to send on while Redis is out of reach
    inbox_max = 1000        # private messages a server's inbox keeps
    timeout = 2.0           # seconds a Redis command may take

    def __init__(self, room: Any, address: resp.RedisAddress, password: Optional[str],
                 log: Callable[..., None], keep: int = 1000, prefix: str = "broadcast:",
                 node: Optional[str] = None, ssl_context: Any = None,
                 presence_ttl: float = 5.0) -> None:
        """keep: events the Stream keeps (about); prefix: of every key;
        presence_ttl: seconds after which a server not heard of is gone."""
        self.room = room
        self.lock = room.lock
        self.address = address
        self.password = password
        self.ssl_context = ssl_context
        self.log = log
        self.keep = max(1, keep)
        self.node = node or node_name()
        self.presence_ttl = presence_ttl
        self.heartbeat = presence_ttl / self.heartbeats
        self.url = "%s://%s/%d" % ("rediss" if address.tls else "redis",
                                   resp.describe(address), address.db)
        self.keys = Keys(prefix, self.node)
        # Guarded by lock (the room's):
        self.state = DOWN
        self.joined = False     # the room took the cluster's epoch and history
        self.seq = 0
        self.queue = collections.deque()    # type: Deque[Outgoing]  to publish, in order
        self.queued_bytes = 0   # text of the events in queue
        self.pending = {}       # type: Dict[int, Outgoing]  by seq: not read back yet
        self.order = InOrder()  # what is delivered here (deliver_lock)
        self.deliver_lock = threading.Lock()    # deliveries in id order, from two threads
        self.generation = 0     # times joined: a connection of an earlier time failing is old news
        self.followed = []      # type: List[wire.Notice]  the others', read since a beat asked
        self.changed = threading.Condition(self.lock)
        # Read by the room without the lock (replaced whole, never changed):
        self.elsewhere = []     # type: List[str]  names on the other servers
        self.local = {}         # type: Dict[int, Any]  serial -> member, for whispers in
        self.control = self._redis(self.timeout)
        self.control_lock = threading.Lock()
        self.publisher = self._redis(self.timeout)  # taken with publish_lock
        self.publisher_generation = 0
        self.publish_lock = threading.Lock()
        self.calls = []         # type: List[List[Any]]  claims and releases waiting to run
        self.calls_lock = threading.Lock()
        self.threads = [threading.Thread(target=run, name=name, daemon=True) for run, name in (
            (self._control_loop, "cluster-control"), (self._publish_loop, "cluster-publish"),
            (self._read_loop, "cluster-read"))]
        self.stopped = threading.Event()

    def _redis(self, timeout: Optional[float]) -> resp.Redis:
        return resp.Redis(self.address, self.password, timeout, self.ssl_context)

    def start(self) -> None:
        self.room.cluster = self
        for thread in self.threads:
            thread.start()

    # -- the room's events (called under the room's lock) -------------------

    def send(self, events: List[wire.Event], sender: Any, flush_after: bool = False) -> None:
        """Events to order: through Redis, or shown here at once while it is
        out of reach. flush_after: the caller calls flush() once it lets go
        of the lock (else the publisher thread sends them)."""
        assert self.lock.locked()
        shown = self.state != UP
        for event in events:
            self.seq += 1
            item = self.pending[self.seq] = Outgoing(self.seq, event, sender, shown)
            self.queue.append(item)
            self.queued_bytes += len(event.block) + len(event.text)
        if shown:
            self.room.show(events, sender)
            while len(self.queue) > self.queue_max:
                dropped = self.queue.popleft()
                self.queued_bytes -= len(dropped.event.block) + len(dropped.event.text)
                dropped.done = True
                self.pending.pop(dropped.seq, None)
        if not flush_after or shown:
            self.changed.notify_all()

    def flush(self) -> None:
        """Send what waits from this thread (a sender's reader, which saves
        its line the hand-off to the publisher thread), unless another is
        sending: that one looks at the queue again after it is done."""
        while self.queue and self.state == UP:
            if not self.publish_lock.acquire(False):
                return
            try:
                self._publish_waiting()
            finally:
                self.publish_lock.release()

    def busy(self) -> bool:
        """Whether Redis is this far behind: lines wait (the room says busy)."""
        return self.state == UP and self.queued_bytes >= self.busy_bytes

    def _lost(self, exc: Exception, generation: Optional[int] = None) -> None:
        """A connection (of the given time joined) failed: the room goes on
        alone until the control thread reaches Redis again. What was on its
        way is shown here now."""
        with self.lock:
            if self.state != UP or generation not in (None, self.generation):
                return
            self.state = DOWN
            items = sorted(self.pending.values(), key=lambda item: item.seq)
            for item in items:
                if not item.shown:
                    item.shown = True
                    self.room.show([item.event], item.sender)
            self.queue = collections.deque(items)
            self.queued_bytes = sum(len(item.event.block) + len(item.event.text)
                                    for item in items)
            self.changed.notify_all()
        self.log("error", "redis %s: %s; this server's room goes on alone, and joins the "
                          "others again when Redis answers" % (self.url, exc))

    # -- the threads ----------------------------------------------------------

    def _wait_up(self) -> bool:
        """Wait until connected; False once stopped."""
        assert self.lock.locked()
        while self.state == DOWN:
            self.changed.wait()
        return self.state == UP

    def _script(self, conn: resp.Redis, name: str, keys: Sequence[Any],
                args: Sequence[Any]) -> Any:
        if not conn.connected:
            conn.connect()
        return conn.script(SCRIPTS[name], keys, args)

    def _publish_loop(self) -> None:
        while True:
            with self.lock:
                while self.state != STOPPED and (self.state != UP or not self.queue):
                    self.changed.wait()
                if self.state == STOPPED:
                    break
            with self.publish_lock:
                self._publish_waiting()
        self.publisher.close()

    def _publish_waiting(self) -> None:
        """Send the queue in batches, until it is empty (publish_lock held)."""
        conn = self.publisher
        while True:
            with self.lock:
                if self.state != UP:
                    return
                batch = []
                size = 0
                while self.queue and len(batch) < self.batch_max and size < self.batch_bytes:
                    item = self.queue.popleft()
                    length = len(item.event.block) + len(item.event.text)
                    self.queued_bytes -= length
                    if not item.done:
                        batch.append(item)
                        size += length
                floor = self.room.last_id
                if self.publisher_generation != self.generation:
                    conn.close()    # of an earlier time joined
                    self.publisher_generation = self.generation
                generation = self.generation
            if not batch:
                return
            try:
                firsts = self._publish(conn, [(item.seq, item.event) for item in batch], floor)
            except (resp.RedisConnectionError, resp.RedisError) as exc:
                conn.close()
                self._lost(exc, generation)
                return
            self._published(batch, firsts)

    def _published(self, batch: List[Outgoing], firsts: List[int]) -> None:
        """The ids Redis gave this server's events: each is delivered here
        now, if every id before it was (else by the reader, in order), which
        saves its members the round trip through XREAD and a thread."""
        with self.deliver_lock:
            out = []    # type: List[Delivery]
            with self.lock:
                for item, first in zip(batch, firsts):
                    if first and not item.done:
                        item.done = True
                        self.pending.pop(item.seq, None)
                        item.event.first = first
                        out += self.order.given((item.event, item.sender, item.shown))
            if out:
                self.room.deliver(out)

    def _publish(self, conn: resp.Redis, events: List[Tuple[int, wire.Event]],
                 floor: int) -> List[int]:
        """Append events (with their sequence numbers) to the Stream: their first ids."""
        return self._script(conn, "publish", [self.keys.counter, self.keys.events, self.keys.seqs],
                     publish_args(self.node, self.keep, floor, events))

    def _read_loop(self) -> None:
        conn = self._redis(self.read_block + self.timeout)
        inbox = self.keys.inbox(self.node)
        inbox_id = b"0-0"
        generation = 0
        while True:
            with self.lock:
                if not self._wait_up():
                    break
                after = b"0-%d" % self.order.last
                if generation != self.generation:
                    conn.close()
                    generation = self.generation
            try:
                if not conn.connected:
                    conn.connect()
                reply = conn.call("XREAD", "COUNT", self.read_count, "BLOCK",
                                  int(self.read_block * 1000), "STREAMS", self.keys.events,
                                  inbox, after, inbox_id)
            except (resp.RedisConnectionError, resp.RedisError) as exc:
                conn.close()
                self._lost(exc, generation)
                continue
            for stream, entries in reply or ():
                if stream == inbox.encode("utf-8"):
                    inbox_id = entries[-1][0]
                    self._whispers_in(entries)
                else:
                    self._events_in(entries)
        conn.close()

    def _events_in(self, entries: List[Any]) -> None:
        """Entries read from the Stream: delivered in order, each once."""
        with self.deliver_lock:
            with self.lock:
                batch, missed = self._read_in(entries)
            if missed:
                self.room.missed(missed)
                self.log("error", "redis %s: %d events missed (trimmed from the Stream, or "
                                  "Redis restarted without them)" % (self.url, missed))
            self.room.deliver(batch)

    def _read_in(self, entries: List[Any]) -> Tuple[List[Delivery], int]:
        """What to deliver of entries read (the lock and deliver_lock held),
        and how many ids before them are missing."""
        assert self.lock.locked()
        node = self.node.encode("utf-8")
        batch = []      # type: List[Delivery]
        missed = 0
        for entry_id, flat in entries:
            if int(entry_id.split(b"-", 1)[1]) <= self.order.last:
                continue    # this server's, delivered as Redis gave its id
            event, origin, seq = entry_event(entry_id, flat)
            mine = None
            if origin == node:
                item = self.pending.pop(seq, None)
                if item is not None:
                    item.done = True
                    mine = (event, item.sender, item.shown)
                    # Those before it were read before, or not appended
                    # again (the script keeps an event from going in twice).
                    for seq in [s for s in self.pending if s < item.seq]:
                        self.pending.pop(seq).done = True
            elif event.notice is not None:
                self.elsewhere = follow(self.elsewhere, event.notice)
                self.followed.append(event.notice)
            out, gap = self.order.read(event, mine)
            batch += out
            missed += gap
        return batch, missed

    def _whispers_in(self, entries: List[Any]) -> None:
        for _, flat in entries:
            fields = dict(zip(flat[::2], flat[1::2]))
            member = self.local.get(int(fields[b"s"]))
            name = fields.get(b"n")     # a serial of an earlier run's may be this run's
            if member is not None and (name is None or name.decode("utf-8") == member.name):
                self.room.whisper_from(fields[b"f"].decode("utf-8"), member,
                                       fields[b"x"].decode("utf-8"))

    def _control_loop(self) -> None:
        while not self.stopped.is_set():
            failure = None
            with self.control_lock:
                try:
                    if not self.control.connected:
                        self.control.connect()
                    if self.state == DOWN:
                        self._join()
                    self._beat()
                except (resp.RedisConnectionError, resp.RedisError) as exc:
                    self.control.close()
                    failure = exc
                except Exception as exc:    # a bug: told, and this thread goes on
                    self.log("error", "redis %s: %s\n%s" % (self.url, exc,
                                                            traceback.format_exc().rstrip()))
                    self.control.close()
                    failure = exc
            if failure is not None:
                self._lost(failure)
                self._say_alone_once(failure)
            self.stopped.wait(self.heartbeat)

    _told_alone = False

    def _say_alone_once(self, exc: Exception) -> None:
        """Redis not reached at start-up: said once (later outages: _lost)."""
        if not self._told_alone and not self.joined:
            self._told_alone = True
            self.log("error", "redis %s: %s; this server's room runs alone until Redis "
                              "answers" % (self.url, exc))

    def _join(self) -> None:
        """Connected (again): take the cluster's epoch and history the first
        time, list this server and its members, then go through Redis."""
        conn = self.control
        conn.call("SET", self.keys.epoch, self.room.epoch, "NX")
        epoch = conn.call("GET", self.keys.epoch).decode("utf-8")
        if not self.joined:
            # What an earlier run under this node name left (one killed
            # outright, restarted with the same --node): its sequence
            # numbers would keep this run's events out, its whispers would
            # go to this run's members (its names: below).
            conn.checked([["DEL", self.keys.inbox(self.node)], ["HDEL", self.keys.seqs, self.node]])
            entries = conn.call("XREVRANGE", self.keys.events, "+", "-", "COUNT", self.keep)
            events = [entry_event(entry_id, flat)[0] for entry_id, flat in reversed(entries)]
            self.room.adopt(epoch, events)
            with self.lock:
                self.order.last = self.room.last_id
        self._beat()    # first: heard of, nobody reaps it meanwhile (a second "left")
        stale = self._let_go_of_stale()
        clashes = self._claim_all()
        with self.lock:
            self.state = UP
            self.generation += 1
            self.changed.notify_all()
        rejoined = self.joined
        self.joined = True
        if stale and not rejoined:
            self.room.announce("leave", stale, "server restarted")
        if rejoined:
            self._join_again_if_reaped(clashes)
        self.log("info", "redis %s: joined the cluster %sas %s%s" % (
            self.url, "again " if rejoined else "", self.node,
            ("; names held elsewhere meanwhile: " + ", ".join(clashes)) if clashes else ""))

    def _let_go_of_stale(self) -> List[str]:
        """Release the names listed under this server that no member of it
        holds now (let go of while Redis was out of reach, or an earlier
        run's under this node name); returns those nobody here holds now."""
        with self.lock:
            held = {self.keys.owner(m.serial): m.name for m in self.room.members
                    if m.name is not None}
        released = self._release(self.keys, self.control.call(
            "HGETALL", self.keys.members(self.node)), held)
        return [name for name in released if name not in held.values()]

    def _release(self, keys: Keys, listed: List[bytes], held: Dict[str, str],
                 gone: str = "") -> List[str]:
        """Release the names of listed (keys' server's members hash, as HGETALL
        gives it) but those held; gone "1": only while that server is gone."""
        stale = stale_names(listed, held)
        calls = [(RELEASE, names, args + [gone]) for names, args in
                 (keys.claim(serial, name) for serial, name in stale)]
        if calls:
            self.control.scripts(calls)
        return [name for _, name in stale]

    def _join_again_if_reaped(self, clashes: List[str]) -> bool:
        """If the others took this server for gone (they announced its
        members left), its members join again for them, but for clashes."""
        if self.control.call("GET", self.keys.reaped(self.node)) is None:
            return False
        self.control.call("DEL", self.keys.reaped(self.node))
        with self.lock:
            back = [m.name for m in self.room.members if m.name is not None]
        self.room.announce("join", [name for name in back if name not in clashes])
        return True

    def _claim_all(self) -> List[str]:
        """Claim the names of this server's members (Redis may have lost
        them, or forgotten this server); the names someone else took meanwhile."""
        with self.lock:
            members = [m for m in self.room.members if m.name is not None]
        clashes = []
        calls = [(CLAIM, keys, args + [""]) for keys, args in
                 (self.keys.claim(member.serial, member.name) for member in members)]
        for member, got in zip(members, self.control.scripts(calls) if calls else []):
            if got is not None:
                clashes.append(member.name)
            else:
                self.local[member.serial] = member
        return clashes

    def _beat(self) -> None:
        """This server's presence refreshed; the others' looked at: names
        listed, and the members of a server gone announced as left."""
        conn = self.control
        was, _ = conn.checked([["SET", self.keys.alive(self.node), "1", "PX",
                                int(self.presence_ttl * 1000), "GET"],
                               ["SADD", self.keys.nodes, self.node]])
        with self.lock:
            self.followed = []
        elsewhere, gone = self._ask_names(conn)
        for other in gone:
            self._reap(other)
        with self.lock:
            # Notices read while we asked may be newer than the answer.
            self.elsewhere = functools.reduce(follow, self.followed, elsewhere)
        if was is None and self.joined and self.state == UP:
            # Not heard of for presence_ttl (the process stopped, the
            # network cut): the others may have announced our members gone.
            reaped = self._join_again_if_reaped(self._claim_all())
            self.log("error", "redis %s: this server was not heard of for %g s%s; its members "
                              "are listed again" % (self.url, self.presence_ttl,
                                                    " and was taken for gone" if reaped else ""))

    def _reap(self, other: str) -> None:
        """Another server is gone: if this one is first to see it, its
        members leave (a notice) and its traces go, but for its last
        sequence number: a publish of its still on its way, or sent again
        when it comes back, must not be appended twice."""
        keys = Keys(self.keys.prefix, other)
        listed = self._script(self.control, "reap", [keys.alive(other), keys.reaped(other),
                              keys.members(other), keys.inbox(other), keys.nodes],
                              [self.node, other])
        if listed is None:
            return      # back, or reaped by another
        # Its names are free again (also should it come back under its name).
        gone = self._release(keys, listed, {}, "1")
        self.log("info", "redis %s: server %s is gone (not heard of for %g s); %d of its "
                         "members leave" % (self.url, other, self.presence_ttl, len(gone)))
        if gone:
            self.room.announce("leave", gone, "server lost")

    # -- names and whispers (called by members' readers, not under the lock) --

    def _control(self, run: Callable[[resp.Redis], Any]) -> Any:
        """run(control connection), or None while Redis is out of reach."""
        if self.state != UP:
            return None
        with self.control_lock:
            try:
                return run(self.control)
            except (resp.RedisConnectionError, resp.RedisError) as exc:
                self.control.close()
                failure = exc
        self._lost(failure)
        return None

    def _combined(self, script: str, keys: List[str], args: List[Any]) -> Any:
        """A script run on the control connection together with those other
        members' readers asked for meanwhile: whoever takes the connection
        runs every call waiting, in one round trip (ten thousand joining at
        once are a few dozen round trips, not ten thousand lock hand-offs).
        None while Redis is out of reach."""
        call = [script, keys, args, False, None]    # ..., done, reply
        with self.calls_lock:
            self.calls.append(call)

        def run_waiting(conn: resp.Redis) -> None:
            with self.calls_lock:
                batch, self.calls = self.calls, []
            if not conn.connected:
                conn.connect()
            replies = conn.scripts([(SCRIPTS[name], keys, args)
                                    for name, keys, args, _, _ in batch])
            for waiting, reply in zip(batch, replies):
                waiting[3:] = [True, reply]
        if self._control(lambda conn: None if call[3] else run_waiting(conn)) is None \
                and not call[3]:
            with self.calls_lock:
                if call in self.calls:
                    self.calls.remove(call)
        return call[4]

    def claim(self, member: Any, name: str, force: bool = False) -> Optional[str]:
        """Take name for member among all servers: None when it is now its
        own, HERE when a member of this server holds it (the room decides),
        else the name as its holder elsewhere holds it."""
        keys, args = self.keys.claim(member.serial, name)
        got = self._combined("claim", keys, args + ["1" if force else ""])
        if got is None:
            self.local[member.serial] = member
            return None
        node, _, held = got.decode("utf-8").split("|", 2)
        return self.HERE if node == self.node else held

    def release(self, member: Any, name: str) -> None:
        """Let go of a name member held (or claimed and did not get); its
        own name: it is leaving, no private message reaches it now."""
        if member.name in (None, name) or member.state == LEFT:
            self.local.pop(member.serial, None)
        keys, args = self.keys.claim(member.serial, name)
        self._combined("release", keys, args[:2])

    def _ask_names(self, conn: resp.Redis) -> Tuple[List[str], List[str]]:
        """The names on the other servers heard of, and the servers not heard of."""
        others = sorted(n.decode("utf-8") for n in conn.call("SMEMBERS", self.keys.nodes)
                        if n.decode("utf-8") != self.node)
        replies = conn.checked([c for n in others for c in (
            ["EXISTS", self.keys.alive(n)], ["HKEYS", self.keys.members(n)])])
        return ([name.decode("utf-8") for index in range(len(others)) if replies[2 * index]
                 for name in replies[2 * index + 1]],
                [other for index, other in enumerate(others) if not replies[2 * index]])

    def names(self) -> List[str]:
        """The names on the other servers, asked now (the last known while out of reach)."""
        names = self._control(lambda conn: self._ask_names(conn)[0])
        return self.elsewhere if names is None else names

    def whisper(self, sender: Any, name: str, text: str) -> Optional[str]:
        """A private message to a member of another server: its name, or None."""
        keys, args = self.keys.whisper(name, sender.name, text, self.inbox_max)
        holder = self._control(lambda conn: self._script(conn, "whisper", keys, args))
        return holder.decode("utf-8") if holder else None

    # -- stopping -------------------------------------------------------------

    def stop(self, reason: str = "server stopped") -> None:
        """Leave the cluster: this server's members leave for the others,
        its traces go, the threads end."""
        self.stopped.set()
        with self.lock:
            was_up = self.state == UP
            self.state = STOPPED
            self.changed.notify_all()
            # What was on its way, and the leaves of this server's members.
            events = [(item.seq, item.event) for item in
                      sorted(self.pending.values(), key=lambda item: item.seq)]
            notices = wire.fold_notices([("leave", m.name, reason) for m in self.room.members
                                         if m.name is not None])
            events += [(self.seq + number, wire.Event(None, time.time(), notice.kind,
                                                      notice=notice))
                       for number, notice in enumerate(notices, 1)]
            floor = self.room.last_id
        if was_up:
            try:
                with self.control_lock:
                    self._leave(events, floor)
            except (resp.RedisConnectionError, resp.RedisError) as exc:
                self.log("error", "redis %s: could not leave the cluster: %s" % (self.url, exc))
        self.control.close()
        # The reader may be blocked in XREAD for read_block: not waited for.
        for thread in self.threads:
            if thread.name != "cluster-read":
                thread.join(self.timeout)

    def _leave(self, events: List[Tuple[int, wire.Event]], floor: int) -> None:
        conn = self.control
        if events:
            self._publish(conn, events, floor)
        conn.checked([["DEL", self.keys.members(self.node), self.keys.alive(self.node),
                       self.keys.inbox(self.node)],
                      ["SREM", self.keys.nodes, self.node], ["HDEL", self.keys.seqs, self.node]])
