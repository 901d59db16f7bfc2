"""enable_terminal_sequences(): True off Windows; on Windows, True only for
a console that takes escape sequences (never for a pipe, a file or NUL)."""

import io
import os
import subprocess
import sys
import tempfile
import unittest

from broadcast_chat import winconsole

WINDOWS = sys.platform == "win32"


class EnableTerminalSequencesTest(unittest.TestCase):
    @unittest.skipIf(WINDOWS, "elsewhere than Windows")
    def test_elsewhere_a_terminal_takes_them_itself(self):
        self.assertTrue(winconsole.enable_terminal_sequences(io.StringIO()))

    @unittest.skipUnless(WINDOWS, "Windows consoles")
    def test_a_stream_without_a_descriptor_is_no_console(self):
        self.assertFalse(winconsole.enable_terminal_sequences(io.StringIO()))

    @unittest.skipUnless(WINDOWS, "Windows consoles")
    def test_a_file_is_no_console(self):
        with tempfile.TemporaryFile("w") as handle:
            self.assertFalse(winconsole.enable_terminal_sequences(handle))

    @unittest.skipUnless(WINDOWS, "Windows consoles")
    def test_nul_is_no_console_though_isatty_says_so(self):
        with open(os.devnull, "w") as handle:
            self.assertFalse(winconsole.enable_terminal_sequences(handle))

    @unittest.skipUnless(WINDOWS, "Windows consoles")
    def test_a_pipe_is_no_console(self):
        code = ("import sys; from broadcast_chat import winconsole; "
                "print(winconsole.enable_terminal_sequences(sys.stdout))")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out = subprocess.run([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, cwd=root, universal_newlines=True,
                             timeout=30).stdout
        self.assertEqual(out.strip(), "False")


if __name__ == "__main__":
    unittest.main()
