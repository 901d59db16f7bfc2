"""What the terminal client shows: events of the JSON format as human
lines, in this machine's local time, coloured if asked. Pure functions."""

import calendar
import hashlib
import re
import time
from typing import Any, Dict, List, Optional

from .names import name_key
from .text import columns, sanitize, width as text_width

RESET = "\033[0m"
DIM = "\033[2m"
BOLD = "\033[1m"
REVERSE = "\033[7m"
RED = "\033[31m"
YELLOW = "\033[33m"
MAGENTA = "\033[35m"
CYAN = "\033[36m"
NAME_COLOURS = ("\033[32m", "\033[34m", "\033[35m", "\033[36m",
                "\033[92m", "\033[94m", "\033[95m", "\033[96m", "\033[33m")


def name_colour(name: str) -> str:
    digest = hashlib.md5(name_key(name).encode("utf-8")).digest()
    return NAME_COLOURS[digest[0] % len(NAME_COLOURS)]


_local_minutes = {}     # type: Dict[str, str]


def local_stamp(iso: Optional[str]) -> str:
    """HH:MM here for a UTC time of the format (2026-12-01T07:45:12.345Z);
    now, when there is none or it cannot be read."""
    if not isinstance(iso, str):
        return time.strftime("%H:%M")
    minute = iso[:16]
    stamp = _local_minutes.get(minute)
    if stamp is None:
        try:
            when = calendar.timegm(time.strptime(minute, "%Y-%m-%dT%H:%M"))
        except ValueError:
            return time.strftime("%H:%M")
        if len(_local_minutes) > 1000:
            _local_minutes.clear()
        stamp = _local_minutes[minute] = time.strftime("%H:%M", time.localtime(when))
    return stamp


def _text(value: Any) -> str:
    return sanitize(value) if isinstance(value, str) else sanitize(str(value))


def _mention_pattern(me: str) -> "re.Pattern":
    return re.compile(r"(?<![\w-])%s(?![\w-])" % re.escape(me), re.I)


def mentions(event: Dict[str, Any], me: str) -> bool:
    """Whether an event calls for the person's attention: someone else's
    message or action that names them, or a private message to them."""
    kind, sender = event.get("type"), event.get("from")
    if sender == me or event.get("history"):
        return False
    if kind == "private":
        return True
    text = event.get("text")
    return (kind == "event" and event.get("kind") in ("message", "action")
            and isinstance(text, str) and bool(me) and _mention_pattern(me).search(text) is not None)


def highlight(text: str, me: str) -> str:
    """text with each mention of the name me shown reversed."""
    return _mention_pattern(me).sub(lambda match: REVERSE + match.group(0) + RESET, text)


def render_event(event: Dict[str, Any], me: str, colour: bool) -> List[str]:
    """The lines shown for one object of the JSON format (none for a kind
    this client does not show)."""
    kind = event.get("type")
    stamp = local_stamp(event.get("time"))
    lead = (DIM + stamp + RESET + " ") if colour else stamp + " "
    if kind == "event":
        what = event.get("kind")
        name = _text(event.get("from", ""))
        text = _text(event.get("text", ""))
        if what == "message":
            if colour:
                if me and name != me:
                    text = highlight(text, me)
                return [lead + name_colour(name) + "<" + name + ">" + RESET + " " + text]
            return [lead + "<" + name + "> " + text]
        if what == "action":
            line = "* " + name + " " + text
            return [lead + (MAGENTA + line + RESET if colour else line)]
        return [notice(lead, text, colour)]
    if kind == "private":
        sender, target = _text(event.get("from", "")), _text(event.get("to", ""))
        text = _text(event.get("text", ""))
        if sender == me and target != me:
            head = "-> *" + target + "*"
            return [lead + (CYAN + head + RESET if colour else head) + " " + text]
        head = "*" + sender + "*"
        return [lead + (BOLD + CYAN + head + RESET if colour else head) + " " + text]
    if kind == "reply":
        return [notice(lead, _text(part), colour)
                for part in str(event.get("text", "")).split("\n")]
    if kind == "error":
        line = "!! " + _text(event.get("text", ""))
        return [lead + (RED + line + RESET if colour else line)]
    return []


def encodable(text: str, encoding: Optional[str]) -> str:
    """text as the stream's encoding can carry it: what it cannot (an emoji
    on an ASCII terminal) becomes a visible escape such as \\U0001f600."""
    if not encoding:
        return text
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return text.encode(encoding, "backslashreplace").decode(encoding)
    except LookupError:     # an encoding Python does not know: nothing to check against
        pass
    return text


def welcome_text(reply: Dict[str, Any]) -> Optional[str]:
    """The welcome reply as one line that names who is here; None for a
    reply without the names (a server older than this client)."""
    name, others, names = reply.get("name"), reply.get("others"), reply.get("names")
    if not (isinstance(name, str) and isinstance(others, int) and isinstance(names, list)):
        return None
    shown = [_text(other) for other in names if isinstance(other, str)]
    if others <= 0:
        here = "You are alone here"
    else:
        here = "{:,} other{} online: {}".format(others, "" if others == 1 else "s",
                                              ", ".join(shown))
        if others > len(shown):
            here += " and {:,} more".format(others - len(shown))
    return "welcome, %s! %s. /help lists the commands." % (_text(name), here)


def notice(lead: str, text: str, colour: bool) -> str:
    line = "-- " + text
    return lead + (YELLOW + line + RESET if colour else line)


def status_line(text: str, colour: bool) -> str:
    """A line of the client's own, as the server's notices look."""
    return notice((DIM + time.strftime("%H:%M") + RESET + " ") if colour
                  else time.strftime("%H:%M") + " ", text, colour)


def error_line(text: str, colour: bool) -> str:
    stamp = time.strftime("%H:%M")
    line = "!! " + text
    return ((DIM + stamp + RESET + " " + RED + line + RESET) if colour
            else stamp + " " + line)


_ESCAPE = re.compile("\x1b\\[[0-9;]*m")
HANG = 6    # continuation lines start under the text, past "HH:MM "


def rows(line: str, width: int) -> int:
    """How many rows of a terminal width columns wide a line of plain text fills."""
    return max(1, (text_width(line) - 1) // max(1, width) + 1)


def _pieces(line: str):
    """line's characters one by one, and its colour escapes whole: (piece, columns)."""
    position = 0
    for match in list(_ESCAPE.finditer(line)) + [None]:
        end = match.start() if match else len(line)
        for ch in line[position:end]:
            yield ch, columns(ch)
        if match:
            yield match.group(0), 0
            position = match.end()


def hang(line: str, width: int, indent: int = HANG) -> str:
    """line wrapped at width columns by hand, each continuation indented:
    text padded to the terminal's edge can then never start a line of its
    own that looks like another sender's ("12:34 <alice> ...")."""
    if width <= indent + 10 or len(line) <= width and not any(
            columns(ch) > 1 for ch in line):
        return line
    out = []        # type: List[str]
    column = 0
    for piece, wide in _pieces(line):
        if column + wide > width:
            out.append("\n" + " " * indent)
            column = indent
        out.append(piece)
        column += wide
    return "".join(out)


def clip(line: str, width: int) -> str:
    """line cut to fit in one row of a terminal width columns wide, with
    "..." where it was cut: a status updated in place must stay one row."""
    limit = max(4, width - 1)   # the last column would leave the cursor waiting to wrap
    if text_width(_ESCAPE.sub("", line)) <= limit:
        return line
    out = []        # type: List[str]
    column = 0
    for piece, wide in _pieces(line):
        column += wide
        if column > limit - 3:
            break
        out.append(piece)
    return "".join(out) + "..." + (RESET if "\x1b" in line else "")
