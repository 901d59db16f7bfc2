"""The client's prompt on a Windows console, which has no readline.

Keys come from msvcrt (kbhit() and getwch()) in the main thread and go
through lineedit's WindowsKeys and LineEditor; a chat line from the reader
thread is printed above the half-typed line with LineEditor.render_above().
The keys, the output and the width are given to ConsolePrompt, so its logic
runs with fakes on any platform; open_console_prompt() makes the real one.
"""

import errno
import os
import shutil
import sys
import threading
import time
from typing import Callable, Optional, TextIO

from . import winconsole
from .lineedit import END, INTERRUPT, REDRAW, SUBMIT, LineEditor, WindowsKeys


class ConsolePrompt:
    """A prompt with a line editor: read_line() in one thread,
    print_above() from any thread.

    key_waiting() says whether read_key() would return at once; read_line()
    polls it, so that it notices when it should stop without a signal.
    """

    poll_interval = 0.02    # seconds between two looks at the keyboard

    def __init__(self, out: TextIO, prompt: Callable[[], str],
                 read_key: Callable[[], str], key_waiting: Callable[[], bool],
                 width: Callable[[], int]) -> None:
        self.out = out
        self.prompt = prompt
        self.read_key = read_key
        self.key_waiting = key_waiting
        self.width = width
        self.editor = LineEditor()
        self.keys = WindowsKeys()
        self.lock = threading.Lock()    # guards editor and out

    def print_above(self, text: str) -> None:
        """Print text on its own line above the prompt and the half-typed line."""
        with self.lock:
            self._write(self.editor.render_above(text, self.prompt(), self.width()))

    def read_line(self, stop: threading.Event) -> Optional[str]:
        """The next line typed, left on screen; None at the end of input
        (Ctrl-Z then Enter, or Ctrl-D on an empty line) or once stop is set.
        Ctrl-C raises KeyboardInterrupt, as input() does."""
        with self.lock:
            self._write(self.editor.render(self.prompt(), self.width()))
        while not stop.is_set():
            if not self.key_waiting():
                time.sleep(self.poll_interval)  # a console has nothing to wait on with a timeout
                continue
            for key in self.keys.feed(self.read_key()):
                with self.lock:
                    before = self.editor.buffer
                    outcome = self.editor.feed(key)
                    if outcome.kind == REDRAW:
                        self._write(self.editor.render(self.prompt(), self.width()))
                    elif outcome.kind == SUBMIT:
                        self._write("\r\x1b[2K" + self.prompt() + outcome.line + "\r\n")
                        return outcome.line
                    elif outcome.kind == END:
                        self._write("\r\n")
                        return None
                    elif outcome.kind == INTERRUPT:
                        self._write("\r\x1b[2K" + self.prompt() + before + "^C\r\n")
                        raise KeyboardInterrupt
        return None

    def _write(self, text: str) -> None:
        write_text(self.out, text)
        self.out.flush()


def write_text(stream: TextIO, text: str) -> None:
    """stream.write(text), with what its encoding lacks shown as \\x.. escapes
    (a console or pipe in a legacy code page) rather than an exception."""
    try:
        stream.write(text)
    except UnicodeEncodeError:
        encoding = getattr(stream, "encoding", None) or "ascii"
        stream.write(text.encode(encoding, "backslashreplace").decode(encoding))


def reader_gone(exc: OSError) -> bool:
    """Whether a write failed because the pipe's reader closed it: EPIPE, or
    EINVAL on Windows, where CPython does not make that a BrokenPipeError."""
    return exc.errno == errno.EPIPE or (sys.platform == "win32" and exc.errno == errno.EINVAL)


def silence(stream: TextIO) -> None:
    """Send what is still written to stream nowhere (what Python flushes at exit too)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def open_console_prompt(prompt: Callable[[], str],
                        out: TextIO = sys.stdout) -> Optional[ConsolePrompt]:
    """The prompt for a Windows console: None elsewhere, when standard input
    is no console, or when the console does not draw escape sequences
    (before Windows 10), where a line cannot be redrawn."""
    if sys.platform != "win32":
        return None
    try:
        import msvcrt
    except ImportError:
        return None
    if not (winconsole.is_console(sys.stdin) and winconsole.enable_terminal_sequences(out)):
        return None
    return ConsolePrompt(out, prompt, msvcrt.getwch, msvcrt.kbhit,
                         lambda: shutil.get_terminal_size().columns)
