"""Test support: real servers, real sockets, waits with a deadline.

Nothing here sleeps to synchronise. Every wait is for a condition (a line
that matches, a process that exits, a predicate that turns true) and fails
with the evidence when its deadline passes.
"""

import atexit
import json
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
import unittest
from typing import Callable, List, Optional, Tuple

from tests import winproc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(ROOT, "server.py")
CLIENT = os.path.join(ROOT, "client.py")
PYTHON = sys.executable
# Servers and clients run without the site module (-S): they use the
# standard library alone, so nothing from site-packages can creep in
# unnoticed, and the .pth hooks a machine may have (these import certifi
# at every start, 40 ms of CPU) are not paid for each of a run's hundreds
# of child processes.
CHILD = [PYTHON, "-S"]
TIMEOUT = 10.0
# The platform, not what the file system looks like: Wine shows a /proc.
WINDOWS = sys.platform == "win32"

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# A job started in the background by a shell script ignores SIGINT, and so
# would every server and client started here: then the Ctrl-C tests fail for
# a reason that has nothing to do with the code. With a handler installed
# here instead, children start with the default again (exec resets it).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# With PYTHONDONTWRITEBYTECODE set (these machines set it), every server and
# client started here would compile the package from source again, the
# largest part of the suite's CPU time. Their bytecode goes to a folder of this run
# instead (PYTHONPYCACHEPREFIX, Python 3.8+), the checkout left as it was;
# before 3.8 into __pycache__ beside the sources, as Python does by default.
if (os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None and sys.version_info >= (3, 8)
        and "PYTHONPYCACHEPREFIX" not in os.environ):
    os.environ["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="chat-test-pycache-")
    atexit.register(shutil.rmtree, os.environ["PYTHONPYCACHEPREFIX"], True)


def child_env(**extra: str) -> dict:
    """The environment for a server or client: unbuffered, colours not
    switched off, no room password inherited from the person running the tests."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("NO_COLOR", None)
    env.pop("BROADCAST_PASSWORD", None)
    env.update(extra)
    return env


# A test that stops a server with SIGTERM or SIGINT and checks what it did.
needs_posix_signals = unittest.skipIf(
    WINDOWS, "stops the server with SIGTERM/SIGINT: on Windows send_signal() terminates "
    "the process, and Wine does not deliver CTRL_BREAK_EVENT")


def wait_until(predicate: Callable[[], object], timeout: float = TIMEOUT,
               message: str = "condition") -> object:
    """Poll predicate until it returns something true; fail at the deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, message))
        time.sleep(delay)   # polling interval, not synchronisation
        delay = min(delay * 2, 0.02)


def free_port() -> int:
    """A port that was free a moment ago (for tests that need a fixed one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LineLog:
    """Lines from a stream (without their newlines), collected by a thread.

    expect() consumes: each matched line and the lines before it are passed
    over by the next expect(), so waiting twice for the same pattern waits
    for a second occurrence.
    """

    def __init__(self) -> None:
        self.lines = []         # type: List[str]
        self.cond = threading.Condition()
        self.closed = False
        self.position = 0       # lines before this have been looked at

    def add(self, line: str) -> None:
        with self.cond:
            self.lines.append(line)
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def text(self) -> str:
        with self.cond:
            return "".join(line + "\n" for line in self.lines)

    def expect(self, pattern: str, timeout: float = TIMEOUT):
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                while self.position < len(self.lines):
                    line = self.lines[self.position]
                    self.position += 1
                    match = regex.search(line)
                    if match:
                        return match
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    raise AssertionError("no line matching %r (%s); got:\n%s" % (
                        pattern, "stream ended" if self.closed else "timed out",
                        "\n".join(self.lines[-30:])))
                self.cond.wait(left)


def drain(stream, log: LineLog) -> threading.Thread:
    """Read stream line by line into log in a thread, so the writer never blocks."""
    def run() -> None:
        try:
            for raw in iter(stream.readline, b""):
                line = raw[:-1] if raw.endswith(b"\n") else raw
                if line.endswith(b"\r"):       # Windows' line ending
                    line = line[:-1]
                log.add(line.decode("utf-8", "replace"))
        except (OSError, ValueError):
            pass
        finally:
            log.close()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


class ServerProcess:
    """`server.py --port PORT` in a temporary folder, as a context manager.

    .port is the port really bound (from the first stdout line), .log the
    server's stdout lines, .errors its stderr lines, .clients_file the path.
    """

    def __init__(self, *args: str, port: int = 0, clients_file: Optional[str] = None,
                 folder: Optional[str] = None, env: Optional[dict] = None,
                 as_is: bool = False) -> None:
        """as_is: clients.json written at the shipped interval (0.5 s), not
        every 0.05 s: the tests wait for the file to follow the room, and
        would otherwise spend most of their time waiting for the next write."""
        self._tmp = None
        self.command = CHILD + [SERVER]
        if folder is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="chat-test-")
            folder = self._tmp.name
        self.folder = folder
        self.clients_file = clients_file or os.path.join(folder, "clients.json")
        self.args = ["--port", str(port), "--clients-file", self.clients_file] + list(args)
        if not as_is:
            self.args += ["--clients-file-interval", "0.05"]
        self.env = child_env() if env is None else env
        self.proc = None        # type: Optional[subprocess.Popen]
        self.log = LineLog()
        self.errors = LineLog()
        self.port = 0

    def start(self) -> "ServerProcess":
        self.proc = subprocess.Popen(self.command + self.args, cwd=self.folder,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=self.env)
        self._threads = [drain(self.proc.stdout, self.log), drain(self.proc.stderr, self.errors)]
        try:
            match = self.log.expect(r"^Server running on (\S+):(\d+)$", timeout=TIMEOUT)
        except AssertionError as exc:
            self.kill()
            raise AssertionError("%s\nstderr:\n%s" % (exc, self.errors.text()))
        self.host = match.group(1)
        self.port = int(match.group(2))
        return self

    def __enter__(self) -> "ServerProcess":
        try:
            return self.start()
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc_info) -> None:
        self.kill()
        if self._tmp is not None:
            self._tmp.cleanup()

    def send_signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = TIMEOUT) -> int:
        """The exit status, once the server has exited and its output is read."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("server still running after %.1f s" % timeout)
        for thread in self._threads:
            thread.join(TIMEOUT)
        return rc

    def stop(self, signum: int = signal.SIGTERM, timeout: float = TIMEOUT) -> int:
        self.send_signal(signum)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None:
            for stream in (self.proc.stdout, self.proc.stderr):
                stream.close()

    def clients(self) -> object:
        return read_clients_file(self.clients_file)

    def wait_names(self, names: List[str], timeout: float = TIMEOUT) -> list:
        """Wait until clients.json holds exactly these names, in any order (a
        connection not yet named is a None among them)."""
        want = sorted(names, key=str)
        return self.wait_clients(lambda r: sorted((x["name"] for x in r), key=str) == want,
                                 timeout, "the names %s in clients.json" % want)

    def wait_clients(self, predicate: Callable[[list], bool], timeout: float = TIMEOUT,
                     message: str = "clients.json") -> list:
        """Wait until clients.json holds a list for which predicate is true."""
        seen = []

        def check():
            try:
                records = self.clients()
            except (OSError, ValueError):
                return None
            seen[:] = [records]
            return (records,) if predicate(records) else None   # true even for []
        try:
            return wait_until(check, timeout, message)[0]
        except AssertionError as exc:
            raise AssertionError("%s; last content: %r" % (exc, seen))

    def connect(self, name: Optional[str] = None, greet: bool = True) -> "Peer":
        return Peer(self.port, name, greet=greet)


class Peer:
    """A raw protocol client (like nc) with an expect() line reader.

    .lines is every line received, in order (.raw_lines the same as bytes);
    readline(), expect() and collect() consume them from .position on.
    """

    def __init__(self, port: Optional[int], name: Optional[str] = None,
                 host: str = "127.0.0.1", greet: bool = True,
                 sock: Optional[socket.socket] = None) -> None:
        """Connect to port, or use sock, connected some other way."""
        self.sock = sock or socket.create_connection((host, port), timeout=TIMEOUT)
        # Without this, Nagle holds a small line back until the last is acked.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.lines = []         # type: List[str]
        self.raw_lines = []     # type: List[bytes]
        self.position = 0
        self.name = name
        if greet:
            # A blank line first, as a client that speaks first would: the
            # server then knows at once that this is no browser (a silent
            # client gets its banner only after the server's wait for one).
            self.sock.sendall(b"\n")
            self.expect(r"-- Broadcast Chat \S+: \d+ online")
        if name is not None:
            self.nick(name)

    def __enter__(self) -> "Peer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return "%s:%d" % (host, port)

    def nick(self, name: str) -> "Peer":
        self.send("/nick " + name)
        self.expect(r"-- welcome, %s! " % re.escape(name))
        self.name = name
        return self

    def send(self, line: str) -> None:
        self.sendraw(line.encode("utf-8") + b"\n")

    def sendraw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self, timeout: float) -> bool:
        """Read once into .lines; False at the end of the stream."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except ConnectionError:
            data = b""
        if not data:
            return False
        *complete, self.buffer = (self.buffer + data).split(b"\n")
        self.raw_lines.extend(complete)
        self.lines.extend(line.decode("utf-8") for line in complete)
        return True

    def readline(self, timeout: float = TIMEOUT) -> Optional[str]:
        """The next line, or None at the end of the stream; socket.timeout
        if no complete line comes in time."""
        deadline = time.monotonic() + timeout
        while self.position >= len(self.lines):
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no complete line in %.1f s; have %r" % (timeout, self.buffer))
            if not self.receive(left):
                return None
        self.position += 1
        return self.lines[self.position - 1]

    def expect(self, pattern: str, timeout: float = TIMEOUT, start: Optional[int] = None):
        """Read lines until one matches pattern; return the match."""
        return self.collect(pattern, timeout, start)[1]

    def collect(self, pattern: str, timeout: float = TIMEOUT, start: Optional[int] = None):
        """Lines until one matches: (the lines before it, the match).

        The search starts at .position, or at index start of .lines (to look
        again at lines already passed over, or to skip some).
        """
        regex = re.compile(pattern)
        first = index = self.position if start is None else start
        deadline = time.monotonic() + timeout
        while True:
            while index < len(self.lines):
                match = regex.search(self.lines[index])
                index += 1
                if match:
                    self.position = max(self.position, index)
                    return self.lines[first:index - 1], match
            left = deadline - time.monotonic()
            try:
                open_ = left > 0 and self.receive(left)
            except socket.timeout:
                continue
            if not open_:
                raise AssertionError("no line matching %r (%s); got:\n%s" % (
                    pattern, "timed out" if left <= 0 else "connection closed",
                    "\n".join(self.lines[first:][-30:])))

    def sync(self) -> List[str]:
        """Every line the server sent before this point: a /who round trip.

        The server sends to one client in order, so anything it queued for us
        before answering /who arrives before the answer.
        """
        self.send("/who")
        return self.collect(r"-- \d+ online: ")[0]

    def expect_closed(self, timeout: float = TIMEOUT) -> List[str]:
        """Read until the server closes the connection; return the lines."""
        start = self.position
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("connection still open after %.1f s; got:\n%s"
                                     % (timeout, "\n".join(self.lines[start:][-30:])))
            try:
                if not self.receive(left):
                    break
            except socket.timeout:
                pass
            except OSError:     # a TLS connection may end without a close_notify
                break
        self.position = len(self.lines)
        return self.lines[start:]

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass



class ServerTestCase(unittest.TestCase):
    """A server for each test (started with server_args), and peers that
    are closed afterwards."""

    server_args = ()    # type: tuple

    def setUp(self) -> None:
        self.server = self.start_server(*self.server_args)

    def start_server(self, *args: str, **kwargs) -> ServerProcess:
        server = ServerProcess(*args, **kwargs)
        self.addCleanup(server.__exit__)
        server.start()
        return server

    def peer(self, name: Optional[str] = None, server: Optional[ServerProcess] = None) -> Peer:
        peer = Peer((server or self.server).port, name)
        self.addCleanup(peer.close)
        return peer

def tls_peer(port: int, context: ssl.SSLContext, name: Optional[str] = None,
             greet: bool = True, server_hostname: str = "localhost") -> Peer:
    """A Peer over TLS, checked by context."""
    plain = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        sock = context.wrap_socket(plain, server_hostname=server_hostname)
    except BaseException:
        plain.close()
        raise
    return Peer(port, name, greet=greet, sock=sock)


def client_command(port: Optional[int], args) -> List[str]:
    return CHILD + [CLIENT] + ([] if port is None else ["--port", str(port)]) + list(args)


class ClientProcess:
    """client.py in a child process, fed through a pipe; .out and .err its output."""

    def __init__(self, port: int, *args: str, env: Optional[dict] = None) -> None:
        self.proc = subprocess.Popen(client_command(port, args), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=child_env() if env is None else env, cwd=ROOT)
        self.out, self.err = LineLog(), LineLog()
        self._threads = [drain(self.proc.stdout, self.out), drain(self.proc.stderr, self.err)]

    def expect(self, pattern: str, timeout: float = TIMEOUT):
        return self.out.expect(pattern, timeout)

    def send(self, line: str) -> None:
        self.proc.stdin.write(line.encode("utf-8") + b"\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float = TIMEOUT) -> int:
        """The exit status, once the client has exited and its output is read."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("client still running after %.1f s; output:\n%s"
                                 % (timeout, self.out.text()[-1500:]))
        for thread in self._threads:
            thread.join(TIMEOUT)
        return code

    def finish(self, timeout: float = TIMEOUT) -> Tuple[int, str]:
        """Close its input (so it quits) and wait: (exit status, stderr)."""
        self.proc.stdin.close()
        return self.wait(timeout), self.err.text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except (OSError, ValueError):
                pass


def run_client(port: Optional[int], *args: str, stdin: str = "", env: Optional[dict] = None,
               timeout: float = TIMEOUT) -> "subprocess.CompletedProcess":
    """client.py run to its end with stdin as input; stdout and stderr as text."""
    return subprocess.run(client_command(port, args), input=stdin, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, cwd=ROOT,
                          env=child_env() if env is None else env, timeout=timeout)


def run_server(*args: str, env: Optional[dict] = None,
               timeout: float = TIMEOUT) -> "subprocess.CompletedProcess":
    """server.py expected to exit by itself (a start-up error); output as text.

    It starts on port 0 with a clients file in a temporary folder unless
    args say otherwise (the last --port or --clients-file wins).
    """
    folder = tempfile.mkdtemp(prefix="chat-test-")
    try:
        return subprocess.run(CHILD + [SERVER, "--port", "0",
                               "--clients-file", os.path.join(folder, "clients.json")] + list(args),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True,
                              env=child_env() if env is None else env, timeout=timeout, cwd=folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# Run a program with the terminal on fd 0 as its controlling terminal, so
# that ^C typed into the pty sends it SIGINT like a real terminal would.
_PTY_BOOT = (
    "import fcntl, os, sys, termios\n"
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
    "os.execv(sys.executable, [sys.executable, '-S'] + sys.argv[1:])\n"
)


_CONTROL = re.compile(r"\x1b\[([?\d;]*)([A-Za-z])|[\r\x08]|\x1b[^\[]")


def cursor_column(screen: str) -> int:
    """Where a terminal's cursor is on the last line of screen (0-based):
    enough of a terminal for one line edited by readline (CR, BS, and the
    cursor-moving escapes it uses)."""
    line = screen[screen.rfind("\n") + 1:]
    column = 0
    position = 0
    for match in _CONTROL.finditer(line):
        column += len(line[position:match.start()])
        position = match.end()
        code = match.group(0)
        if code == "\r":
            column = 0
        elif code == "\x08":
            column = max(0, column - 1)
        elif match.group(2) in ("C", "D", "G"):
            count = int(match.group(1) or 1)
            kind = match.group(2)
            if kind == "D":
                column = max(0, column - count)
            elif kind == "C":
                column += count
            elif kind == "G":
                column = count - 1
    return column + len(line[position:])


_SCREEN_CONTROL = re.compile(r"\r|\n|\x07|\x08|\x1b[=>]|\x1b\[(\??)(\d*)([A-Za-z])")


def render(output: str, width: int = 200, wrap: bool = False) -> List[str]:
    """The lines a terminal width columns wide shows after output, its
    scrollback included: enough of one for what the client writes (CR, LF,
    cursor up, forward, back and to a column, erase line and below; colours, modes and the
    bell are no text). Fails on any other sequence and, unless wrap (as
    xterm wraps: at the next character after the last column), on text
    past the last column, so that a test never passes on a screen it misread."""
    lines = [[]]    # type: List[List[str]]
    row = column = 0

    def write(text: str) -> None:
        nonlocal column, row
        if "\x1b" in text:
            raise AssertionError("unexpected sequence in %r" % text)
        for ch in text:
            if column >= width and wrap:
                row, column = row + 1, 0
                if row == len(lines):
                    lines.append([])
            elif column >= width:
                raise AssertionError("wrote past column %d: %r" % (width - 1, output[-500:]))
            line = lines[row]
            line.extend(" " * (column + 1 - len(line)))
            line[column] = ch
            column += 1
    position = 0
    for match in _SCREEN_CONTROL.finditer(output):
        write(output[position:match.start()])
        position = match.end()
        code = match.group(0)
        private, number, final = match.group(1), match.group(2), match.group(3)
        count = int(number or 1)
        if code == "\r":
            column = 0
        elif code == "\x08":
            column = max(0, column - 1)
        elif code == "\n":
            row += 1
            if row == len(lines):
                lines.append([])
        elif final is None or final == "m" or private:
            pass    # the bell, keypad modes, colours, private modes
        elif final == "A":
            row = max(0, row - count)
        elif final == "C":
            column += count
        elif final == "D":
            column = max(0, column - count)
        elif final == "G":
            column = count - 1
        elif final == "K":
            if number == "2":
                lines[row] = []
            else:
                del lines[row][column:]
        elif final == "J" and not number:
            del lines[row][column:]
            del lines[row + 1:]
        else:
            raise AssertionError("unexpected sequence %r in %r" % (code, output[-500:]))
    # A sequence cut off at the end is still being written (the output was
    # read part way through it): it is not on the screen yet.
    write(re.sub(r"\x1b(\[\??\d*)?\Z", "", output[position:]))
    return ["".join(line).rstrip() for line in lines]


class TerminalClient:
    """`client.py` on a pseudo-terminal: type into it, expect on its screen."""

    def __init__(self, port: int, *args: str, env: Optional[dict] = None,
                 command: Optional[List[str]] = None, columns: int = 200) -> None:
        """command: another program than client.py --port PORT ARGS (a script
        and its arguments); columns: the terminal's width."""
        import pty
        import struct
        import fcntl
        import termios
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        self.master = master
        self.output = b""
        self.position = 0
        self.cond = threading.Condition()
        self.closed = False
        environment = child_env(TERM="xterm")
        environment.update(env or {})
        self.proc = subprocess.Popen(
            CHILD + ["-c", _PTY_BOOT] + (command or client_command(port, args)[len(CHILD):]),
            stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
            env=environment, cwd=ROOT)
        os.close(slave)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    # readline 8.1 and newer switch the terminal's bracketed-paste mode on and
    # off around each line: switches that show nothing, left out of .output
    # so that what the tests match is what a person sees, whichever readline
    # the Python under test was built with.
    _PASTE_MODE = re.compile(rb"\x1b\[\?2004[hl]")
    _MODE_LENGTH = len(b"\x1b[?2004h")

    def _read(self) -> None:
        pending = b""
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:     # EIO once the last process using it is gone
                data = b""
            with self.cond:
                if not data:
                    self.output += self._PASTE_MODE.sub(b"", pending)
                    self.closed = True
                    self.cond.notify_all()
                    return
                pending += data
                # An escape at the very end may be the start of a switch.
                cut = pending.rfind(b"\x1b", len(pending) - self._MODE_LENGTH + 1)
                ready, pending = (pending[:cut], pending[cut:]) if cut >= 0 else (pending, b"")
                self.output += self._PASTE_MODE.sub(b"", ready)
                self.cond.notify_all()

    def __enter__(self) -> "TerminalClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def type(self, text: str) -> None:
        os.write(self.master, text.encode("utf-8"))

    def wait_reading(self, timeout: float = TIMEOUT) -> None:
        """Wait until the client reads keys itself (readline turned ICANON off).

        Keys typed before that are echoed by the terminal driver, not by the
        client, so this is the point from which typing is really typing.
        """
        import termios
        wait_until(lambda: not termios.tcgetattr(self.master)[3] & termios.ICANON,
                   timeout, "the client to read from its terminal")

    def text(self) -> str:
        with self.cond:
            return self.output.decode("utf-8", "replace")

    def screen(self) -> List[str]:
        """The lines shown now, scrollback included (render())."""
        return render(self.text())

    def expect(self, pattern: str, timeout: float = TIMEOUT):
        """Wait for pattern in the output after the last match; return the match."""
        regex = re.compile(pattern.encode("utf-8"), re.S)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                match = regex.search(self.output, self.position)
                if match:
                    self.position = match.end()
                    return match
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    raise AssertionError("no %r on the terminal (%s); screen:\n%r" % (
                        pattern, "closed" if self.closed else "timed out",
                        self.output[-1500:].decode("utf-8", "replace")))
                self.cond.wait(left)

    def wait(self, timeout: float = TIMEOUT) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("client still running after %.1f s; screen:\n%r" % (
                timeout, self.text()[-1500:]))
        self.reader.join(TIMEOUT)
        return rc

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(TIMEOUT)
        try:
            os.close(self.master)
        except OSError:
            pass


def read_clients_file(path: str) -> object:
    """clients.json's content. On Windows a file being replaced cannot be
    opened for a moment (PermissionError): try again for up to a second."""
    deadline = time.monotonic() + 1.0
    while True:
        try:
            with open(path, encoding="utf-8") as handle:
                return json.load(handle)
        except PermissionError:
            if not WINDOWS or time.monotonic() > deadline:
                raise
            time.sleep(0.005)   # waiting out the server's replace, not synchronisation


def fds_counted(test: unittest.TestCase) -> bool:
    """Whether the process's descriptors can be counted here. On Windows
    they cannot (handles are not sockets, see tests/winproc.py): the check
    is recorded as a skipped subtest and the rest of the test goes on."""
    if not WINDOWS:
        return True
    with test.subTest("descriptor count"):
        test.skipTest("Windows has no descriptor table to count sockets in")
    return False


def _proc_status(pid: int, field: str) -> int:
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s line" % field)


def proc_threads(pid: int) -> int:
    if WINDOWS:
        return winproc.threads(pid)
    return _proc_status(pid, "Threads")


def proc_rss_kb(pid: int) -> int:
    """Resident memory of a process in KiB (VmRSS; the working set on Windows)."""
    if WINDOWS:
        return winproc.rss_kb(pid)
    return _proc_status(pid, "VmRSS")


def proc_fds(pid: int) -> int:
    """Open descriptors (Linux only: check fds_counted() first)."""
    return len(os.listdir("/proc/%d/fd" % pid))
