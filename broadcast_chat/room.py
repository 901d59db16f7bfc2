"""The room: who is here, under which name, and the order of everything said.

Every event is ordered under one lock (the writer's, shared), so all
members see events in one order, each with a room-wide, strictly
increasing id and the time the room ordered it; recent events stay in a
bounded ring. Notices (joins, leaves, renames) wait in a list and go out
together as one piece, so a thousand joins cost each member one queued
write, not a thousand; they are flushed before any later line, so nobody
hears from a member before hearing that it joined.

The room hands bytes to the Writer through its public methods and owns
its own timers (notices, idle members) in one thread, run_timers().
"""

import collections
import socket
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from . import names
from . import wire
from .jsonfile import iso_utc
from .net import address_group, format_address
from .writer import Pieces, SendQueue, Writer

# A member's life: admitted (in the room, no name yet), joined (named),
# left (out of the room; the Writer closes its socket once flushed).
ADMITTED = "admitted"
JOINED = "joined"
LEFT = "left"


class Member:
    """One connected client: its name, format and send queue.

    state and name are guarded by the room's lock; fmt is set by the
    member's own reader thread before it joins; last_heard by that thread.
    """

    __slots__ = ("sock", "queue", "host", "address", "connected_at", "name",
                 "state", "fmt", "last_heard")

    def __init__(self, sock: socket.socket, peer: Tuple) -> None:
        self.sock = sock
        self.queue = None       # type: Optional[SendQueue]  given at admission
        self.host = address_group(peer[0])   # what per-address limits count
        self.address = format_address(peer)
        self.connected_at = iso_utc(time.time())
        self.name = None        # type: Optional[str]
        self.state = ADMITTED
        self.fmt = wire.TEXT
        self.last_heard = time.monotonic()

    @property
    def echo(self) -> bool:
        """Whether the member gets its own room events back (JSON: with ids)."""
        return self.fmt == wire.JSON

    def last_words(self, data: bytes, reason: str, going_away: bool = False) -> bytes:
        """What the member is sent last, before its socket is closed (a
        WebSocket member adds a Close frame); going_away: the server stops."""
        return data

    def __repr__(self) -> str:
        return "<Member %s %s %s>" % (self.name, self.address, self.state)


Problem = Tuple[str, str]   # (code, text) of an error for a member


class Room:
    """The members and everything sent to them."""

    notice_delay = 0.05         # seconds notices wait to be folded together...
    notice_delay_max = 1.0      # ...and at most, in a room of 10,000
    idle_check = 1.0            # seconds between two looks for idle members
    history_events = 1000       # events kept in the ring...
    history_bytes = 4 << 20     # ...and at most this many bytes of their text

    def __init__(self, writer: Writer, log: Callable[..., None], max_clients: int = 0,
                 max_per_address: int = 0, idle_timeout: float = 0.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.writer = writer
        self.lock = writer.lock
        self.log = log
        self.max_clients = max_clients
        self.max_per_address = max_per_address
        self.idle_timeout = idle_timeout
        self.clock = clock
        self.members = {}        # type: Dict[Member, None]  (ordered set)
        self.by_name = names.NameIndex()     # type: names.NameIndex
        self.per_host = collections.Counter()  # type: collections.Counter
        self.notices = []        # type: List[Tuple[str, str, str]]  (kind, name, detail)
        self.notices_since = 0.0
        self.guest_serial = 0
        self.last_id = 0
        self.ring = collections.deque()   # type: Deque[wire.Event]
        self.ring_events = 0
        self.ring_bytes = 0
        self.closing = False
        self.timers = threading.Condition(self.lock)
        self.on_change = lambda: None       # type: Callable[[], None]
        self.on_size = lambda size: None    # type: Callable[[int], None]

    # -- membership ---------------------------------------------------------

    def admit(self, member: Member, transform: Optional[Callable[[Pieces], Pieces]] = None
              ) -> Optional[str]:
        """Add a new connection (its socket non-blocking), or say why not."""
        with self.lock:
            if self.closing:
                return "server shutting down"
            if self.max_clients and len(self.members) >= self.max_clients:
                return "server full"
            if self.max_per_address and self.per_host[member.host] >= self.max_per_address:
                return "too many connections from your address"
            member.queue = self.writer.open(member.sock, member.host, transform)
            self.members[member] = None
            self.per_host[member.host] += 1
            size = len(self.members)
        self.on_size(size)
        self.on_change()
        return None

    def leave(self, member: Member, reason: str) -> None:
        with self.lock:
            if member.state == LEFT:
                return
            joined = member.state == JOINED
            member.state = LEFT
            reason = member.queue.reason or reason
            del self.members[member]
            self.per_host[member.host] -= 1
            if self.per_host[member.host] <= 0:
                del self.per_host[member.host]
            if joined:
                self.by_name.remove(member)
                if not self.closing:
                    self._announce("leave", member.name, reason)
            self.writer.retire(member.queue)
            size = len(self.members)
        self.on_size(size)
        self.on_change()
        self.log("leave", member.name or "-", member.address, reason)

    def rename(self, member: Member, wanted: str) -> Optional[Problem]:
        """Give member a name; return (code, text) of an error, or None."""
        name, problem = names.check_name(wanted)
        if problem:
            return "name_invalid", "invalid name: " + problem
        with self.lock:
            if member.state == LEFT:
                return None
            old = member.name
            if old == name:
                return None
            holder = self.by_name.put(member, name)
            if holder is not None:
                return "name_taken", "name taken: %s is already in use" % holder.name
            member.name = name
            if old is None:
                member.state = JOINED
                self._welcome(member)
                self._announce("join", name)
            else:
                self._announce("rename", old, name)
        self.on_change()
        if old is None:
            self.log("join", name, member.address)
        else:
            self.log("rename", old, name, member.address)
        return None

    def name_guest(self, member: Member) -> None:
        """Give a member that speaks before /nick a unique guest name."""
        while member.name is None and member.state != LEFT:
            with self.lock:
                self.guest_serial += 1
                wanted = "guest-%d" % self.guest_serial
            self.rename(member, wanted)

    def _welcome(self, member: Member) -> None:
        assert self.lock.locked()
        others = len(self.by_name) - 1
        text = "welcome, %s! %s. /help lists the commands." % (
            member.name, "You are alone here" if others == 0 else
            "%d other%s online" % (others, "" if others == 1 else "s"))
        # Straight to the queue, not after the waiting notices: with
        # thousands joining at once, flushing them at each join would cost
        # a write to every member per join.
        self.writer.put(member.queue, wire.reply(member.fmt, "welcome", text, self.clock(),
                                                 name=member.name, others=others))

    def find(self, name: str) -> Optional[Member]:
        """The member of that name, as a reader would take it; None for a
        name too long to be one (refused before any normalising)."""
        if len(name) > names.NAME_RAW_MAX:
            return None
        with self.lock:
            return self.by_name.find(name)

    def names(self) -> List[str]:
        with self.lock:
            named = [m.name for m in self.members if m.state == JOINED]
        return sorted(named, key=str.casefold)

    def named_count(self) -> int:
        with self.lock:
            return len(self.by_name)

    def snapshot(self) -> List[Dict[str, Any]]:
        with self.lock:
            members = list(self.members)
        return [{"name": m.name, "address": m.address, "connected_at": m.connected_at}
                for m in members]

    # -- what members say ---------------------------------------------------

    def say(self, sender: Member, block: bytes, count: int) -> None:
        """Relay count message lines (block: LF-ended safe text) to everyone."""
        self._relay(sender, "message", block=block, count=count)

    def act(self, sender: Member, text: str) -> None:
        """Relay an action (/me) to everyone."""
        self._relay(sender, "action", text=text)

    def _relay(self, sender: Member, kind: str, **fields: Any) -> None:
        with self.lock:
            if sender.state != JOINED:
                return
            self._flush_notices()
            event = self._order(kind, sender.name, **fields)
            self._fan_out([event], sender)

    def whisper(self, sender: Member, target: Member, text: str) -> None:
        """A private message: to the target after the waiting notices (nobody
        hears from a member before hearing it joined), and back to the sender."""
        with self.lock:
            if target.state != JOINED:
                return
            self._flush_notices()
            now = self.clock()
            self.writer.put(target.queue, wire.private(
                target.fmt, now, sender.name, target.name, text, False))
            self.writer.put(sender.queue, wire.private(
                sender.fmt, now, sender.name, target.name, text, True))

    def tell(self, member: Member, data: bytes, after_notices: bool = False) -> None:
        """Queue an answer for one member. Waiting notices stay waiting
        (flushing them would cost a write to every member) unless
        after_notices: an answer about the room (/who) must not arrive
        before the notices that led to it (a rename just made)."""
        with self.lock:
            if after_notices:
                self._flush_notices()
            self.writer.put(member.queue, data)

    def poke(self, member: Member) -> None:
        with self.lock:
            self.writer.poke(member.queue)

    def drop(self, member: Member, reason: str, tell: bool = False) -> None:
        """Disconnect a member; with tell, it is told why first."""
        with self.lock:
            self._drop(member, reason, tell)

    def _drop(self, member: Member, reason: str, tell: bool) -> None:
        assert self.lock.locked()
        if member.state == LEFT:
            return
        goodbye = b""
        if tell:
            code = reason.split(" ", 1)[0]
            goodbye = member.last_words(wire.error(
                member.fmt, "disconnected", "disconnected: " + reason, self.clock(),
                reason=code), reason)
        self.writer.end(member.queue, reason, goodbye)

    # -- ordering -----------------------------------------------------------

    def _order(self, kind: str, name: str = "", count: int = 1, **fields: Any) -> wire.Event:
        """The next event: its id (and count - 1 more after it) and time."""
        assert self.lock.locked()
        event = wire.Event(self.last_id + 1, self.clock(), kind, name, count=count, **fields)
        self.last_id += count
        self._keep(event)
        return event

    def _keep(self, event: wire.Event) -> None:
        """Keep event in the ring, dropping the oldest past its bounds."""
        ring = self.ring
        ring.append(event)
        self.ring_events += event.count
        self.ring_bytes += len(event.block) + len(event.text)
        while len(ring) > 1 and (self.ring_events > self.history_events
                                 or self.ring_bytes > self.history_bytes):
            old = ring.popleft()
            self.ring_events -= old.count
            self.ring_bytes -= len(old.block) + len(old.text)

    def _fan_out(self, events: List[wire.Event], sender: Optional[Member] = None) -> None:
        """Queue events for every member with a name (the sender only if it
        echoes): a connection that has not joined hears nothing of the room."""
        assert self.lock.locked()
        pieces = {}     # type: Dict[str, bytes]
        put = self.writer.put
        for member in self.members:
            if member.state != JOINED or (member is sender and not member.echo):
                continue
            piece = pieces.get(member.fmt)
            if piece is None:
                piece = pieces[member.fmt] = wire.render_events(events, member.fmt)
            put(member.queue, piece)

    def _announce(self, kind: str, name: str, detail: str = "") -> None:
        """Add a notice for everyone (see wire.fold_notices)."""
        assert self.lock.locked()
        if not self.notices:
            self.notices_since = time.monotonic()
            self.timers.notify()
        self.notices.append((kind, name, detail))

    def _flush_notices(self) -> None:
        """Order the waiting notices and queue them for everyone, as one piece."""
        assert self.lock.locked()
        if not self.notices:
            return
        folded = wire.fold_notices(self.notices)
        self.notices = []
        events = [self._order(notice.kind, notice=notice) for notice in folded]
        self._fan_out(events)

    def _notice_wait(self) -> float:
        """How long notices wait to be folded: longer in a larger room,
        where each flush is a write to every member."""
        return min(self.notice_delay_max, max(self.notice_delay, len(self.members) * 0.0001))

    # -- timers -------------------------------------------------------------

    def run_timers(self) -> None:
        """Flush notices when due and drop idle members, until close()."""
        idle_at = time.monotonic() + self.idle_check
        with self.lock:
            while not self.closing:
                now = time.monotonic()
                due = self.notices_since + self._notice_wait() if self.notices else None
                if due is not None and now >= due:
                    self._flush_notices()
                    due = None
                if self.idle_timeout and now >= idle_at:
                    self._drop_idle(now)
                    idle_at = now + self.idle_check
                waits = [t - now for t in (due, idle_at if self.idle_timeout else None)
                         if t is not None]
                self.timers.wait(max(0.0, min(waits)) if waits else None)

    def _drop_idle(self, now: float) -> None:
        assert self.lock.locked()
        horizon = now - self.idle_timeout
        for member in self.members:
            if member.last_heard < horizon:
                self._drop(member, "idle for more than %g s" % self.idle_timeout, True)

    def close(self, goodbye: str, grace: float) -> None:
        """Say goodbye to everyone, flush for up to grace seconds, close every socket."""
        with self.lock:
            self.closing = True
            self.timers.notify()
            self.writer.begin_stop(grace)
            self._flush_notices()
            now = self.clock()
            for member in self.members:
                self.writer.end(member.queue, "server shutting down", member.last_words(
                    wire.reply(member.fmt, "shutdown", goodbye, now), goodbye, going_away=True))
                self.writer.retire(member.queue)
        self.writer.join(grace + 1.0)
