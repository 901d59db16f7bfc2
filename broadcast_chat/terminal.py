"""The prompt of the terminal client, and lines printed above it.

readline is imported only when an interactive client asks for it: the
server and the piped client never load it (nor a C library through ctypes).
"""

import collections
import os
import select
import shutil
import signal
import sys
import threading
from typing import Callable, Optional

from .text import width

UP_OVER = "\033[1A\r\033[2K"  # up over the last line (a status), to write the next in its place


def load_readline():
    """The readline module, or None (Windows, or a Python built without it)."""
    try:
        import readline
    except ImportError:
        return None
    return readline


class LinePrompt:
    """GNU readline's prompt, run on one thread with what other threads
    want printed above it.

    input() would run readline's key loop without the GIL while the reader
    thread, printing a line, called into readline to draw the prompt again:
    two threads in readline at once, and a key typed at that moment could
    leave the line drawn in pieces. Here readline's callback interface
    (through ctypes; the readline module keeps Tab and history) runs in a
    select() over the terminal and a pipe: above() queues text and writes
    to the pipe, and the thread at the prompt prints it and draws the
    prompt and the half-typed line again, between two keys.
    """

    def __init__(self, readline, library, prompt: Callable[[], str], out) -> None:
        import ctypes
        self.ctypes = ctypes
        self.readline = readline
        self.library = library
        self.prompt = prompt        # called again for each redraw: a rename changes it
        self.out = out
        self.posted = collections.deque()   # type: collections.deque
        self.wake_read, self.wake_write = os.pipe()
        for fd in (self.wake_read, self.wake_write):
            os.set_blocking(fd, False)
        self.line = None            # type: Optional[bytes]
        self.done = False
        self.resized = False
        # Keep a reference: readline holds only the function's address.
        handler_type = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
        self.handler = handler_type(self._line_entered)
        self.free = ctypes.CDLL(None).free
        self.free.argtypes = [ctypes.c_void_p]
        library.rl_callback_handler_install.argtypes = [ctypes.c_char_p, handler_type]
        library.rl_set_prompt.argtypes = [ctypes.c_char_p]
        # Signals are Python's: ^C ends select() with KeyboardInterrupt.
        ctypes.c_int.in_dll(library, "rl_catch_signals").value = 0
        ctypes.c_int.in_dll(library, "rl_catch_sigwinch").value = 0
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGWINCH, self._resize)

    def _encode(self, text: str) -> bytes:
        return text.encode(sys.stdout.encoding or "utf-8", "replace")

    def _line_entered(self, pointer) -> None:
        """readline's line handler: the line (None at ^D), malloc()ed for us."""
        self.line = self.ctypes.string_at(pointer) if pointer else None
        if pointer:
            self.free(pointer)
        self.done = True
        self.library.rl_callback_handler_remove()

    def _resize(self, signum, frame) -> None:
        self.resized = True
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self.wake_write, b"!")
        except BlockingIOError:
            pass        # the pipe is full: the thread at the prompt is woken already

    def above(self, text: str, replaces: bool = False) -> None:
        """Have text printed above the prompt (any thread); replaces: in
        place of the line printed last (a status), if that is still the
        line above the prompt when it is drawn."""
        self.posted.append((text, replaces))
        self._wake()

    def take_posted(self, moved_on: bool = False) -> str:
        """The text queued and not printed yet, taken off the queue, to be
        written above the prompt; moved_on: the screen moved on since the
        last line was printed (Enter), so the first replaces nothing."""
        taken = []
        while self.posted:
            text, replaces = self.posted.popleft()
            taken.append(UP_OVER + text if replaces and not moved_on else text)
            moved_on = False
        return "".join(taken)

    def _rows_above_cursor(self) -> int:
        """The rows the prompt and the line being typed fill above the
        cursor's (a line longer than the terminal is wide wraps)."""
        ctypes = self.ctypes
        try:
            point = ctypes.c_int.in_dll(self.library, "rl_point").value
            typed = ctypes.c_char_p.in_dll(self.library, "rl_line_buffer").value or b""
        except (ValueError, AttributeError):
            return 0
        before = self.prompt() + typed[:point].decode(sys.stdout.encoding or "utf-8", "replace")
        return width(before) // max(1, shutil.get_terminal_size()[0])

    def _draw_posted(self) -> None:
        text = self.take_posted()
        if text:
            # Clear the prompt and the line, every row of them, print, and
            # have readline draw them again (forced: its redisplay() draws
            # nothing while it thinks the line is still on screen).
            up = self._rows_above_cursor()
            self.out.write(("\033[%dA" % up if up else "") + "\r\033[J" + text)
            self.out.flush()
            self.library.rl_set_prompt(self._encode(self.prompt()))
            self.library.rl_forced_update_display()

    def read_line(self) -> str:
        """A line typed at the prompt, like input(); EOFError at ^D."""
        library = self.library
        self.out.flush()
        self.done, self.line = False, None
        library.rl_callback_handler_install(self._encode(self.prompt()), self.handler)
        try:
            while not self.done:
                if self.resized:
                    self.resized = False
                    library.rl_resize_terminal()
                ready = select.select([sys.stdin.fileno(), self.wake_read], [], [])[0]
                if self.wake_read in ready:
                    try:
                        os.read(self.wake_read, 4096)
                    except BlockingIOError:
                        pass
                    self._draw_posted()
                if sys.stdin.fileno() in ready:
                    library.rl_callback_read_char()
        except BaseException:
            if not self.done:   # as CPython's readline does on a signal
                library.rl_free_line_state()
                if hasattr(library, "rl_callback_sigcleanup"):
                    library.rl_callback_sigcleanup()
                library.rl_cleanup_after_signal()
                library.rl_callback_handler_remove()
            raise
        if self.line is None:
            raise EOFError
        text = self.line.decode(sys.stdin.encoding or "utf-8", sys.stdin.errors or "strict")
        self._remember(text)
        return text

    def _remember(self, text: str) -> None:
        """Add the line to readline's history, as input() does: not an
        empty one, nor the same line twice in a row."""
        readline = self.readline
        if not text:
            return
        length = readline.get_current_history_length()
        if length == 0 or readline.get_history_item(length) != text:
            readline.add_history(text)


def open_line_prompt(readline, prompt: Callable[[], str], out) -> Optional[LinePrompt]:
    """A LinePrompt on GNU readline, or None (libedit, no ctypes, not a
    terminal): then input() reads the line and a line printed meanwhile is
    drawn above it by hand."""
    if readline is None or "libedit" in (getattr(readline, "__doc__", "") or ""):
        return None
    if getattr(readline, "backend", "readline") != "readline":     # 3.13: "editline"
        return None
    try:
        import ctypes
        library = ctypes.CDLL(readline.__file__)    # its symbols include libreadline's
        for symbol in ("rl_callback_handler_install", "rl_callback_read_char",
                       "rl_callback_handler_remove", "rl_forced_update_display",
                       "rl_set_prompt", "rl_catch_signals", "rl_catch_sigwinch",
                       "rl_resize_terminal", "rl_free_line_state",
                       "rl_cleanup_after_signal"):
            getattr(library, symbol)
        return LinePrompt(readline, library, prompt, out)
    except (ImportError, OSError, AttributeError, ValueError):
        return None


def set_completer(readline, complete: Callable[[str, int, bool], Optional[str]]) -> None:
    """Tab calls complete(word, state, at_start) (readline's protocol, and
    whether the word starts the line); words are split at spaces only, so
    that a name with a dash or a dot is one word."""
    def completer(word: str, state: int) -> Optional[str]:
        return complete(word, state, not readline.get_line_buffer()[:readline.get_begidx()].strip())
    readline.set_completer(completer)
    readline.set_completer_delims(" \t")
    if "libedit" in (getattr(readline, "__doc__", "") or ""):
        readline.parse_and_bind("bind ^I rl_complete")
    else:
        readline.parse_and_bind("tab: complete")
