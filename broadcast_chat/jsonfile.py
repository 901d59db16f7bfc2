"""clients.json's reading and writing: a JSON file a reader never sees half
written. Pure file code: no sockets, no threads.

On Windows a file that another process has open without FILE_SHARE_DELETE
(as Python's open() and most programs open files) cannot be replaced:
os.replace() raises PermissionError (WinError 5, access denied) until that
reader closes it; and a reader that opens the file at the moment it is
replaced gets PermissionError too. Readers of clients.json hold it for
milliseconds, so on Windows both sides try again for a bounded while before
the error counts. On POSIX neither happens, and a PermissionError is a real
permission problem: it counts at once.
"""


import json
import os
import sys
import tempfile
import time
from typing import Any, Callable

# How long a Windows reader may keep the file from being replaced before
# the writer gives up: a reader of a small JSON file needs milliseconds.
REPLACE_PATIENCE = 1.0
ON_WINDOWS = sys.platform == "win32"


def iso_utc(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def patiently(action: Callable[[], Any], patience: float, windows: bool = ON_WINDOWS) -> Any:
    """action(); on Windows, tried again for up to patience seconds while it
    raises PermissionError, waiting 1 ms, then 2, then 4 ms between tries (a
    reader that holds the file most of the time leaves gaps of milliseconds).
    Raises the last error after that."""
    deadline = time.monotonic() + patience
    delay = 0.001
    while True:
        try:
            return action()
        except PermissionError:
            left = deadline - time.monotonic()
            if not windows or left <= 0:
                raise
            time.sleep(min(delay, left))   # waiting out another process, not synchronisation
            delay = min(delay * 2, 0.004)


def replace(source: str, target: str, patience: float = REPLACE_PATIENCE) -> None:
    """os.replace(source, target), waiting out Windows readers of target."""
    patiently(lambda: os.replace(source, target), patience)


def write_json_atomic(path: str, value: Any, patience: float = REPLACE_PATIENCE) -> None:
    """Write value as JSON so that a reader never sees a partial file.

    The text goes to a temporary file in the same folder, is flushed and
    synced, then replaces the old file in one step (see replace()). The
    file is readable by its owner only (POSIX modes). Raises OSError when
    it cannot be written; the temporary file is removed then.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".clients-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            # One string from dumps(), compact: json.dump() and indent= both
            # take the pure-Python encoder, several times slower.
            handle.write(json.dumps(value, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        replace(tmp, path, patience)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_json(path: str, default: Any = None, patience: float = REPLACE_PATIENCE) -> Any:
    """Read a JSON file; default when it is missing, not valid JSON, or
    (on Windows) still being replaced once patience has run out."""
    def load() -> Any:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    try:
        return patiently(load, patience)
    except (OSError, ValueError):
        return default
