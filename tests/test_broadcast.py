"""broadcast.py: `start` runs the server, `connect` the client (the seed's
`broadcast-server start` once installed)."""

import os
import signal
import subprocess
import tempfile
import unittest

from tests.support import CHILD, PYTHON, ROOT, TIMEOUT, WINDOWS, LineLog, Peer, child_env, drain

BROADCAST = os.path.join(ROOT, "broadcast.py")


class BroadcastCommandTest(unittest.TestCase):
    def test_start_and_connect(self):
        folder = tempfile.TemporaryDirectory(prefix="chat-test-")
        self.addCleanup(folder.cleanup)
        started = subprocess.Popen(
            CHILD + [BROADCAST, "start", "--port", "0",
             "--clients-file", os.path.join(folder.name, "clients.json")],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=child_env(), cwd=folder.name)
        self.addCleanup(started.stderr.close)     # cleanups run last first:
        self.addCleanup(started.stdout.close)     # kill, wait, then close the pipes
        self.addCleanup(started.wait)
        self.addCleanup(started.kill)
        log, errors = LineLog(), LineLog()
        readers = [drain(started.stdout, log), drain(started.stderr, errors)]
        port = int(log.expect(r"^Server running on 127\.0\.0\.1:(\d+)$").group(1))
        with Peer(port, "alice") as alice:
            result = subprocess.run(
                CHILD + [BROADCAST, "connect", "--port", str(port), "--name", "bot"],
                input="hello from broadcast.py\n", stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, universal_newlines=True, env=child_env(),
                timeout=TIMEOUT)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertRegex(result.stdout, r"-- welcome, bot! ")
            alice.expect(r"^\d\d:\d\d <bot> hello from broadcast\.py$")
        if WINDOWS:     # no signal to stop it cleanly: see support.needs_posix_signals
            started.kill()
            started.wait(TIMEOUT)
        else:
            started.send_signal(signal.SIGTERM)
            self.assertEqual(started.wait(TIMEOUT), 0)
        for reader in readers:
            reader.join(TIMEOUT)
        self.assertNotIn("Traceback", errors.text())

    def test_version_and_a_missing_command(self):
        version = subprocess.run(CHILD + [BROADCAST, "--version"], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, universal_newlines=True,
                                 timeout=TIMEOUT)
        self.assertEqual(version.returncode, 0)
        self.assertRegex(version.stdout, r"^broadcast\.py \d+\.\d+\.\d+$")   # as it was started
        bare = subprocess.run(CHILD + [BROADCAST], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, timeout=TIMEOUT)
        self.assertEqual(bare.returncode, 2)
        self.assertIn("start", bare.stderr)
        self.assertNotIn("Traceback", bare.stderr)


if __name__ == "__main__":
    unittest.main()


class LayoutTest(unittest.TestCase):
    """What the distribution installs, and what importing costs."""

    def test_only_the_package_is_installed_with_one_version(self):
        try:
            import tomllib
        except ImportError:
            self.skipTest("tomllib is new in Python 3.11")
        with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
            project = tomllib.load(handle)
        setuptools = project["tool"]["setuptools"]
        self.assertEqual(setuptools["packages"], ["broadcast_chat"])
        self.assertNotIn("py-modules", setuptools)
        self.assertEqual(project["project"]["dynamic"], ["version"])
        self.assertEqual(setuptools["dynamic"]["version"], {"attr": "broadcast_chat.__version__"})
        for target in project["project"]["scripts"].values():
            self.assertTrue(target.startswith("broadcast_chat."), target)

    def test_installing_on_python_3_6_is_refused_with_the_reason(self):
        # pip 18.1 (Python 3.6's) runs setup.py; pyproject.toml asks it for
        # no setuptools there, for none supports 3.6 and [project] both.
        code = ("import sys; sys.version_info = (3, 6, 15); sys.argv = ['setup.py', 'egg_info']\n"
                "exec(compile(open('setup.py').read(), 'setup.py', 'exec'))\n")
        done = subprocess.run([PYTHON, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, timeout=TIMEOUT)
        self.assertEqual(done.returncode, 1)
        self.assertEqual(done.stderr, "Broadcast Chat installs on Python 3.7 or newer (this is "
                         "Python 3.6). On 3.6 nothing needs installing: run python3 server.py "
                         "and python3 client.py from the checkout.\n")
        with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as handle:
            self.assertIn('requires = ["setuptools>=61; python_version >= \'3.7\'"]',
                          handle.read())

    def test_no_module_is_over_about_600_lines(self):
        folder = os.path.join(ROOT, "broadcast_chat")
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py") and not name.startswith("_"):    # _confusables: data
                with open(os.path.join(folder, name), encoding="utf-8") as handle:
                    self.assertLessEqual(sum(1 for _ in handle), 620, name)

    def test_starting_the_server_loads_neither_readline_nor_ctypes(self):
        code = ("import sys; sys.argv = ['x', '--version']\n"
                "from broadcast_chat import cli, server\n"
                "print(sorted(m for m in ('readline', 'ctypes') if m in sys.modules))\n")
        out = subprocess.run(CHILD + ["-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                             universal_newlines=True, timeout=TIMEOUT).stdout
        self.assertEqual(out.strip(), "[]")

    def test_importing_changes_no_process_wide_setting(self):
        code = ("import sys, threading\n"
                "before = (sys.getswitchinterval(), threading.stack_size())\n"
                "import helpers, server, client, broadcast\n"
                "from broadcast_chat import room, writer, session, server as s\n"
                "print(before == (sys.getswitchinterval(), threading.stack_size()))\n")
        out = subprocess.run(CHILD + ["-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                             universal_newlines=True, timeout=TIMEOUT).stdout
        self.assertEqual(out.strip(), "True")
