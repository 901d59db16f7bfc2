"""What one client's lines do: the per-member half of the protocol.

A Session gets the steps of each read (protocol.classify), applies the
flood limit, and acts on them through the room's public methods. Commands
are a table: COMMANDS maps each command to the method that runs it.
"""

import time
from typing import Any, Callable, Dict, List, Optional

from . import __version__, wire
from .protocol import (HELP_LINES, Action, Say, Step, TokenBucket, count_lines,
                       first_lines, hello_options)
from .room import ADMITTED, Member, Room


class Session:
    """One member's lines: flood control, messages and commands."""

    flood_strikes = 10      # refused reads in a row before a disconnect
    busy_wait = 2.0         # longest a line waits for a crowded room before it is refused
    who_max = 100           # names in one /who answer
    who_names_per_line = 20 # a /who answer costs a line of the flood limit per this many

    def __init__(self, room: Room, member: Member, rate: float, burst: int,
                 max_line: int, clock: Callable[[], float]) -> None:
        self.room = room
        self.member = member
        self.rate = rate
        self.burst = max(1, burst)
        self.max_line = max_line
        self.clock = clock
        self.bucket = TokenBucket(rate, burst)
        self.strikes = 0
        self.quit_reason = None     # type: Optional[str]

    # -- answers for this member only ------------------------------------------

    def reply(self, code: str, text: str, after_notices: bool = False, **fields: Any) -> None:
        self.room.tell(self.member, wire.reply(self.member.fmt, code, text, self.clock(),
                                               **fields), after_notices)

    def error(self, code: str, text: str, **fields: Any) -> None:
        self.room.tell(self.member, wire.error(self.member.fmt, code, text, self.clock(),
                                               **fields))

    def banner(self) -> None:
        self.reply("banner", "Broadcast Chat %s: %d online. /nick NAME picks your name; "
                   "/help lists the commands." % (__version__, self.room.named_count()))

    # -- a read ------------------------------------------------------------------

    def handle(self, steps: List[Step], too_long: int) -> None:
        """Act on the steps of one read; messages read together go out together."""
        if too_long:
            self.error("line_too_long", "line too long: %d line%s over %d bytes not sent" % (
                too_long, "" if too_long == 1 else "s", self.max_line), lines=too_long)
        member, room = self.member, self.room
        count = count_lines(steps)
        if count:
            # Only complete lines that say something are activity: a byte
            # now and then, or a blank line, does not keep a member here.
            member.last_heard = time.monotonic()
        granted = self.bucket.take(count)
        if granted == count:
            self.strikes = 0
        else:
            steps = first_lines(steps, self.refuse(count, granted))
        for step in steps:
            if type(step) is Say:
                if member.name is None:
                    room.name_guest(member)
                self.relay(room.say, step.block, step.count, count=step.count)
                continue
            self.COMMANDS[step.kind](self, step)
            if self.quit_reason is not None:
                return

    def relay(self, say: Callable[..., bool], *args: Any, count: int = 1) -> None:
        """say(self.member, *args), or once the room has room again; else
        refused with a notice. Most members behind, and staying behind, is a
        burst from many senders at once: refusing it keeps every reader's
        queue bounded, so nobody who reads is dropped for it."""
        if say(self.member, *args):
            return
        deadline = time.monotonic() + self.busy_wait
        while time.monotonic() < deadline and self.room.writer.wait_for_space():
            if say(self.member, *args):
                return
        self.error("busy", "room busy: %d line%s not sent; try again in a moment"
                   % (count, "" if count == 1 else "s"), lines=count)

    def refuse(self, count: int, granted: int) -> int:
        """The flood limit let granted of count lines through: a warning for
        the rest, and a disconnect after flood_strikes refusals in a row.
        Returns how many lines may still go."""
        self.strikes += 1
        if self.strikes >= self.flood_strikes:
            self.room.drop(self.member, "flooding", tell=True)
            return 0
        refused = count - granted
        self.error("flood", "flood: %d line%s not sent; the limit is %g lines a second" % (
            refused, "" if refused == 1 else "s", self.rate), lines=refused)
        return granted

    # -- commands ---------------------------------------------------------------

    def bad_command(self, action: Action) -> None:
        self.error(action.target, action.text)

    def nick(self, action: Action) -> None:
        old = self.member.name
        if old is not None and action.target == old:
            self.reply("renamed", "you are already %s" % old, name=old)
            return
        problem = self.room.rename(self.member, action.target)
        if problem:
            self.error(*problem)
        elif old is not None and self.member.name != old:
            # The member's own answer: the room's notice of it may be folded
            # into "a, b, c and 97 others took new names".
            self.reply("renamed", "you are now known as %s" % self.member.name,
                       name=self.member.name)

    def who(self, action: Action) -> None:
        """Who is here: at most who_max names, and the cost of a long answer
        counts against the flood limit, so that /who cannot amplify."""
        names = self.room.names()
        shown = names[:self.who_max]
        extra = len(shown) // self.who_names_per_line
        if extra and self.bucket.take(extra) < extra:
            self.error("flood", "flood: /who in a room this size is limited; try again "
                                "in a few seconds", lines=1)
            return
        text = "%d online: %s" % (len(names), ", ".join(shown) or "nobody named yet")
        if len(names) > len(shown):
            text += " and %d more" % (len(names) - len(shown))
        self.reply("who", text, after_notices=True, names=shown, total=len(names))

    def help(self, action: Action) -> None:
        self.reply("help", "\n".join(HELP_LINES))

    def password(self, action: Action) -> None:
        self.reply("pass_not_needed", "you are in: /pass is needed only as the first line, "
                                      "on a chat with a password")

    def hello(self, action: Action) -> None:
        """Switch this member to the JSON format; only before it has a name.
        resume=ID epoch=EPOCH: it saw every event up to ID of that epoch, and
        is sent the rest as it joins; token=TOKEN: a name's reconnect token."""
        member, room = self.member, self.room
        if member.state != ADMITTED:
            self.error("hello_late", "/hello comes before /nick and before anything said")
            return
        options = hello_options(action.text) or {}
        if "resume" in options:
            member.resume = (int(options["resume"]), options.get("epoch", ""))
        member.claim = options.get("token")
        if member.fmt == wire.TEXT:
            member.fmt = wire.JSON      # (a WebSocket member's stays WEB)
        room.tell(member, wire.dumps({
            "type": "hello", "version": __version__, "online": room.named_count(),
            "last_id": room.last_id, "epoch": room.epoch,
            "history": {"backlog": room.backlog, "kept": room.ring.max_events},
            "limits": {"rate": self.rate, "burst": self.burst, "max_line": self.max_line}}))

    def history(self, action: Action) -> None:
        if self.member.name is None:
            self.error("history_unnamed", "/history comes once you have a name (/nick NAME)")
        elif not self.room.backlog:
            self.error("history_off", "this server keeps no history")
        else:
            self.room.history(self.member, int(action.text) if action.text
                              else self.room.backlog)

    def quit(self, action: Action) -> None:
        self.quit_reason = "quit: " + action.text if action.text else "quit"
        self.reply("goodbye", "goodbye")

    def me(self, action: Action) -> None:
        if self.member.name is None:
            self.room.name_guest(self.member)
        self.relay(self.room.act, action.text)

    def msg(self, action: Action) -> None:
        member, room = self.member, self.room
        if member.name is None:
            room.name_guest(member)
        target = room.find(action.target)
        if target is None and room.whisper_elsewhere(member, action.target, action.text):
            return
        if target is None:
            self.error("no_such_name", "no such name: %s (/who lists who is online)"
                       % action.target, name=action.target)
        elif target is member:
            self.error("self_message", "that is you: /msg sends to someone else")
        else:
            room.whisper(member, target, action.text)

    COMMANDS = {
        "error": bad_command, "nick": nick, "who": who, "help": help, "pass": password,
        "hello": hello, "history": history, "quit": quit, "me": me, "msg": msg,
    }   # type: Dict[str, Callable[[Session, Action], None]]
