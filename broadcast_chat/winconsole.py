"""Escape sequences on a Windows console.

Windows 10 and later draw colours and move the cursor for ANSI escape
sequences only once ENABLE_VIRTUAL_TERMINAL_PROCESSING is on for the
console; before that (or on a console that refuses it) they are printed as
text. enable_terminal_sequences() turns it on and says whether it holds.
Importing this module does nothing, on any platform.
"""

import sys
from typing import Optional, TextIO

ENABLE_VIRTUAL_TERMINAL_PROCESSING = 0x0004


def _console_mode_calls(stream: TextIO):
    """(handle, GetConsoleMode, SetConsoleMode) for the console behind
    stream, or None where there is none to ask (not Windows, no descriptor)."""
    try:
        import ctypes
        import msvcrt
        from ctypes import wintypes
        handle = msvcrt.get_osfhandle(stream.fileno())
    except (ImportError, OSError, ValueError, AttributeError):
        return None
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    get_mode = kernel32.GetConsoleMode
    get_mode.argtypes = [wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD)]
    get_mode.restype = wintypes.BOOL
    set_mode = kernel32.SetConsoleMode
    set_mode.argtypes = [wintypes.HANDLE, wintypes.DWORD]
    set_mode.restype = wintypes.BOOL

    def read_mode() -> Optional[int]:
        mode = wintypes.DWORD()
        return mode.value if get_mode(handle, ctypes.byref(mode)) else None
    return handle, read_mode, set_mode


def is_console(stream: TextIO) -> bool:
    """Whether stream is a Windows console (isatty() also says so for NUL).
    False elsewhere than Windows."""
    if sys.platform != "win32":
        return False
    calls = _console_mode_calls(stream)
    return calls is not None and calls[1]() is not None


def enable_terminal_sequences(stream: TextIO = sys.stdout) -> bool:
    """Whether escape sequences written to stream are drawn, not shown.

    On Windows: True once virtual-terminal processing is on for the console
    behind stream (this turns it on), False where it cannot be (a console
    older than Windows 10, or stream not a console at all: a pipe, a file,
    NUL, which isatty() calls a terminal). Elsewhere True: a terminal
    interprets them itself, and whether stream is one is the caller's check.
    """
    if sys.platform != "win32":
        return True
    calls = _console_mode_calls(stream)
    if calls is None:
        return False
    handle, read_mode, set_mode = calls
    mode = read_mode()
    if mode is None:
        return False
    if mode & ENABLE_VIRTUAL_TERMINAL_PROCESSING:
        return True
    if not set_mode(handle, mode | ENABLE_VIRTUAL_TERMINAL_PROCESSING):
        return False
    # Some consoles accept the flag and drop it: believe only what reads back.
    mode = read_mode()
    return bool(mode is not None and mode & ENABLE_VIRTUAL_TERMINAL_PROCESSING)
