"""Reconnect tokens: a member's proof that a name was its own.

A token is an HMAC of the name's key under the server's secret, so it
needs no table and survives a restart when the secret does (the history
file keeps it). It is honoured within `grace` seconds of its owner's
leaving (or of the server's start, for members of an earlier run): then
a reconnect with it gets the name back even from someone who took it
meanwhile. Pure code but for the clock; the room's lock guards `departed`.
"""

import base64
import hashlib
import hmac
import os
import time
from typing import Callable, Dict, Optional

from .names import name_key


class NameTokens:
    def __init__(self, secret: Optional[bytes] = None, grace: float = 120.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.secret = secret or os.urandom(32)
        self.grace = grace
        self.clock = clock
        self.started = clock()
        # name key -> when its owner left; None while the owner holds it
        self.departed = {}      # type: Dict[str, Optional[float]]

    def issue(self, name: str, nonce: Optional[bytes] = None) -> str:
        """A new token for name: each registration gets its own, so that
        one member's token never equals another's."""
        nonce = nonce or os.urandom(9)
        digest = hmac.new(self.secret, nonce + name_key(name).encode("utf-8"),
                          hashlib.sha256).digest()
        return base64.urlsafe_b64encode(nonce + digest[:15]).decode("ascii")

    def valid(self, token: Optional[str], name: str) -> bool:
        """Whether token was issued for name (by a server with this secret)."""
        if not token or len(token) != 32:
            return False
        try:
            raw = base64.urlsafe_b64decode(token.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            return False
        return hmac.compare_digest(self.issue(name, raw[:9]), token)

    def held(self, name: str) -> None:
        """The owner of name has it again: nobody may take it back now."""
        self.departed[name_key(name)] = None

    def left(self, name: str) -> None:
        """The owner of name (who held a token) left now."""
        now = self.clock()
        self.departed[name_key(name)] = now
        if len(self.departed) > 1000:
            horizon = now - self.grace
            for key in [k for k, t in self.departed.items() if t is not None and t < horizon]:
                del self.departed[key]

    def reserved_since(self, name: str) -> Optional[float]:
        """When the owner of name left, if within the grace period (for a
        name never seen leaving: the server's start, if within it); else None."""
        now = self.clock()
        since = self.departed.get(name_key(name), self.started)
        return since if since is not None and now - since <= self.grace else None
