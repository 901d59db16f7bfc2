"""What the terminal client knows of the room for the person typing: the
names it has seen (for Tab completion) and who last wrote privately (for
/reply). Pure: fed the objects of the JSON format, asked by readline."""

from typing import Any, Dict, List, Optional

from .names import name_key
from .protocol import COMMAND_USAGE

CLIENT_COMMANDS = ("reply", "r")    # handled by the client: /reply TEXT is /msg NAME TEXT
COMMANDS = sorted("/" + word for word in list(COMMAND_USAGE) + list(CLIENT_COMMANDS)
                  if word not in ("hello", "pass"))
NAMES_MAX = 1000    # names remembered; a /who answers for at most 100 anyway


class RoomMemory:
    """The names seen in /who answers, welcomes, joins, leaves and renames,
    and the sender of the last private message."""

    def __init__(self) -> None:
        self.names = {}     # type: Dict[str, str]  by name_key, as spelled
        self.last_private = None   # type: Optional[str]
        self.matches = []   # type: List[str]

    def see(self, got: Dict[str, Any], me: str) -> None:
        kind, code = got.get("type"), got.get("code")
        if kind == "reply" and code in ("who", "welcome"):
            self.add(got.get("names"))
        elif kind == "private" and got.get("from") != me:
            sender = got.get("from")
            if isinstance(sender, str):
                self.last_private = sender
                self.add([sender])
        elif kind == "event":
            what = got.get("kind")
            if what in ("message", "action"):
                self.add([got.get("from")])
            elif what == "join":
                self.add(got.get("names"))
            elif what == "leave":
                for name in got.get("names") or ():
                    if isinstance(name, str):
                        self.names.pop(name_key(name), None)
            elif what == "rename":
                old, new = got.get("name"), got.get("new")
                if isinstance(old, str):
                    self.names.pop(name_key(old), None)
                self.add([new])

    def add(self, names: Any) -> None:
        if not isinstance(names, list):
            return
        for name in names:
            if isinstance(name, str) and name and len(self.names) < NAMES_MAX:
                self.names[name_key(name)] = name

    def candidates(self, word: str, at_start: bool) -> List[str]:
        """What word may be completed to: a command at the start of the line, else a name."""
        if at_start and word.startswith("/"):
            return [command + " " for command in COMMANDS if command.startswith(word.lower())]
        # readline in Python adds no space after a completion: it is part of it.
        folded = word.casefold()
        return sorted((name + " " for name in self.names.values()
                       if name.casefold().startswith(folded)), key=str.casefold)

    def complete(self, word: str, state: int, at_start: bool) -> Optional[str]:
        """readline's completer protocol: the state-th candidate, then None."""
        if state == 0:
            self.matches = self.candidates(word, at_start)
        return self.matches[state] if state < len(self.matches) else None

    def expand_reply(self, line: str) -> Optional[str]:
        """/reply TEXT (or /r TEXT) as /msg to whoever wrote privately last;
        the line as it is if it is no /reply; None if there is nobody to answer."""
        word, _, text = line.partition(" ")
        if word.lower() not in ("/reply", "/r"):
            return line
        if self.last_private is None:
            return None
        return "/msg %s %s" % (self.last_private, text.strip())
