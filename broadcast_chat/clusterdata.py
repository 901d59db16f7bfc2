"""What a cluster keeps in Redis, as pure code: the scripts that change
it, the names of its keys, and the Stream's entries as events.

The scripts run atomically in Redis: one gives events the room's next
ids as it appends them (so two servers never give one id twice), the
others claim and let go of names under all their keys at once.
"""

import os
import socket
from typing import Any, Dict, List, Sequence, Tuple

from . import history, names, wire

# KEYS: the id counter, the Stream, the hash of each server's last sequence
# number appended. ARGV: server, Stream length, the least id to go on from
# (a server's last id, should Redis have lost the counter), then six values
# an event: sequence number, count of ids, time, kind, name, body.
PUBLISH = """
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[3])
if last < floor then last = floor end
local applied = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
for i = 4, #ARGV, 6 do
  local seq = tonumber(ARGV[i])
  if seq > applied then
    local first = last + 1
    last = last + tonumber(ARGV[i + 1])
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], string.format('0-%d', first),
      'n', ARGV[1], 's', ARGV[i], 'c', ARGV[i + 1], 't', ARGV[i + 2], 'k', ARGV[i + 3],
      'm', ARGV[i + 4], 'b', ARGV[i + 5])
    applied = seq
  end
end
redis.call('SET', KEYS[1], string.format('%d', last))
redis.call('HSET', KEYS[3], ARGV[1], applied)
return last
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

# KEYS and ARGV[1..2] as CLAIM's: the name let go, if still this owner's.
RELEASE = """
local value = ARGV[1] .. '|' .. ARGV[2]
for i = 1, 3 do
  if redis.call('GET', KEYS[i]) == value then redis.call('DEL', KEYS[i]) end
end
if redis.call('HGET', KEYS[4], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[4], ARGV[2]) end
return 1
"""

SCRIPTS = {"publish": PUBLISH, "claim": CLAIM, "release": RELEASE}


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

    def claim(self, serial: int, name: str) -> Tuple[List[str], List[Any]]:
        """KEYS and ARGV of CLAIM (without its last, force) and RELEASE (the first two)."""
        keys = [self.name(place, key) for place, key in enumerate(names.name_keys(name))]
        keys.append(self.members(self.node))
        return keys, ["%s|%d" % (self.node, serial), name, self.alive_prefix]


def publish_args(node: str, keep: int, floor: int,
                 events: Sequence[Tuple[int, wire.Event]]) -> List[Any]:
    """ARGV of PUBLISH for events with their sequence numbers."""
    args = [node, keep, floor]    # type: List[Any]
    for seq, event in events:
        args += [seq, event.count, repr(event.time), event.kind, event.name,
                 history.event_row(event)[5]]
    return args


def node_name() -> str:
    """A name for this server, unique to its run: host, process, random."""
    host = "".join(c if c.isalnum() or c in "-." else "-" for c in socket.gethostname())
    return "%s-%d-%s" % (host[:40] or "server", os.getpid(), os.urandom(3).hex())


def entry_fields(flat: Sequence[bytes]) -> Dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2]))


def entry_event(entry_id: bytes, fields: Dict[bytes, bytes]) -> wire.Event:
    """The event of a Stream entry (its id 0-FIRST is the event's first id)."""
    first = int(entry_id.split(b"-", 1)[1])
    return history.event_from_row(first, int(fields[b"c"]), float(fields[b"t"]),
                                  fields[b"k"].decode("utf-8"), fields[b"m"].decode("utf-8"),
                                  fields[b"b"])
