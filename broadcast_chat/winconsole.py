"""Escape sequences on a Windows console.

Windows 10 and later draw colours and move the cursor for ANSI escape
sequences only once ENABLE_VIRTUAL_TERMINAL_PROCESSING is on for the
console; before that (or on a console that refuses it) they are printed as
text. enable_terminal_sequences() turns it on and says whether it holds.
Importing this module does nothing, on any platform.
"""

import sys
from typing import TextIO

ENABLE_VIRTUAL_TERMINAL_PROCESSING = 0x0004


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
    try:
        import ctypes
        import msvcrt
        from ctypes import wintypes
        handle = msvcrt.get_osfhandle(stream.fileno())
    except (ImportError, OSError, ValueError, AttributeError):
        return False
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    get_mode = kernel32.GetConsoleMode
    get_mode.argtypes = [wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD)]
    get_mode.restype = wintypes.BOOL
    set_mode = kernel32.SetConsoleMode
    set_mode.argtypes = [wintypes.HANDLE, wintypes.DWORD]
    set_mode.restype = wintypes.BOOL
    mode = wintypes.DWORD()
    if not get_mode(handle, ctypes.byref(mode)):
        return False
    if mode.value & ENABLE_VIRTUAL_TERMINAL_PROCESSING:
        return True
    if not set_mode(handle, mode.value | ENABLE_VIRTUAL_TERMINAL_PROCESSING):
        return False
    # Some consoles accept the flag and drop it: believe only what reads back.
    return bool(get_mode(handle, ctypes.byref(mode))
                and mode.value & ENABLE_VIRTUAL_TERMINAL_PROCESSING)
