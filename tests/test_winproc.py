"""tests/winproc.py against a child whose threads and memory it sets."""

import subprocess
import sys
import unittest

from tests import winproc

CHILD = r"""
import sys, threading
held = []
for line in sys.stdin:
    what, count = line.split()
    for _ in range(int(count)):
        if what == "thread":
            stop = threading.Event()
            threading.Thread(target=stop.wait, daemon=True).start()
        elif what == "mib":
            held.append(bytearray(1 << 20))
    print("done", flush=True)
"""


@unittest.skipUnless(sys.platform == "win32", "Windows process information")
class WinProcTest(unittest.TestCase):
    def setUp(self) -> None:
        self.child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, universal_newlines=True)
        self.addCleanup(self.child.wait)
        self.addCleanup(self.child.kill)
        self.addCleanup(self.child.stdout.close)
        self.addCleanup(self.child.stdin.close)
        self.ask("thread", 0)   # started, and the interpreter in its loop

    def ask(self, what: str, count: int) -> None:
        self.child.stdin.write("%s %d\n" % (what, count))
        self.child.stdin.flush()
        self.assertEqual(self.child.stdout.readline(), "done\n")

    def test_threads(self):
        before = winproc.threads(self.child.pid)
        self.assertGreaterEqual(before, 1)
        self.ask("thread", 3)
        self.assertEqual(winproc.threads(self.child.pid), before + 3)

    def test_rss_follows_memory_in_use(self):
        before = winproc.rss_kb(self.child.pid)
        self.ask("mib", 30)
        self.assertGreater(winproc.rss_kb(self.child.pid), before + 25 * 1024)

    def test_no_such_process(self):
        self.assertEqual(winproc.threads(0x7FFFFFF0), 0)
        with self.assertRaises(OSError):
            winproc.rss_kb(0x7FFFFFF0)


if __name__ == "__main__":
    unittest.main()
