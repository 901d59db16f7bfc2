#!/usr/bin/env python3
"""Broadcast Chat client: a prompt to type at, with a reader thread beside it
that prints what the others say above the line being typed.

Without a terminal it is a tool: lines from standard input are sent, what
arrives is printed, and it exits once the server has taken every line.
"""

import argparse
import hashlib
import os
import queue
import signal
import socket
import ssl
import sys
import threading
import time
from typing import Iterable, Iterator, List, Optional, TextIO

import helpers

try:
    import readline
except ImportError:     # Windows, or a Python built without it
    readline = None


def find_redraw():
    """A function that draws the prompt and the half-typed line again on a
    fresh line, with the cursor where the user left it, or None.

    That takes GNU readline's rl_set_prompt() and rl_forced_update_display()
    (through ctypes): the readline module only offers redisplay(), which
    draws nothing while readline thinks the line is still on screen. None
    without GNU readline (libedit, Windows): then the line is drawn again by
    hand and the cursor ends after it.
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


REDRAW = find_redraw()

BACKOFF_MAX = 30.0
REGISTER_TIMEOUT = 10.0
QUIT_TIMEOUT = 10.0

RESET = "\033[0m"
DIM = "\033[2m"
BOLD = "\033[1m"
RED = "\033[31m"
YELLOW = "\033[33m"
MAGENTA = "\033[35m"
CYAN = "\033[36m"
NAME_COLOURS = ("\033[32m", "\033[34m", "\033[35m", "\033[36m",
                "\033[92m", "\033[94m", "\033[95m", "\033[96m", "\033[33m")


class ChatError(Exception):
    """A problem to tell the person in one line, then exit with .code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------
# Display: pure functions from a server line to what the terminal shows


def name_colour(name: str) -> str:
    digest = hashlib.md5(helpers.name_key(name).encode("utf-8")).digest()
    return NAME_COLOURS[digest[0] % len(NAME_COLOURS)]


def render(line: str, colour: bool) -> str:
    """A line from the server as shown: sanitised, coloured if asked."""
    line = helpers.sanitize(line)
    if not colour:
        return line
    parsed = helpers.parse_server_line(line)
    stamp = DIM + parsed.stamp + RESET + " "
    kind, name, text = parsed.kind, parsed.name, parsed.text
    if kind == "message":
        return stamp + name_colour(name) + "<" + name + ">" + RESET + " " + text
    if kind == "action":
        return stamp + MAGENTA + "* " + name + " " + text + RESET
    if kind == "private_in":
        return stamp + BOLD + CYAN + "*" + name + "*" + RESET + " " + text
    if kind == "private_out":
        return stamp + CYAN + "-> *" + name + "*" + RESET + " " + text
    if kind == "notice":
        return stamp + YELLOW + "-- " + text + RESET
    if kind == "error":
        return stamp + RED + "!! " + text + RESET
    return line


def want_colour(disabled: bool, stream: TextIO) -> bool:
    if disabled or os.environ.get("NO_COLOR"):
        return False
    return stream.isatty() and os.environ.get("TERM") != "dumb"


# --------------------------------------------------------------------------
# The connection


class Connection:
    """A socket to the server read as lines, with TLS done in memory."""

    def __init__(self, host: str, port: int, context: Optional[ssl.SSLContext] = None) -> None:
        try:
            self.sock = socket.create_connection((host, port), timeout=REGISTER_TIMEOUT)
        except socket.gaierror:
            raise ChatError("cannot find the host %s" % host)
        except ConnectionRefusedError:
            raise ChatError("cannot connect to %s:%d: nothing is listening there. "
                            "Is the server running? Start it with: python3 server.py"
                            % (host, port))
        except OSError as exc:
            raise ChatError("cannot connect to %s:%d: %s" % (host, port, exc.strerror or exc))
        self.framer = helpers.LineFramer(1 << 20)
        self.pending = []   # type: List[str]
        self.send_lock = threading.Lock()
        self.tls = None     # type: Optional[helpers.TlsCodec]
        if context is not None:
            self.start_tls(context, host)

    def start_tls(self, context: ssl.SSLContext, host: str) -> None:
        codec = helpers.TlsCodec(context, server_side=False, server_hostname=host)
        try:
            arrived = helpers.tls_handshake(self.sock, codec)
        except (ssl.SSLError, ssl.CertificateError) as exc:  # 3.6: a name mismatch is no SSLError
            self.close()
            reason = helpers.describe_tls_error(exc)
            hint = (" (is it a server without TLS? try without --tls)"
                    if "does not speak TLS" in reason else
                    " (it is for another name: use that name with --host)"
                    if "match" in reason else
                    " (for a self-signed certificate use --cafile CERT)"
                    if "certificate" in reason else "")
            raise ChatError("TLS handshake failed: %s%s" % (reason, hint))
        except (OSError, ConnectionError) as exc:
            self.close()
            raise ChatError("TLS handshake failed: %s" % (getattr(exc, "strerror", None) or exc))
        self.tls = codec
        lines, _ = self.framer.feed(arrived)
        self.pending.extend(helpers.decode(line) for line in lines)

    def read_line(self) -> Optional[str]:
        """The next line from the server, or None at the end."""
        while not self.pending:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise ChatError("the server did not answer in time")
            except OSError:
                return None
            if not data:
                return None
            if self.tls is not None:
                try:
                    data, reply, closed = self.tls.decrypt(data)
                    if reply:
                        self.send_bytes(b"")
                except (ssl.SSLError, OSError):
                    return None
                if closed and not data:
                    return None
            lines, _ = self.framer.feed(data)
            self.pending.extend(helpers.decode(line) for line in lines)
        return self.pending.pop(0)

    def send_line(self, text: str) -> None:
        # surrogateescape: bytes of the input that were not UTF-8 go out as
        # they came; the server shows them as U+FFFD.
        self.send_bytes(text.encode("utf-8", "surrogateescape") + b"\n")

    def send_bytes(self, data: bytes) -> None:
        with self.send_lock:
            if self.tls is not None:
                data = self.tls.encrypt(data)
            self.sock.sendall(data)

    def register(self, wanted: str, say, password: Optional[bytes] = None) -> str:
        """Take the name wanted, or the first free variant; return it.

        Raises ChatError for every way it can fail, the network's included.
        """
        try:
            return self._register(wanted, say, password)
        except (OSError, ssl.SSLError) as exc:
            raise ChatError("lost the connection while joining: %s" % (
                getattr(exc, "strerror", None) or exc))

    def _register(self, wanted: str, say, password: Optional[bytes]) -> str:
        if password is not None:
            self.send_bytes(b"/pass " + password + b"\n")
        for attempt in range(100):
            name = wanted if attempt == 0 else helpers.name_variant(wanted, attempt)
            self.send_line("/nick " + name)
            while True:
                line = self.read_line()
                if line is None:
                    raise ChatError("the server closed the connection%s" % (
                        "" if self.tls else " (if it uses TLS, add --tls)"))
                # Only the server's own notices and errors count: anyone in
                # the room can say "welcome, NAME!" in a message.
                parsed = helpers.parse_server_line(line)
                text = parsed.text
                if parsed.kind == "notice" and text.startswith(helpers.WELCOME_PREFIX):
                    if name != wanted:
                        say(helpers.fmt_notice(helpers.clock_stamp(),
                                               "%s is taken; you are %s" % (wanted, name)))
                    say(line)
                    self.sock.settimeout(None)
                    return name
                if parsed.kind == "error" and text.startswith(helpers.NAME_TAKEN_PREFIX):
                    break
                if parsed.kind == "error" and text.startswith("invalid name"):
                    raise ChatError(text, code=2)
                if parsed.kind == "error":      # server full, wrong password, ...
                    raise ChatError(text)
                say(line)
        raise ChatError("no free variant of the name %s" % wanted)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


# --------------------------------------------------------------------------
# The client


class Client:
    def __init__(self, options: argparse.Namespace, out: TextIO = sys.stdout) -> None:
        self.options = options
        self.out = out
        self.interactive = sys.stdin.isatty() and out.isatty()
        self.colour = want_colour(options.no_color, out)
        self.name = options.name or helpers.name_from_hostname(socket.gethostname())
        self.conn = None        # type: Optional[Connection]
        self.print_lock = threading.Lock()
        self.at_prompt = False  # input() shows the prompt: redraw it after a line
        self.quitting = threading.Event()
        self.reader_done = threading.Event()
        self.exit_code = 0
        self.refused = 0
        self.tls_context = tls_context(options)
        self.password = helpers.read_password(options.password_file, os.environ)
        if self.password and not self.tls_context and not helpers.is_loopback(options.host):
            print("client.py: warning: the password goes to %s in clear text: anyone in "
                  "between can read it (use --tls)" % options.host, file=sys.stderr)
        self.piped = queue.Queue(100)   # type: queue.Queue  lines read from a pipe; None ends

    # -- output -------------------------------------------------------------

    def prompt(self) -> str:
        return self.name + "> "

    def show(self, line: str) -> None:
        """Print a line above the prompt, keeping what is half typed."""
        text = render(line.rstrip("\n"), self.colour)
        with self.print_lock:
            if not (self.interactive and self.at_prompt):
                self.out.write(text + "\n")
            elif REDRAW is not None:
                # clear the prompt line, print, and have readline draw it again
                self.out.write("\r\033[2K" + text + "\n")
                self.out.flush()
                REDRAW(self.prompt())
            else:
                typed = readline.get_line_buffer() if readline is not None else ""
                self.out.write("\r\033[2K" + text + "\n" + self.prompt() + typed)
            self.out.flush()

    def status(self, text: str) -> None:
        self.show(helpers.fmt_notice(helpers.clock_stamp(), text))

    # -- connection ---------------------------------------------------------

    def connect(self) -> None:
        conn = Connection(self.options.host, self.options.port, self.tls_context)
        try:
            self.name = conn.register(self.name, self.show, self.password)
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    def read_forever(self) -> None:
        """The reader thread: print lines; on a lost connection, reconnect."""
        try:
            while True:
                line = self.conn.read_line() if self.conn else None
                if line is not None:
                    self.note_refusal(line)
                    self.follow_rename(line)
                    self.show(line)
                    continue
                if self.quitting.is_set() or not self.interactive or self.options.no_reconnect:
                    if not self.quitting.is_set():
                        self.status("connection to the server lost")
                        self.exit_code = 1
                        self.interrupt_main()
                    return
                self.conn = None
                if not self.reconnect():
                    return
        finally:
            self.reader_done.set()

    def follow_rename(self, line: str) -> None:
        """After /nick, the prompt (and a reconnect) use the new name."""
        parsed = helpers.parse_server_line(line)
        if parsed.kind == "notice":
            old, _, new = parsed.text.partition(" is now known as ")
            if old == self.name and new and " " not in new:
                self.name = new

    def note_refusal(self, line: str) -> None:
        text = helpers.parse_server_line(line)
        if text.kind == "error" and text.text.startswith(("flood:", "line too long:")):
            self.refused += 1

    def reconnect(self) -> bool:
        delay = 1.0
        self.status("connection lost; reconnecting (Ctrl-C to quit)")
        while not self.quitting.wait(delay):
            try:
                self.connect()
            except (ChatError, OSError) as exc:
                self.status("%s; trying again in %d s" % (exc, min(delay * 2, BACKOFF_MAX)))
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            self.status("reconnected as %s" % self.name)
            return True
        return False

    def interrupt_main(self) -> None:
        """Wake the main thread from input(), or from waiting for piped lines."""
        if self.interactive:
            os.kill(os.getpid(), signal.SIGINT)
        else:
            try:
                self.piped.put_nowait(None)
            except queue.Full:
                pass        # pipe_loop takes a line soon and sees exit_code

    def send(self, text: str) -> bool:
        conn = self.conn
        if conn is None:
            self.show(helpers.fmt_error(helpers.clock_stamp(), "not connected: line not sent"))
            return False
        try:
            conn.send_line(text)
        except OSError:
            self.show(helpers.fmt_error(helpers.clock_stamp(), "not connected: line not sent"))
            return False
        return True

    # -- input --------------------------------------------------------------

    def type_loop(self) -> None:
        """The person's side: read lines at a prompt until /quit, ^D or ^C."""
        if self._type_lines():
            self.quitting.set()
        else:
            self.quit()

    def _type_lines(self) -> bool:
        """Send what is typed; True when it was /quit, False at ^D."""
        while not self.reader_done.is_set():
            try:
                self.at_prompt = True
                text = input(self.prompt())
            except EOFError:
                break
            except UnicodeDecodeError:
                self.show(helpers.fmt_error(helpers.clock_stamp(),
                                            "that line was not valid text in this terminal's "
                                            "encoding: not sent"))
                continue
            finally:
                self.at_prompt = False
            if text.strip():
                self.send(text)
            if text.split(" ", 1)[0].lower() == "/quit":
                return True
        return False

    def pipe_loop(self, lines: Iterable[str]) -> None:
        """Send each line of input, paced under the server's default flood limit."""
        bucket = helpers.TokenBucket(helpers.DEFAULT_RATE_LIMIT * 0.9,
                                     helpers.DEFAULT_BURST // 2)
        threading.Thread(target=self.read_pipe, args=(lines,), name="input", daemon=True).start()
        while True:
            text = self.piped.get()
            if self.exit_code:      # the connection is lost
                return
            if text is None:        # end of input
                break
            text = text.rstrip("\r\n")
            if not text.strip():
                continue
            while bucket.take(1) == 0:
                time.sleep(0.01)        # pacing, not synchronisation
            if not self.send(text):
                self.exit_code = 1
                return
            if text.split(" ", 1)[0].lower() == "/quit":
                self.quitting.set()
                return
        self.quit()

    def read_pipe(self, lines: Iterable[str]) -> None:
        """Feed lines to pipe_loop from a thread of their own.

        A read from a pipe cannot be interrupted reliably (a signal that comes
        just before the read starts is handled only once it returns), so the
        main thread waits on a queue that the reader thread can also end.
        """
        try:
            for text in lines:
                self.piped.put(text)
        finally:
            self.piped.put(None)

    def quit(self) -> None:
        self.quitting.set()
        if self.conn is not None:
            try:
                self.conn.send_line("/quit")
            except OSError:
                pass

    def run(self) -> int:
        self.connect()
        reader = threading.Thread(target=self.read_forever, name="reader", daemon=True)
        try:
            # Start the reader inside the try: from then on it may interrupt
            # this thread when the connection is lost, however early.
            try:
                reader.start()
                if self.interactive:
                    self.type_loop()
                else:
                    self.pipe_loop(pipe_lines(sys.stdin.fileno()))
            except KeyboardInterrupt:
                if self.exit_code == 0:
                    self.quit()
            if self.interactive:
                self.out.write("\n")
            # The server answers /quit and closes: then every line was handled.
            self.reader_done.wait(QUIT_TIMEOUT)
        except KeyboardInterrupt:   # a lost connection, or ^C again
            pass
        if self.refused and self.exit_code == 0:
            self.exit_code = 1
        return self.exit_code


def pipe_lines(fd: int) -> Iterator[str]:
    """The lines of a pipe as UTF-8 text that keeps any other bytes as they
    are (surrogateescape), so a stray byte cannot end the client. Read with
    os.read: a daemon thread blocked in sys.stdin's buffered reader makes
    the interpreter abort at exit."""
    rest = b""
    while True:
        data = os.read(fd, 65536)
        if not data:
            break
        *lines, rest = (rest + data).split(b"\n")
        for line in lines:
            yield line.decode("utf-8", "surrogateescape")
    if rest:
        yield rest.decode("utf-8", "surrogateescape")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="client.py", description="Broadcast Chat client.")
    add_client_options(parser)
    return parser.parse_args(argv)


def add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=helpers.DEFAULT_HOST,
                        help="server address (default %(default)s)")
    parser.add_argument("--port", type=int, default=helpers.DEFAULT_PORT,
                        help="server port (default %(default)s)")
    parser.add_argument("--name", help="your name (default: this machine's host name)")
    parser.add_argument("--no-color", action="store_true",
                        help="no colours (also when NO_COLOR is set or output is not a terminal)")
    parser.add_argument("--no-reconnect", action="store_true",
                        help="exit when the connection is lost instead of reconnecting")
    parser.add_argument("--tls", action="store_true",
                        help="connect with TLS, checking the server's certificate and name")
    parser.add_argument("--cafile", metavar="FILE",
                        help="trust this certificate (PEM), e.g. a self-signed one; implies --tls")
    parser.add_argument("--insecure", action="store_true",
                        help="TLS without checking the certificate (warns); implies --tls")
    parser.add_argument("--password-file", metavar="FILE",
                        help="room password: the first line of FILE (or set %s)" % helpers.PASSWORD_ENV)
    parser.add_argument("--version", action="version", version="%(prog)s " + helpers.__version__)


def tls_context(options: argparse.Namespace) -> Optional[ssl.SSLContext]:
    if not (options.tls or options.cafile or options.insecure):
        return None
    context = ssl.create_default_context(cafile=options.cafile)
    if hasattr(ssl, "TLSVersion"):
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    else:   # Python 3.6
        context.options |= ssl.OP_NO_TLSv1 | ssl.OP_NO_TLSv1_1
    if options.insecure:
        print("client.py: warning: --insecure: the server's certificate is not checked, "
              "so anyone in between can read and change the chat", file=sys.stderr)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def run(options: argparse.Namespace) -> int:
    if options.name is not None:
        _, problem = helpers.check_name(options.name)
        if problem:
            print("client.py: error: invalid name: " + problem, file=sys.stderr)
            return 2
    try:
        client = Client(options)
    except ValueError as exc:       # the password file
        print("client.py: error: %s" % exc, file=sys.stderr)
        return 2
    except (ssl.SSLError, OSError) as exc:   # the --cafile
        print("client.py: error: cannot use the certificate file %s: %s" % (
            options.cafile, getattr(exc, "strerror", None) or exc), file=sys.stderr)
        return 2
    try:
        return client.run()
    except ChatError as exc:
        print("client.py: error: %s" % exc, file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


def main(argv: Optional[List[str]] = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
