"""Redrawing the line being typed after a line is printed above it.

readline is imported only when an interactive client asks for it: the
server and the piped client never load it (nor a C library through ctypes).
"""

import sys
import threading
from typing import Callable, Optional


def load_readline():
    """The readline module, or None (Windows, or a Python built without it)."""
    try:
        import readline
    except ImportError:
        return None
    return readline


def find_redraw(readline) -> Optional[Callable[[str], None]]:
    """A function that draws the prompt and the half-typed line again on a
    fresh line, with the cursor where the user left it, or None.

    That takes GNU readline's rl_set_prompt() and rl_forced_update_display()
    (through ctypes): the readline module only offers redisplay(), which
    draws nothing while readline thinks the line is still on screen. None
    without GNU readline (libedit, Windows): then the line is drawn again by
    hand and the cursor ends after it.

    Known flaw: the reader thread calls it while the main thread may be in
    readline handling a key (CPython's readline loop runs without the GIL),
    so a key typed at that moment can leave the line drawn in pieces until
    the next redraw. The cure is to run both on one thread (readline's
    callback interface, with the socket beside the keys in one select()).
    """
    if readline is None or "libedit" in (getattr(readline, "__doc__", "") or ""):
        return None
    try:
        import ctypes
        library = ctypes.CDLL(readline.__file__)    # its symbols include libreadline's
        set_prompt = library.rl_set_prompt
        forced_update = library.rl_forced_update_display
    except (ImportError, OSError, AttributeError):
        return None
    set_prompt.argtypes = [ctypes.c_char_p]

    def redraw(prompt: str) -> None:
        # readline copies the prompt; a rename changes it mid-line.
        set_prompt(prompt.encode(sys.stdout.encoding or "utf-8", "replace"))
        forced_update()
    return redraw


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


def guard_prompt(readline, lock: threading.Lock, ready: Callable[[], None]) -> bool:
    """Hold lock from just before readline draws its prompt until it is
    drawn, then call ready() and let go: a line printed by another thread
    (under lock) then never cuts the prompt in two. False where readline
    has not both hooks: nothing is done."""
    if not (hasattr(readline, "set_startup_hook") and hasattr(readline, "set_pre_input_hook")):
        return False

    def before_prompt() -> None:
        lock.acquire()

    def after_prompt() -> None:
        try:
            ready()
        finally:
            lock.release()
    readline.set_startup_hook(before_prompt)
    readline.set_pre_input_hook(after_prompt)
    return True
