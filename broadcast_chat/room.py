"""The room: who is here, under which name, and the order of everything said.

Every event is ordered under one lock (the writer's, shared), so all
members see events in one order, each with a room-wide, strictly
increasing id and the time the room ordered it; recent events stay in a
bounded ring. Notices (joins, leaves, renames) wait in a list and go out
together as one piece, so a thousand joins cost each member one queued
write, not a thousand; they are flushed before any later line, so nobody
hears from a member before hearing that it joined.

The room hands bytes to the Writer through its public methods and owns
its own timers (notices, idle members) in one thread, run_timers(). In a
cluster (cluster.Cluster), Redis orders events and deliver() gets them.
"""

import collections
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import history, names, wire
from .history import Ring
from .member import ADMITTED, JOINED, LEFT, Member
from .writer import Pieces, SendQueue, Writer

__all__ = ["ADMITTED", "JOINED", "LEFT", "Member", "Room"]

Problem = Tuple[str, str]   # (code, text) of an error for a member


class Room:
    """The members and everything sent to them."""

    notice_delay = 0.05         # seconds notices wait to be folded together...
    notice_delay_max = 1.0      # ...and at most, in a room of 10,000
    idle_check = 1.0            # seconds between two looks for idle members
    pause_slack = 1.0           # waking this much late means the process was stopped
    direct_max = 16             # rooms this small are written by the thread that orders a line
    history_bytes = 4 << 20     # most bytes of text the ring keeps
    history_request_max = 500   # most events one /history asks for
    welcome_names = 20          # names of others in a welcome reply

    def __init__(self, writer: Writer, log: Callable[..., None], max_clients: int = 0,
                 max_per_address: int = 0, idle_timeout: float = 0.0,
                 clock: Callable[[], float] = time.time, backlog: int = 50,
                 history_keep: int = 1000, history_max_age: float = 0.0,
                 epoch: str = "", store: Any = None, tokens: Any = None,
                 restored: Optional[Tuple[List[wire.Event], int]] = None) -> None:
        """backlog: events a newcomer is shown (0: no history at all);
        history_keep: events kept for resumes and /history; history_max_age:
        seconds an event is replayed for (0: any age); epoch: names this
        run of ids (a resume from another one starts afresh); store: takes
        every event kept (a HistoryFile); tokens: reconnect tokens (NameTokens);
        restored: the events and last id of an earlier run (from the file)."""
        self.writer = writer
        self.lock = writer.lock
        self.log = log
        self.max_clients = max_clients
        self.max_per_address = max_per_address
        self.idle_timeout = idle_timeout
        self.clock = clock
        self.members = {}        # type: Dict[Member, None]  (ordered set)
        # Joined members' queues by format (fixed on joining), in join order: a fan-out's list.
        self.audience = {}       # type: Dict[str, Dict[SendQueue, None]]
        self.by_name = names.NameIndex()     # type: names.NameIndex
        self.per_host = collections.Counter()  # type: collections.Counter
        self.notices = []        # type: List[Tuple[str, str, str]]  (kind, name, detail)
        self.notices_since = 0.0
        self.guest_serial = 0
        self.given_back = []     # type: List[Member]  renamed by _give_back, to claim in the cluster
        self.last_id = 0
        self.backlog = backlog
        self.history_max_age = history_max_age
        self.epoch = epoch
        self.store = store
        self.tokens = tokens
        self.ring = Ring(history_keep if backlog else 0, self.history_bytes)
        # A replay may fill half a member's queue; the rest counts as missed.
        self.replay_bytes = writer.queue_limit // 2
        self.replays = history.SharedReplays()
        if restored is not None:
            for event in restored[0]:
                self.ring.keep(event)
            self.last_id = restored[1]
        self.closing = False
        self.cluster = None     # type: Any  (a cluster.Cluster: orders, checks names)
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
        name = member.name if member.state == JOINED else None
        if name is not None and self.cluster is not None:
            self.cluster.release(member, name)      # before any server can read that it left
        with self.lock:
            if member.state == LEFT:
                return
            joined = member.state == JOINED
            member.state = LEFT
            reason = member.queue.reason or reason
            del self.members[member]
            if joined:
                del self.audience[member.fmt][member.queue]
            self.per_host[member.host] -= 1
            if self.per_host[member.host] <= 0:
                del self.per_host[member.host]
            if joined and not member.replaced:
                self.by_name.remove(member)
                if member.token is not None:
                    self.tokens.left(member.name)
                if not self.closing:
                    self._announce("leave", member.name, reason)
            self.writer.retire(member.queue)
            size = len(self.members)
        if joined and self.cluster is not None and member.name != name:
            self.cluster.release(member, member.name)   # renamed meanwhile (a name taken back)
        self.on_size(size)
        self.on_change()
        self.log("leave", member.name or "-", member.address, reason)

    def rename(self, member: Member, wanted: str) -> Optional[Problem]:
        """Give member a name; return (code, text) of an error, or None."""
        name, problem = names.check_name(wanted)
        if problem:
            return "name_invalid", "invalid name: " + problem
        cluster = self.cluster
        if cluster is None or member.name == name:
            return self._rename(member, name)
        # Claimed among all the servers first (a round trip, not under the
        # lock); a clash with a member of this server is settled here.
        holder = cluster.claim(member, name)
        if holder is not None and holder != cluster.HERE:
            return "name_taken", "name taken: %s is already in use" % holder
        problem = self._rename(member, name)
        if member.name != name:
            if holder is None:
                cluster.release(member, name)
        elif holder == cluster.HERE:
            cluster.claim(member, name, force=True)
        self._claim_given_back()
        return problem

    def _claim_given_back(self) -> None:
        """Claim in the cluster the guest names _give_back gave (no round trip
        under the lock): one held on another server is traded for the next."""
        cluster = self.cluster
        with self.lock:
            holders, self.given_back = self.given_back, []
        for holder in holders:
            name = holder.name
            if name is None or holder.state == LEFT:
                continue
            got = cluster.claim(holder, name)
            if got == cluster.HERE:
                cluster.claim(holder, name, force=True)     # this server's index gave it
            elif got is not None:
                self.name_guest(holder, renaming=True)

    def _rename(self, member: Member, name: str) -> Optional[Problem]:
        with self.lock:
            if member.state == LEFT:
                return None
            old = member.name
            if old == name:
                return None
            holder = self.by_name.put(member, name)
            took_over = False
            if holder is not None and old is None and self._may_reclaim(member, holder, name):
                took_over = holder.token == member.claim
                self._give_back(holder, took_over)
                holder = self.by_name.put(member, name)
            if holder is not None:
                return "name_taken", "name taken: %s is already in use" % holder.name
            member.name = name
            member.named_at = time.monotonic()
            if old is None:
                member.state = JOINED
                self.audience.setdefault(member.fmt, {})[member.queue] = None
                if self.tokens is not None and self.tokens.valid(member.claim, name):
                    self.tokens.held(name)
                self._welcome(member)
                self._join_replay(member)
                if not took_over:
                    self._announce("join", name)
            else:
                self._announce("rename", old, name)
                self._give_token(member)
        self.on_change()
        if old is None:
            self.log("join", name, member.address)
        else:
            if self.cluster is not None:
                self.cluster.release(member, old)
            self.log("rename", old, name, member.address)
        return None

    def _may_reclaim(self, member: Member, holder: Member, name: str) -> bool:
        """Whether member, joining with a token for name, takes it from
        holder: its own earlier connection (the same token), or someone who
        took the name after its owner left, within the grace period."""
        assert self.lock.locked()
        tokens = self.tokens
        if tokens is None or not tokens.valid(member.claim, name):
            return False
        if holder.token is not None and holder.token == member.claim:
            return True
        since = tokens.reserved_since(name)
        return since is not None and holder.named_at >= since

    def _give_back(self, holder: Member, same_owner: bool) -> None:
        """Free holder's name for its owner: holder is the owner's earlier
        connection (dropped, silently for the room) or is renamed, with a notice."""
        assert self.lock.locked()
        if same_owner:
            holder.replaced = True
            self.by_name.remove(holder)
            self._drop(holder, "replaced by a new connection with its token", True)
            return
        old = holder.name
        while True:
            self.guest_serial += 1
            new = "guest-%d" % self.guest_serial
            if self.by_name.put(holder, new) is None:
                break
        holder.name = new
        holder.named_at = time.monotonic()
        if self.cluster is not None:
            self.given_back.append(holder)
        self.writer.put(holder.queue, wire.error(
            holder.fmt, "name_reclaimed", "your name %s was taken back by its owner, who "
            "reconnected; you are now %s (/nick NAME picks another)" % (old, new),
            self.clock(), name=new))
        self._announce("rename", old, new)
        self._give_token(holder)
        self.log("rename", old, new, holder.address + " (name taken back)")

    def _give_token(self, member: Member) -> None:
        """A new reconnect token for member's present name (JSON members only)."""
        assert self.lock.locked()
        if self.tokens is None or not member.echo:
            return
        member.token = self.tokens.issue(member.name)
        self.writer.put(member.queue, wire.reply(
            member.fmt, "token", "reconnect token for %s" % member.name, self.clock(),
            name=member.name, token=member.token))

    def name_guest(self, member: Member, renaming: bool = False) -> None:
        """Give a member that speaks before /nick a unique guest name
        (renaming: a member that has a name, a guest name taken elsewhere)."""
        while (renaming or member.name is None) and member.state != LEFT:
            with self.lock:
                self.guest_serial += 1
                wanted = "guest-%d" % self.guest_serial
            if self.rename(member, wanted) is None and member.name == wanted:
                return

    def _welcome(self, member: Member) -> None:
        assert self.lock.locked()
        elsewhere = self.cluster.elsewhere if self.cluster is not None else ()
        others = len(self.by_name) - 1 + len(elsewhere)
        text = "welcome, %s! %s. /help lists the commands." % (
            member.name, "You are alone here" if others == 0 else
            "%d other%s online" % (others, "" if others == 1 else "s"))
        # Straight to the queue, not after the waiting notices: with
        # thousands joining at once, flushing them at each join would cost
        # a write to every member per join.
        here = [holder.name for holder in self.by_name.first(self.welcome_names + 1)
                if holder is not member][:self.welcome_names]
        here += elsewhere[:self.welcome_names - len(here)]
        fields = {"name": member.name, "others": others,
                  "names": sorted(here, key=str.casefold)}   # type: Dict[str, Any]
        if self.tokens is not None and member.echo:
            member.token = fields["token"] = self.tokens.issue(member.name)
        self.writer.put(member.queue, wire.reply(member.fmt, "welcome", text, self.clock(),
                                                 **fields))

    def find(self, name: str) -> Optional[Member]:
        """The member of that name as a reader would take it (None past NAME_RAW_MAX)."""
        if len(name) > names.NAME_RAW_MAX:
            return None
        with self.lock:
            return self.by_name.find(name)

    def names(self) -> List[str]:
        """Everyone's names: in a cluster, on every server (asked of Redis)."""
        elsewhere = self.cluster.names() if self.cluster is not None else []
        with self.lock:
            named = [m.name for m in self.members if m.state == JOINED]
        return sorted(named + elsewhere, key=str.casefold)

    def named_count(self) -> int:
        with self.lock:
            return len(self.by_name) + (len(self.cluster.elsewhere) if self.cluster else 0)

    def snapshot(self) -> List[Dict[str, Any]]:
        with self.lock:
            members = list(self.members)
        return [{"name": m.name, "address": m.address, "connected_at": m.connected_at}
                for m in members]

    # -- what members say ---------------------------------------------------

    def say(self, sender: Member, block: bytes, count: int) -> bool:
        """Relay count message lines (block: LF-ended safe text) to everyone.
        False, and nothing relayed, while the room is crowded (most members
        behind): see Writer.crowded()."""
        return self._relay(sender, "message", block, count)

    def act(self, sender: Member, text: str) -> bool:
        """Relay an action (/me) to everyone; False while the room is crowded."""
        return self._relay(sender, "action", text=text)

    def _relay(self, sender: Member, kind: str, block: bytes = b"", count: int = 1,
               text: str = "") -> bool:
        with self.lock:
            if sender.state != JOINED:
                return True
            # Checked under the lock with the fan-out: a burst from a thousand
            # senders at once cannot all pass the check before the queues fill.
            if (self.writer.lagging and self.writer.crowded()) or (
                    self.cluster is not None and self.cluster.busy()):
                return False
            if self.notices:
                self._flush_notices()
            self._emit([wire.Event(None, self.clock(), kind, sender.name, block, count, text)],
                       sender, flush_after=True)
        if self.cluster is not None:
            self.cluster.flush()
        return True

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

    def whisper_elsewhere(self, sender: Member, name: str, text: str) -> Optional[str]:
        """A private message to a member of another server of the cluster:
        its name as it holds it, or None if nobody anywhere holds name."""
        target = self.cluster.whisper(sender, name, text) if self.cluster is not None else None
        if target is not None:
            self.tell(sender, wire.private(sender.fmt, self.clock(), sender.name, target,
                                           text, True), after_notices=True)
        return target

    def whisper_from(self, sender: str, target: Member, text: str) -> None:
        """A private message from a member of another server of the cluster."""
        with self.lock:
            if target.state == JOINED:
                self.writer.put(target.queue, wire.private(
                    target.fmt, self.clock(), sender, target.name, text, False))

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

    def _event(self, kind: str, name: str = "", count: int = 1, **fields: Any) -> wire.Event:
        """An event of now, without ids yet."""
        return wire.Event(None, self.clock(), kind, name, count=count, **fields)

    def _emit(self, events: List[wire.Event], sender: Optional[Member] = None,
              flush_after: bool = False) -> None:
        """Order events and queue them for everyone: here, the next ids;
        in a cluster, the cluster gives ids and hands them to deliver()
        (flush_after: the caller has it send them once the lock is let go)."""
        assert self.lock.locked()
        if self.cluster is not None:
            self.cluster.send(events, sender, flush_after)
            return
        for event in events:
            event.first = self.last_id + 1
            self.last_id += event.count
        self._fan_out(events, sender)
        # Kept after the fan-out (the receivers wait less), in the same hold of the lock.
        for event in events:
            self._keep(event)

    def _keep(self, event: wire.Event) -> None:
        """Keep event in the ring (and the file), the oldest dropped past its bounds."""
        self.ring.keep(event)
        if self.store is not None:
            self.store.add(event)

    # -- what the cluster hands back ------------------------------------------

    def deliver(self, events: List[Tuple[wire.Event, Optional[Member], bool]]) -> None:
        """Events the cluster ordered, oldest first, each with its sender
        here (or None) and whether it was shown already (relayed here while
        the cluster was out of reach): kept, and queued for everyone else."""
        with self.lock:
            run = []    # type: List[wire.Event]
            run_sender = None
            for event, sender, shown in events:
                if event.first > self.last_id:
                    self.last_id = event.last
                    self._keep(event)
                # else the ids went back (Redis lost its data and a server
                # that knew fewer ids gave them again): shown, not kept.
                if shown:
                    continue
                if run and sender is not run_sender:
                    self._fan_out(run, run_sender)
                    run = []
                run_sender = sender
                run.append(event)
            if run:
                self._fan_out(run, run_sender)

    def show(self, events: List[wire.Event], sender: Optional[Member]) -> None:
        """Queue events without ids for everyone here (Redis out of reach)."""
        assert self.lock.locked()
        self._fan_out(events, sender)

    def missed(self, count: int) -> None:
        """Tell everyone that count events of the room were lost to this server."""
        text = "%d event%s of the room missed: said on other servers while this one could " \
               "not hear them" % (count, "" if count == 1 else "s")
        with self.lock:
            for fmt, queues in self.audience.items():
                reply = wire.reply(fmt, "missed", text, self.clock(), events=count)
                self.writer.put_all(queues, reply)

    def adopt(self, epoch: str, events: List[wire.Event]) -> None:
        """Take the cluster's run of ids (its epoch) and its latest events,
        when this server first joins it."""
        with self.lock:
            self.epoch = epoch
            self.ring = Ring(self.ring.max_events, self.history_bytes)
            for event in events:
                self._keep(event)
            self.last_id = events[-1].last if events else self.last_id
            self.replays.clear()

    def announce(self, kind: str, names: List[str], detail: str = "") -> None:
        """Notices for members the room does not hold: a leave for each of another server
        that is gone, a join for each of this one when the others had taken it for gone."""
        with self.lock:
            for name in names:
                self._announce(kind, name, detail)

    # -- history ------------------------------------------------------------

    def history(self, member: Member, wanted: int) -> None:
        """Send member up to wanted of the latest events (bounded), marked as earlier."""
        with self.lock:
            if member.state != JOINED:
                return
            self._flush_notices()
            wanted = min(wanted, self.history_request_max)
            self._replay(member, max(0, self.last_id - wanted), "request")

    def _join_replay(self, member: Member) -> None:
        """What a member is sent as it joins, before any live event: what it
        missed when it resumes, else the backlog."""
        assert self.lock.locked()
        if not self.backlog:
            return
        resume = member.resume
        if resume is not None:
            after, epoch = resume
            # In a cluster, a later id is one this server has not read yet.
            if epoch == self.epoch and (after <= self.last_id or self.cluster is not None):
                self._replay(member, after, "resume")
                return
            self.writer.put(member.queue, wire.reply(
                member.fmt, "history_reset", "the server's event ids have changed (it was "
                "restarted without a history file): what you missed is not known",
                self.clock(), epoch=self.epoch, last_id=self.last_id))
        self._replay(member, max(0, self.last_id - self.backlog), "join")

    def _replay(self, member: Member, after: int, why: str) -> None:
        """Queue the events after id `after` for member, between two markers."""
        assert self.lock.locked()
        now = self.clock()
        not_before = now - self.history_max_age if self.history_max_age else 0.0
        got = self.replays.get(self.ring, after, self.last_id, member.fmt, self.replay_bytes,
                               not_before)
        for piece in history.replay_answer(got, member.fmt, why, now):
            self.writer.put(member.queue, piece)

    def _fan_out(self, events: List[wire.Event], sender: Optional[Member] = None) -> None:
        """Queue events for every member with a name (the sender only if it
        echoes): a connection that has not joined hears nothing of the room."""
        assert self.lock.locked()
        skip = sender.queue if sender is not None and not sender.echo else None
        direct = len(self.members) <= self.direct_max
        for fmt, queues in self.audience.items():
            if queues:
                self.writer.put_all(queues, wire.render_events(events, fmt), skip, direct)

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
        self._emit([self._event(notice.kind, notice=notice) for notice in folded])

    def _notice_wait(self) -> float:
        """How long notices wait to be folded: longer in a larger room (a flush writes to all)."""
        return min(self.notice_delay_max, max(self.notice_delay, len(self.members) * 0.0001))

    # -- timers -------------------------------------------------------------

    def run_timers(self) -> None:
        """Flush notices when due and drop idle members, until close()."""
        idle_at = time.monotonic() + self.idle_check
        expected = time.monotonic()     # when this thread meant to wake
        with self.lock:
            while not self.closing:
                now = time.monotonic()
                if now - expected > self.pause_slack:
                    self._resume_after_pause(now - expected)
                due = self.notices_since + self._notice_wait() if self.notices else None
                if due is not None and now >= due:
                    self._flush_notices()
                    due = None
                if self.idle_timeout and now >= idle_at:
                    self._drop_idle(now)
                    idle_at = now + self.idle_check
                waits = [t - now for t in (due, idle_at if self.idle_timeout else None)
                         if t is not None]
                wait = max(0.0, min(waits)) if waits else None
                expected = now + wait if wait is not None else float("inf")
                self.timers.wait(wait)

    def _resume_after_pause(self, paused: float) -> None:
        """The process was stopped (SIGSTOP, a suspended machine): not members' silence."""
        assert self.lock.locked()
        for member in self.members:
            member.last_heard += paused

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
