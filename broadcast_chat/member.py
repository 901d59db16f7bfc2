"""A connected client as the room knows it (Member) and its life cycle."""

import itertools
import socket
import time
from typing import Optional, Tuple

from . import wire
from .jsonfile import iso_utc
from .net import address_group, format_address

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
                 "state", "fmt", "last_heard", "resume", "claim", "token", "named_at",
                 "replaced", "serial")

    _serials = itertools.count(1)

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
        # What its /hello asked for, set by its reader before it joins:
        self.resume = None      # type: Optional[Tuple[int, str]]  (last id seen, epoch)
        self.claim = None       # type: Optional[str]  a reconnect token
        self.token = None       # type: Optional[str]  the token it was given
        self.named_at = 0.0     # monotonic time it took its present name
        self.replaced = False   # a reconnect with its token took its place
        self.serial = next(self._serials)   # tells it from others in a cluster

    @property
    def echo(self) -> bool:
        """Whether the member gets its own room events back (JSON: with ids)."""
        return self.fmt != wire.TEXT

    def last_words(self, data: bytes, reason: str, going_away: bool = False) -> bytes:
        """What the member is sent last, before its socket is closed (a
        WebSocket member adds a Close frame); going_away: the server stops."""
        return data

    def __repr__(self) -> str:
        return "<Member %s %s %s>" % (self.name, self.address, self.state)
