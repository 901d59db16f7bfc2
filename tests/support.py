"""Test support: real server processes, line-reading sockets, deadlines.

Nothing here sleeps to synchronise: every wait is for a condition, with a
deadline, and fails loudly when the deadline passes.
"""

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(ROOT, "server.py")
CLIENT = os.path.join(ROOT, "client.py")
TIMEOUT = 10.0


def wait_until(predicate: Callable[[], object], timeout: float = TIMEOUT,
               what: str = "condition") -> object:
    """Poll predicate until it is true; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %g s waiting for %s" % (timeout, what))
        time.sleep(delay)   # polling interval, not synchronisation
        delay = min(delay * 2, 0.05)


class LineSocket:
    """A client socket read line by line, with expect(regex)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.buffer = b""
        self.lines = []     # type: List[str]   every line received, in order
        self.raw_lines = []  # type: List[bytes]  the same lines, as the bytes sent

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode("utf-8"))

    @classmethod
    def wrap(cls, sock: socket.socket) -> "LineSocket":
        """A LineSocket over a socket connected some other way (a source address, options)."""
        self = cls.__new__(cls)
        self.sock = sock
        self.buffer = b""
        self.lines = []
        self.raw_lines = []
        return self

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self, text: str) -> None:
        self.send(text + "\n")

    def _read(self, timeout: float) -> bool:
        """Read once; False at end of stream."""
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buffer += data
        *complete, self.buffer = self.buffer.split(b"\n")
        self.raw_lines.extend(complete)
        self.lines.extend(line.decode("utf-8", "replace") for line in complete)
        return True

    def expect(self, pattern: str, timeout: float = TIMEOUT, start: int = 0) -> str:
        """The first line (from index start on) matching pattern; waits for it."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        index = start
        while True:
            while index < len(self.lines):
                if regex.search(self.lines[index]):
                    return self.lines[index]
                index += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no line matching %r; got %r" % (pattern, self.lines[-10:]))
            try:
                if not self._read(left):
                    raise AssertionError("connection closed before a line matching %r; got %r"
                                         % (pattern, self.lines[-10:]))
            except socket.timeout:
                pass

    def expect_closed(self, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not self._read(max(0.01, deadline - time.monotonic())):
                    return
            except socket.timeout:
                pass
            except OSError:
                return
        raise AssertionError("connection still open after %g s" % timeout)

    def join(self, name: str) -> "LineSocket":
        self.line("/nick " + name)
        self.expect(r"-- welcome, %s!" % re.escape(name))
        return self

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class ServerProcess:
    """server.py in a child process on a free port, its log collected."""

    def __init__(self, *args: str, clients_file: Optional[str] = None,
                 python: str = sys.executable, env: Optional[dict] = None) -> None:
        self.folder = tempfile.mkdtemp(prefix="chat-test-")
        self.clients_file = clients_file or os.path.join(self.folder, "clients.json")
        self.args = list(args)
        self.python = python
        self.env = env
        self.log = []       # type: List[str]
        self.log_changed = threading.Condition()
        self.proc = None    # type: Optional[subprocess.Popen]
        self.port = 0

    def start(self, port: int = 0) -> "ServerProcess":
        command = [self.python, SERVER, "--port", str(port),
                   "--clients-file", self.clients_file] + self.args
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     cwd=self.folder, env=self.env)
        first = self.proc.stdout.readline().decode()
        match = re.match(r"Server running on (\S+):(\d+)$", first.strip())
        if not match:
            self.proc.kill()
            raise AssertionError("server did not start: %r %r" % (first, self.proc.stderr.read()))
        self.port = int(match.group(2))
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        for raw in self.proc.stdout:
            with self.log_changed:
                self.log.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.log_changed.notify_all()

    def expect_log(self, pattern: str, timeout: float = TIMEOUT) -> str:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.log_changed:
            while True:
                for line in self.log:
                    if regex.search(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no log line matching %r; log: %r" % (pattern, self.log[-10:]))
                self.log_changed.wait(left)

    def connect(self) -> LineSocket:
        return LineSocket(self.port)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = TIMEOUT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("server did not stop within %g s" % timeout)

    def stderr(self) -> str:
        return self.proc.stderr.read().decode("utf-8", "replace")

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None:
            self.proc.stdout.close()
            self.proc.stderr.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def proc_threads(pid: int) -> int:
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads line")


def proc_fds(pid: int) -> int:
    return len(os.listdir("/proc/%d/fd" % pid))


class TlsLineSocket(LineSocket):
    """A LineSocket over TLS, checked by context (server name: localhost)."""

    def __init__(self, port: int, context: ssl.SSLContext, host: str = "127.0.0.1",
                 server_hostname: str = "localhost") -> None:
        plain = socket.create_connection((host, port), timeout=TIMEOUT)
        try:
            self.sock = context.wrap_socket(plain, server_hostname=server_hostname)
        except BaseException:
            plain.close()
            raise
        self.buffer = b""
        self.lines = []     # type: List[str]
        self.raw_lines = []  # type: List[bytes]


class ClientProcess:
    """client.py in a child process, fed through a pipe, its output collected."""

    def __init__(self, port: int, *args: str, python: str = sys.executable,
                 env: Optional[dict] = None) -> None:
        command = [python, CLIENT, "--port", str(port)] + list(args)
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self.lines = []     # type: List[str]
        self.changed = threading.Condition()
        self.drain = threading.Thread(target=self._drain, daemon=True)
        self.drain.start()

    def _drain(self) -> None:
        for raw in self.proc.stdout:
            with self.changed:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.changed.notify_all()

    def expect(self, pattern: str, timeout: float = TIMEOUT) -> str:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in self.lines:
                    if regex.search(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("client printed no line matching %r; got %r"
                                         % (pattern, self.lines[-10:]))
                self.changed.wait(left)

    def send(self, text: str) -> None:
        self.proc.stdin.write(text.encode("utf-8") + b"\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = TIMEOUT) -> Tuple[int, str]:
        """Close its input (so it quits) and wait: (exit status, stderr)."""
        self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("client did not exit within %g s" % timeout)
        self.drain.join(timeout)
        error = self.proc.stderr.read().decode("utf-8", "replace")
        self.proc.stdout.close()
        self.proc.stderr.close()
        return code, error

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.drain.join(TIMEOUT)    # it ends at the end of the output
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except (OSError, ValueError):
                pass


def run_client(port: int, *args: str, stdin: str = "", python: str = sys.executable,
               env: Optional[dict] = None,
               timeout: float = TIMEOUT) -> "subprocess.CompletedProcess":
    """client.py run to its end with stdin as input; stdout and stderr as text."""
    return subprocess.run([python, CLIENT, "--port", str(port)] + list(args),
                          input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, env=env, timeout=timeout)


def run_server(*args: str, python: str = sys.executable, env: Optional[dict] = None,
               timeout: float = TIMEOUT) -> "subprocess.CompletedProcess":
    """server.py expected to exit by itself (a start-up error); output as text."""
    folder = tempfile.mkdtemp(prefix="chat-test-")
    try:
        return subprocess.run([python, SERVER, "--port", "0",
                               "--clients-file", os.path.join(folder, "clients.json")] + list(args),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, env=env, timeout=timeout, cwd=folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def proc_rss_kb(pid: int) -> int:
    """Resident memory of a process in KiB (VmRSS)."""
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS line")
