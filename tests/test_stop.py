"""The server stops cleanly on a signal raised inside its own process: the
path that Ctrl-C, Ctrl-Break (Windows) and SIGTERM take. On every platform,
since a signal sent from outside cannot stop a Windows process cleanly
(see support.needs_posix_signals): here a thread of the server raises it
when a line comes on its standard input."""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from tests.support import (CHILD, ROOT, SERVER, WINDOWS, Peer, ServerProcess, ServerTestCase,
                           TerminalClient, drain)

RAISE_ON_INPUT = (
    "import os, signal, sys, threading\n"
    "sys.path.insert(0, %r)\n"
    "from broadcast_chat.startup import main\n"
    "signum = getattr(signal, sys.argv.pop(1))\n"
    "def stop():\n"
    "    sys.stdin.readline()\n"
    "    if hasattr(signal, 'raise_signal'):\n"
    "        signal.raise_signal(signum)\n"
    "    else:\n"    # Python 3.6 and 3.7: POSIX only, where this is the same
    "        os.kill(os.getpid(), signum)\n"
    "threading.Thread(target=stop, daemon=True).start()\n"
    "sys.exit(main(sys.argv[1:]))\n" % ROOT)


class RaisedSignalTest(ServerTestCase):
    def setUp(self) -> None:
        pass    # each test starts its own server

    def start_stoppable(self, signal_name: str) -> ServerProcess:
        server = ServerProcess()
        server.command = CHILD + ["-c", RAISE_ON_INPUT, signal_name]
        self.addCleanup(server.__exit__)
        proc = subprocess.Popen(server.command + server.args, cwd=server.folder,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=server.env)
        server.proc = proc
        server._threads = [drain(proc.stdout, server.log), drain(proc.stderr, server.errors)]
        server.port = int(server.log.expect(r"^Server running on \S+:(\d+)$").group(1))
        return server

    def check_stop(self, signal_name: str) -> None:
        server = self.start_stoppable(signal_name)
        alice, bob = self.peer("alice", server), self.peer("bob", server)
        alice.expect(r"-- bob joined$")
        server.wait_clients(lambda r: len(r) == 2)
        started = time.monotonic()
        server.proc.stdin.write(b"stop\n")
        server.proc.stdin.close()
        for peer in (alice, bob):
            lines = peer.expect_closed()
            self.assertTrue(lines, "no goodbye")
            self.assertRegex(lines[-1], r"^\d\d:\d\d -- server shutting down$")
            self.assertFalse([line for line in lines if re.search(r"left", line)])
        rc = server.wait(3)
        self.assertLess(time.monotonic() - started, 2.0)
        self.assertEqual(rc, 0)
        self.assertEqual(server.errors.text(), "")
        self.assertEqual(server.clients(), [])
        server.log.expect(r" stop server stopped$")

    def test_ctrl_c(self):
        self.check_stop("SIGINT")

    @unittest.skipUnless(hasattr(signal, "SIGBREAK"), "Ctrl-Break is Windows'")
    def test_ctrl_break(self):
        self.check_stop("SIGBREAK")

    def test_sigterm(self):
        self.check_stop("SIGTERM")


@unittest.skipIf(WINDOWS, "a pseudo-terminal (POSIX)")
class TerminalStopTest(unittest.TestCase):
    def test_ctrl_c_on_a_terminal_puts_the_last_log_lines_below_the_echoed_c(self):
        folder = tempfile.mkdtemp(prefix="chat-test-")
        self.addCleanup(shutil.rmtree, folder, True)
        tty = TerminalClient(0, command=[SERVER, "--port", "0", "--clients-file",
                                         os.path.join(folder, "clients.json")])
        self.addCleanup(tty.close)
        port = int(tty.expect(r"Server running on \S+:(\d+)\r\n").group(1))
        peer = Peer(port, "alice")
        self.addCleanup(peer.close)
        tty.expect(r"join alice ")
        tty.type("\x03")     # Ctrl-C: the terminal echoes ^C and sends SIGINT
        tty.expect(r"\^C\r\n\d{4}-\d\d-\d\d \d\d:\d\d:\d\d leave alice ")
        tty.expect(r"stop server stopped\r\n")
        self.assertEqual(tty.wait(), 0)


if __name__ == "__main__":
    unittest.main()
