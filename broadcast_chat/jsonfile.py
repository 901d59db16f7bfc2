"""clients.json's reading and writing: a JSON file a reader never sees half
written. Pure file code: no sockets, no threads."""

import json
import os
import tempfile
import time
from typing import Any


def iso_utc(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def write_json_atomic(path: str, value: Any) -> None:
    """Write value as JSON so that a reader never sees a partial file.

    The text goes to a temporary file in the same folder, is flushed and
    synced, then replaces the old file in one step. The file is readable by
    its owner only. Raises OSError when it cannot be written.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".clients-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            # Compact: indent= would use the pure-Python encoder, about three
            # times slower.
            json.dump(value, handle, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_json(path: str, default: Any = None) -> Any:
    """Read a JSON file; default when it is missing or not valid JSON."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return default
