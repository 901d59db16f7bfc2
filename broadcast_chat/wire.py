"""What the server sends: events, replies and errors, in two formats.

TEXT is one human line per event, readable as it is in nc:

    12:34 <alice> hello            a message
    12:34 * alice waves            an action (/me)
    12:34 *alice* psst             a private message to you
    12:34 -> *bob* psst            your private message, as sent
    12:34 -- bob joined            a notice: joins, leaves, renames, replies
    12:34 !! name taken: bob       an error, for you only

JSON (asked for with `/hello json`) is one JSON object per line, with ids,
kinds, names and UTC times, so that a program never reads English:

    {"type":"event","id":7,"time":"2026-12-01T07:45:12.345Z","kind":"message","from":"alice","text":"hello"}
    {"type":"private","time":"...","from":"alice","to":"bob","text":"psst"}
    {"type":"reply","code":"who","text":"2 online: alice, bob","names":["alice","bob"]}
    {"type":"error","code":"name_taken","text":"name taken: bob is already in use"}

Pure code: no sockets, no threads. An Event renders each format once and
keeps the bytes, so a piece shared by a thousand members is made once.
"""

import collections
import json
import re
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

TEXT = "text"
JSON = "json"
WEB = "web"     # JSON, but a block of lines is one object (with "lines"): WebSocket members

NOTICE_RUN_LIMIT = 3    # joins (or leaves) in a row shown one by one

_encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def dumps(value: Any) -> bytes:
    """One compact JSON line (the text in it is already safe: no controls)."""
    return _encode_json(value).encode("utf-8") + b"\n"


_stamp_cache = [-1, ""]     # [minute since the epoch, its HH:MM]


def clock_stamp(now: Optional[float] = None) -> str:
    """HH:MM in this machine's local time."""
    if now is None:
        return time.strftime("%H:%M", time.localtime())
    minute = int(now // 60)
    if _stamp_cache[0] != minute:
        _stamp_cache[:] = [minute, time.strftime("%H:%M", time.localtime(now))]
    return _stamp_cache[1]


def iso_time(when: float) -> str:
    """UTC with milliseconds: 2026-12-01T07:45:12.345Z."""
    whole = int(when)
    return "%s.%03dZ" % (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)),
                         int((when - whole) * 1000))


def fmt_message(stamp: str, name: str, text: str) -> str:
    return "%s <%s> %s\n" % (stamp, name, text)


def fmt_action(stamp: str, name: str, text: str) -> str:
    return "%s * %s %s\n" % (stamp, name, text)


def fmt_private_in(stamp: str, name: str, text: str) -> str:
    return "%s *%s* %s\n" % (stamp, name, text)


def fmt_private_out(stamp: str, name: str, text: str) -> str:
    return "%s -> *%s* %s\n" % (stamp, name, text)


def fmt_notice(stamp: str, text: str) -> str:
    return "%s -- %s\n" % (stamp, text)


def fmt_error(stamp: str, text: str) -> str:
    return "%s !! %s\n" % (stamp, text)


# --------------------------------------------------------------------------
# Events: what the room relays, each with a room-wide id

Notice = collections.namedtuple("Notice", "kind names others detail")
"""A notice as shown: kind join, leave or rename; names the first names of a
run (of a folded run of renames, the new names; of a single rename,
[old, new]); others how many more the run had; detail the reason of a
single leave."""


def fold_notices(waiting: Sequence[Tuple[str, str, str]],
                 limit: int = NOTICE_RUN_LIMIT) -> List[Notice]:
    """Notices waiting together, long runs folded.

    waiting holds (kind, name, detail): join (detail unused), leave (the
    reason) or rename (the new name). A run of more than limit joins becomes
    one notice "a, b, c and 97 others joined"; leaves and renames alike.
    """
    notices = []    # type: List[Notice]
    start = 0
    while start < len(waiting):
        kind = waiting[start][0]
        end = start + 1
        while end < len(waiting) and waiting[end][0] == kind:
            end += 1
        run = waiting[start:end]
        if kind == "rename":
            run = _chain_renames(run)
        if len(run) > limit:
            shown = [detail if kind == "rename" else name for _, name, detail in run[:limit]]
            notices.append(Notice(kind, shown, len(run) - limit, ""))
        elif kind == "rename":
            notices.extend(Notice(kind, [name, detail], 0, "") for _, name, detail in run)
        else:
            notices.extend(Notice(kind, [name], 0, detail) for _, name, detail in run)
        start = end
    return notices


def _chain_renames(run: Sequence[Tuple[str, str, str]]) -> List[Tuple[str, str, str]]:
    """A run of renames with each member's renames made one: a -> b -> c is
    a -> c, so a hundred renames by one member are one notice."""
    merged = []     # type: List[List[str]]
    by_new = {}     # type: Dict[str, List[str]]
    for kind, old, new in run:
        entry = by_new.pop(old, None)
        if entry is None:
            entry = [kind, old, new]
            merged.append(entry)
        entry[2] = new
        by_new[new] = entry
    return [(kind, old, new) for kind, old, new in merged if old != new]


def notice_text(notice: Notice) -> str:
    if notice.kind == "rename" and not notice.others:
        return "%s is now known as %s" % tuple(notice.names)
    verb = {"join": "joined", "leave": "left", "rename": "took new names"}[notice.kind]
    if notice.others:
        return "%s and %d others %s" % (", ".join(notice.names), notice.others, verb)
    if notice.kind == "leave":
        return "%s left (%s)" % (notice.names[0], notice.detail)
    return "%s joined" % notice.names[0]


def summarize_notices(waiting: Sequence[Tuple[str, str, str]],
                      limit: int = NOTICE_RUN_LIMIT) -> List[str]:
    """The text of notices waiting together, with long runs folded."""
    return [notice_text(notice) for notice in fold_notices(waiting, limit)]


HEAD = b'{"type":"event",'
HEAD_HISTORY = b'{"type":"event","history":true,'


class Event:
    """Events the room ordered together, with ids first .. first + count - 1
    and one time. kind is "message" (block: count LF-ended lines of safe
    text), "action" (text), or a notice (notice: a Notice). first is None
    for events not (yet) given ids: in a cluster, those a server relays
    while it cannot reach the others (JSON: "id": null)."""

    __slots__ = ("first", "count", "time", "kind", "name", "block", "text", "notice",
                 "_text", "_json", "_json_history", "_web", "_web_history")

    def __init__(self, first: int, when: float, kind: str, name: str = "",
                 block: bytes = b"", count: int = 1, text: str = "",
                 notice: Optional[Notice] = None) -> None:
        self.first = first
        self.count = count
        self.time = when
        self.kind = kind
        self.name = name
        self.block = block
        self.text = text
        self.notice = notice
        self._text = None   # type: Optional[bytes]
        self._json = None   # type: Optional[bytes]
        self._json_history = None   # type: Optional[bytes]
        self._web = None    # type: Optional[bytes]
        self._web_history = None    # type: Optional[bytes]

    @property
    def last(self) -> int:
        return self.first + self.count - 1

    def render(self, fmt: str) -> bytes:
        if fmt == TEXT:
            if self._text is None:
                self._text = self._render_text()
            return self._text
        if fmt == WEB and self.count > 1:
            if self._web is None:
                self._web = self._render_web()
            return self._web
        if self._json is None:
            self._json = self._render_json()
        return self._json

    def render_history(self, fmt: str) -> bytes:
        """The event as replayed later. JSON objects carry "history": true;
        TEXT lines are the live ones, between two notices (see replay)."""
        if fmt == TEXT:
            return self.render(TEXT)
        if fmt == WEB and self.count > 1:
            if self._web_history is None:
                self._web_history = self.render(WEB).replace(HEAD, HEAD_HISTORY)
            return self._web_history
        if self._json_history is None:
            # Every object of a rendering starts so, and no text inside one
            # can: a quote in a string is escaped.
            self._json_history = self.render(JSON).replace(HEAD, HEAD_HISTORY)
        return self._json_history

    def render_after(self, fmt: str, after: int) -> bytes:
        """The history rendering of the ids after `after` only: one line
        per id in TEXT and JSON, so a block is cut between lines (WEB: the
        JSON lines, which it reads too)."""
        if after < self.first:
            return self.render_history(fmt)
        whole = self.render_history(JSON if fmt == WEB else fmt)
        lines = whole.split(b"\n")
        return b"\n".join(lines[after - self.first + 1:])

    def _render_text(self) -> bytes:
        stamp = clock_stamp(self.time)
        if self.kind == "message":
            prefix = ("%s <%s> " % (stamp, self.name)).encode("utf-8")
            if self.count == 1:
                return prefix + self.block
            return prefix + self.block[:-1].replace(b"\n", b"\n" + prefix) + b"\n"
        if self.kind == "action":
            return fmt_action(stamp, self.name, self.text).encode("utf-8")
        return fmt_notice(stamp, notice_text(self.notice)).encode("utf-8")

    def _render_web(self) -> bytes:
        """A message block as one object: the id of its first line, and
        "lines" (a third of the bytes of one object a line, and one parse)."""
        head = {"type": "event", "id": self.first, "time": iso_time(self.time),
                "kind": self.kind, "from": self.name}    # type: Dict[str, Any]
        lines = self.block[:-1].split(b"\n")
        if not self.block.translate(None, _JSON_AS_IS):
            return dumps(head)[:-2] + b',"lines":["' + b'","'.join(lines) + b'"]}\n'
        head["lines"] = [line.decode("utf-8") for line in lines]
        return dumps(head)

    def _render_json(self) -> bytes:
        head = {"type": "event", "id": self.first, "time": iso_time(self.time),
                "kind": self.kind}    # type: Dict[str, Any]
        if self.kind == "message":
            if self.first is not None and not self.block.translate(None, _JSON_AS_IS):
                return _json_message_block(head, self.name, self.block)
            lines = self.block[:-1].split(b"\n")
            out = []
            for number, line in enumerate(lines, self.first or 0):
                head["id"] = number if self.first is not None else None
                head["from"] = self.name
                head["text"] = line.decode("utf-8")
                out.append(dumps(head))
            return b"".join(out)
        if self.kind == "action":
            head["from"] = self.name
            head["text"] = self.text
        else:
            notice = self.notice
            if notice.kind == "rename" and not notice.others:
                head["name"], head["new"] = notice.names
            else:
                head["names"] = notice.names
                head["others"] = notice.others
                if notice.kind == "leave" and not notice.others:
                    head["reason"] = notice.detail
            head["text"] = notice_text(notice)
        return dumps(head)


# The bytes JSON leaves as they are in a string (and LF, which splits
# lines): a block with nothing else goes into JSON as it is. Deleting them
# all is one pass in C, several times faster than a regex search.
_JSON_AS_IS = bytes(byte for byte in range(256)
                    if (byte >= 0x20 or byte == 0x0A) and byte not in b'"\\')


def _json_message_block(head: Dict[str, Any], name: str, block: bytes) -> bytes:
    """What _render_json makes of a message block that needs no escaping,
    the same bytes, made with slices and one join instead of an encoder
    call per line: only the id differs from line to line."""
    lines = block[:-1].split(b"\n")
    count = len(lines)
    first = head["id"]
    start = dumps(head)[:-2]    # {"type":"event","id":7,"time":"...","kind":"message"
    before_id = start[:start.index(b'"id":') + 5]
    after_id = start[len(before_id) + len(str(first)):] + b',"from":' + \
        _encode_json(name).encode("utf-8") + b',"text":"'
    parts = [b'"}\n' + before_id] * (4 * count)
    parts[0] = before_id
    parts[1::4] = [str(number).encode() for number in range(first, first + count)]
    parts[2::4] = [after_id] * count
    parts[3::4] = lines
    parts.append(b'"}\n')
    return b"".join(parts)


def render_events(events: Sequence[Event], fmt: str) -> bytes:
    if len(events) == 1:    # a line said: the usual case
        return events[0].render(fmt)
    return b"".join([event.render(fmt) for event in events])


# --------------------------------------------------------------------------
# Replies and errors: for one member, in its format


def reply(fmt: str, code: str, text: str, when: float, **fields: Any) -> bytes:
    """A notice for one member (text may hold several lines)."""
    return _answer(fmt, "reply", fmt_notice, code, text, when, fields)


def error(fmt: str, code: str, text: str, when: float, **fields: Any) -> bytes:
    """An error for one member."""
    return _answer(fmt, "error", fmt_error, code, text, when, fields)


def _answer(fmt: str, kind: str, line, code: str, text: str, when: float,
            fields: Dict[str, Any]) -> bytes:
    if fmt == TEXT:
        stamp = clock_stamp(when)
        return "".join(line(stamp, part) for part in text.split("\n")).encode("utf-8")
    value = {"type": kind, "code": code, "text": text}
    value.update(fields)
    return dumps(value)


def private(fmt: str, when: float, sender: str, target: str, text: str,
            outgoing: bool) -> bytes:
    """A private message, as the target sees it or (outgoing) its sender."""
    if fmt == TEXT:
        stamp = clock_stamp(when)
        if outgoing:
            return fmt_private_out(stamp, target, text).encode("utf-8")
        return fmt_private_in(stamp, sender, text).encode("utf-8")
    return dumps({"type": "private", "time": iso_time(when), "from": sender,
                  "to": target, "text": text})


# --------------------------------------------------------------------------
# Reading it back (the client side)


def parse_json_line(line: str) -> Optional[Dict[str, Any]]:
    """A line of the JSON format as a dict with a "type", or None."""
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        return None
    return value


ServerLine = collections.namedtuple("ServerLine", "stamp kind name text")

_SERVER_LINE = re.compile(
    r"(\d\d:\d\d) (?:<([^>\s]+)> |\* ([^\s]+) |\*([^*\s]+)\* |-> \*([^*\s]+)\* |(--) |(!!) )(.*)\Z",
    re.S)
_GROUP_KINDS = {2: "message", 3: "action", 4: "private_in", 5: "private_out",
                6: "notice", 7: "error"}


def parse_server_line(line: str) -> ServerLine:
    """Classify a line of the TEXT format; unknown lines are 'raw'."""
    match = _SERVER_LINE.match(line)
    if match is None:
        return ServerLine("", "raw", "", line)
    for group, kind in _GROUP_KINDS.items():
        value = match.group(group)
        if value is not None:
            name = value if group <= 5 else ""
            return ServerLine(match.group(1), kind, name, match.group(8))
    return ServerLine("", "raw", "", line)      # pragma: no cover
