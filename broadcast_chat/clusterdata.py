"""What a cluster keeps in Redis, as pure code: the scripts that change
it, the names of its keys, and the Stream's entries as events.

The scripts run atomically in Redis: one gives events the room's next
ids as it appends them (so two servers never give one id twice), the
others claim and let go of names under all their keys at once.
"""

import os
import socket
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import history, names, wire

# KEYS: the id counter, the Stream, the hash of each server's last sequence
# number appended. ARGV: server, Stream length, the least id to go on from
# (a server's last id, should Redis have lost the counter), then three
# values an event: sequence number, count of ids, the entry (entry_value).
# Returns each event's first id (0 for one appended before).
PUBLISH = """
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[3])
if last < floor then last = floor end
local applied = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
local firsts = {}
for i = 4, #ARGV, 3 do
  local seq = tonumber(ARGV[i])
  local first = 0
  if seq > applied then
    first = last + 1
    last = last + tonumber(ARGV[i + 1])
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], string.format('0-%d', first),
      'e', ARGV[i + 2])
    applied = seq
  end
  firsts[#firsts + 1] = first
end
redis.call('SET', KEYS[1], string.format('%d', last))
redis.call('HSET', KEYS[3], ARGV[1], applied)
return firsts
"""

# KEYS: the name's three keys, the server's hash of members. ARGV: the
# owner (server|serial), the name, the prefix of presence keys, "1" to
# take the name whoever holds it. Returns the holder (server|serial|name)
# when another member of a live server holds it, else nil.
CLAIM = """
local value = ARGV[1] .. '|' .. ARGV[2]
if ARGV[4] ~= '1' then
  for i = 1, 3 do
    local held = redis.call('GET', KEYS[i])
    if held and held ~= value then
      local node = string.match(held, '^([^|]*)|')
      if node and redis.call('EXISTS', ARGV[3] .. node) == 1 then return held end
    end
  end
end
for i = 1, 3 do redis.call('SET', KEYS[i], value) end
redis.call('HSET', KEYS[4], ARGV[2], ARGV[1])
return false
"""

# KEYS and ARGV[1..3] as CLAIM's, then "1" to let go only while the
# owner's server is gone: the name let go, if still this owner's.
RELEASE = """
if ARGV[4] == '1' and redis.call('EXISTS', ARGV[3] .. string.match(ARGV[1], '^([^|]*)|')) == 1
  then return 0 end
local value = ARGV[1] .. '|' .. ARGV[2]
for i = 1, 3 do
  if redis.call('GET', KEYS[i]) == value then redis.call('DEL', KEYS[i]) end
end
if redis.call('HGET', KEYS[4], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[4], ARGV[2]) end
return 1
"""

# KEYS: a server's presence key, its reaped key, members hash and inbox,
# the set of servers. ARGV: the server reaping, the server gone. If that
# server is gone and nobody reaped it yet: its traces removed, its members
# hash returned (as HGETALL), else nil. Its names are let go of after, by
# RELEASE with "1": a server that comes back meanwhile claims them again.
REAP = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', 60000) then return false end
local members = redis.call('HGETALL', KEYS[3])
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('SREM', KEYS[5], ARGV[2])
return members
"""

# KEYS: a name's three keys, in the order looked at. ARGV: the prefix of
# presence keys, the prefix of inboxes, the server sending, the inbox's
# length, the sender's name, the text. Returns the holder's name once the
# message is in its server's inbox; nil when no member of another live
# server holds the name.
WHISPER = """
for i = 1, 3 do
  local held = redis.call('GET', KEYS[i])
  if held then
    local node, serial, holder = string.match(held, '^([^|]*)|([^|]*)|(.*)$')
    if node == ARGV[3] or redis.call('EXISTS', ARGV[1] .. node) == 0 then return false end
    redis.call('XADD', ARGV[2] .. node, 'MAXLEN', '~', ARGV[4], '*',
      'f', ARGV[5], 's', serial, 'n', holder, 'x', ARGV[6])
    return holder
  end
end
return false
"""

SCRIPTS = {"publish": PUBLISH, "claim": CLAIM, "release": RELEASE, "reap": REAP,
           "whisper": WHISPER}


class Outgoing:
    """An event on its way through Redis, with its sender here, and
    whether it was shown here already (while Redis was out of reach)."""

    __slots__ = ("seq", "event", "sender", "shown", "done")

    def __init__(self, seq: int, event: wire.Event, sender: Any, shown: bool) -> None:
        self.seq = seq
        self.event = event
        self.sender = sender
        self.shown = shown
        self.done = False       # read back from the Stream (or dropped)


class Keys:
    """The names of a cluster's keys, all under one prefix."""

    def __init__(self, prefix: str, node: str) -> None:
        self.prefix = prefix
        self.node = node
        self.counter, self.events, self.seqs = prefix + "last", prefix + "events", prefix + "seq"
        self.epoch, self.nodes = prefix + "epoch", prefix + "nodes"
        self.alive_prefix = prefix + "alive:"

    def alive(self, node: str) -> str:
        return self.alive_prefix + node

    def members(self, node: str) -> str:
        return self.prefix + "members:" + node

    def inbox(self, node: str) -> str:
        return self.prefix + "inbox:" + node

    def reaped(self, node: str) -> str:
        return self.prefix + "reaped:" + node

    def name(self, place: int, key: str) -> str:
        return "%sname:%d:%s" % (self.prefix, place, key)

    def whisper(self, name: str, sender: str, text: str,
                inbox_max: int) -> Tuple[List[str], List[Any]]:
        """KEYS and ARGV of WHISPER: the name looked up folded first, then as drawn."""
        keys = names.name_keys(name)
        return ([self.name(place, keys[place]) for place in (1, 0, 2)],
                [self.alive_prefix, self.inbox(""), self.node, inbox_max, sender, text])

    def owner(self, serial: int) -> str:
        """What a name's keys and this server's members hash hold of its holder."""
        return "%s|%d" % (self.node, serial)

    def claim(self, serial: int, name: str) -> Tuple[List[str], List[Any]]:
        """KEYS and ARGV of CLAIM (without its last, force) and RELEASE (the first two)."""
        keys = [self.name(place, key) for place, key in enumerate(names.name_keys(name))]
        keys.append(self.members(self.node))
        return keys, [self.owner(serial), name, self.alive_prefix]


def stale_names(listed: Sequence[bytes], held: Dict[str, str]) -> List[Tuple[int, str]]:
    """Of a server's members hash as HGETALL gives it (name, owner, ...),
    each (serial, name) that its owner does not hold now (held: owner ->
    the name it holds)."""
    stale = []
    for name, owner in zip(listed[::2], listed[1::2]):
        name, owner = name.decode("utf-8"), owner.decode("utf-8")
        if held.get(owner) != name:
            stale.append((int(owner.rsplit("|", 1)[1]), name))
    return stale


def entry_value(node: str, seq: int, event: wire.Event) -> bytes:
    """An event as its Stream entry holds it: one field, its parts apart by
    NUL, which no name, node name or text holds (one field, not six: a
    reader parses a sixth of the elements, most of the cost of reading)."""
    return b"\0".join([node.encode("ascii"), b"%d" % seq, repr(event.time).encode("ascii"),
                        event.kind.encode("ascii"), event.name.encode("utf-8"),
                        history.event_row(event)[5]])


def entry_event(entry_id: bytes, flat: Sequence[bytes]) -> Tuple[wire.Event, bytes, int]:
    """The event of a Stream entry (its id 0-FIRST is the event's first id),
    the server that sent it and its sequence number there."""
    first = int(entry_id.split(b"-", 1)[1])
    node, seq, when, kind, name, body = flat[1].split(b"\0", 5)
    count = body.count(b"\n") if kind == b"message" else 1
    event = history.event_from_row(first, count, float(when), kind.decode("ascii"),
                                   name.decode("utf-8"), body)
    return event, node, int(seq)


def publish_args(node: str, keep: int, floor: int,
                 events: Sequence[Tuple[int, wire.Event]]) -> List[Any]:
    """ARGV of PUBLISH for events with their sequence numbers."""
    args = [node, keep, floor]    # type: List[Any]
    for seq, event in events:
        args += [seq, event.count, entry_value(node, seq, event)]
    return args


def node_name() -> str:
    """A name for this server, unique to its run: host, process, random."""
    host = "".join(c if c.isalnum() or c in "-." else "-" for c in socket.gethostname())
    return "%s-%d-%s" % (host[:40] or "server", os.getpid(), os.urandom(3).hex())


Delivery = Tuple[wire.Event, Any, bool]     # an event, its sender here or None, shown already


class InOrder:
    """A server's deliveries in id order, from two sources: the ids Redis
    gives its own events as it appends them (given) and the Stream as read
    (read), whichever comes first. Guarded by the cluster's lock."""

    def __init__(self, last: int = 0) -> None:
        self.last = last        # every id up to this one is out
        self.ready = {}         # type: Dict[int, Delivery]  this server's, by first id

    def given(self, delivery: Delivery) -> List[Delivery]:
        """One of this server's events with its ids: what is out now."""
        self.ready[delivery[0].first] = delivery
        return self._take()

    def read(self, event: wire.Event, mine: Optional[Delivery]) -> Tuple[List[Delivery], int]:
        """An event read from the Stream, in order (mine: this server's
        delivery of it, if it is one): what is out now, and how many ids
        before it went missing (trimmed, or Redis lost them)."""
        if event.last <= self.last:
            return [], 0        # given, and out, before it was read
        missed = event.first - self.last - 1 if self.last else 0
        delivery = self.ready.pop(event.first, None) or mine or (event, None, False)
        self.last = event.last
        return [delivery] + self._take(), max(0, missed)

    def _take(self) -> List[Delivery]:
        taken = []
        while self.last + 1 in self.ready:
            got = self.ready.pop(self.last + 1)
            taken.append(got)
            self.last = got[0].last
        return taken


def follow(names: List[str], notice: Optional[wire.Notice]) -> List[str]:
    """The names on the other servers after one of their notices (those
    that name everyone they are about; a folded one waits for the heartbeat)."""
    if notice is None or notice.others:
        return names
    names = list(names)
    if notice.kind == "join":
        names += [name for name in notice.names if name not in names]
    elif notice.kind == "leave" and notice.names[0] in names:
        names.remove(notice.names[0])
    elif notice.kind == "rename" and notice.names[0] in names:
        names[names.index(notice.names[0])] = notice.names[1]
    return names
