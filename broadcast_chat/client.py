"""The terminal client: a prompt to type at, with a reader thread beside it
that receives what the others say; it is shown above the line being typed
(drawn by the thread at the prompt, between two keys, with GNU readline).

It speaks the server's JSON format (asked for with `/hello json`), so it
knows every event by its type and code, never by its wording. Without a
terminal it is a tool: lines from standard input are sent, paced by the
limits the server announced, what arrives is printed, and it exits once
the server has taken every line.
"""

import _thread
import argparse
import collections
import os
import queue
import shutil
import signal
import socket
import ssl
import sys
import threading
import time
from typing import Iterable, List, Optional, TextIO

from . import display, terminal, winconsole
from .clientoptions import client_tls_context, parse_client_args, settle_address
from .completion import RoomMemory
from .connection import (REFUSED_CODES, RESEND, ChatError, Connection, Received, SentLines,
                         StreamPosition)
from .console import open_console_prompt, reader_gone, silence, write_text
from .names import check_name, name_from_hostname
from .net import is_loopback
from .pacer import Pacer, pipe_lines, typed_lines
from .protocol import TokenBucket, interpret
from .text import sanitize
from .tls import read_password

BACKOFF_MAX = 30.0
QUIT_TIMEOUT = 10.0
UNSENT_MAX = 100        # lines typed while disconnected, kept to send after reconnecting

class Client:
    def __init__(self, options: argparse.Namespace, out: TextIO = sys.stdout) -> None:
        self.options = options
        self.out = out
        self.encoding = getattr(out, "encoding", None)    # what it cannot show is escaped
        self.interactive = sys.stdin.isatty() and out.isatty()
        self.colour = want_colour(options.no_color, out)
        self.bell = self.interactive and not getattr(options, "no_bell", False)
        self.name = options.name or name_from_hostname(socket.gethostname())
        self.conn = None        # type: Optional[Connection]
        self.position = StreamPosition()
        # Lines typed while disconnected; send_lock orders them before newer ones.
        self.unsent = collections.deque()   # type: collections.deque
        self.send_lock = threading.Lock()
        # Lines sent and not seen taken by the room yet (sent_lock): after a
        # reconnect, those the resume shows it never took are sent again.
        self.sent_lines = SentLines()
        self.sent_lock = threading.Lock()
        self.holding = False    # reconnected: lines wait until the resume tells what the room took
        self.print_lock = threading.Lock()
        self.at_prompt = False  # the prompt is up: a line printed goes above it
        self.transient = False  # the line above the prompt is a status to update in place
        self.pacer = None       # type: Optional[Pacer]  sends what is typed, paced
        self.printed_below = 0  # lines printed since Enter, below the line entered
        self.quitting = threading.Event()
        self.wake = threading.Event()   # set to end a wait between reconnects early
        self.reader_done = threading.Event()
        self.exit_code = 0
        self.refused = 0
        self.dropped = False    # the server ended the connection on purpose: no reconnect
        self.joined_before = False  # a welcome was shown: the next joins are reconnects
        self.tls_context = client_tls_context(options)
        self.password = read_password(options.password_file, os.environ)
        if self.password and not self.tls_context and not is_loopback(options.host):
            print("client.py: warning: the password goes to %s in clear text: anyone in "
                  "between can read it (use --tls)" % options.host, file=sys.stderr)
        self.piped = queue.Queue(100)   # type: queue.Queue  lines read from a pipe; None ends
        # A Windows console has no readline: the client edits the line itself.
        self.console = open_console_prompt(self.prompt, out) if self.interactive else None
        self.readline = (terminal.load_readline()
                         if self.interactive and self.console is None else None)
        # GNU readline: lines printed while the prompt is up go through it.
        self.line_prompt = (terminal.open_line_prompt(self.readline, self.prompt, out)
                            if self.readline is not None else None)
        self.memory = RoomMemory()      # names for Tab, the sender for /reply
        if self.readline is not None:
            terminal.set_completer(self.readline, self.memory.complete)

    # -- output -------------------------------------------------------------

    def prompt(self) -> str:
        return display.encodable(self.name + "> ", self.encoding)

    def show(self, got: Received) -> None:
        """Show what the server sent: an object of the JSON format, or a line."""
        if isinstance(got, str):
            self.print_line(sanitize(got))
            return
        for line in display.render_event(got, self.name, self.colour):
            self.print_line(line)
        if self.bell and display.mentions(got, self.name):
            with self.print_lock:
                if self.line_prompt is not None and self.at_prompt:
                    self.line_prompt.above("\a")
                    return
                self.out.write("\a")
                self.out.flush()

    def print_line(self, text: str, transient: bool = False) -> None:
        """Print a line above the prompt, keeping what is half typed. On a terminal a
        transient line (a status that changes) is replaced by the next one if none came between."""
        try:
            self._print_line(text, transient)
        except OSError as exc:
            if not reader_gone(exc):
                raise
            self.output_closed()

    def output_closed(self) -> None:
        """Whoever read our output stopped (a pipe into head): nothing more
        can be shown, so the client leaves, quietly, with status 1."""
        silence(self.out)       # nor at exit, when Python flushes
        if not self.exit_code:
            self.exit_code = 1
            self.quit()
            self.interrupt_main()

    def _print_line(self, text: str, transient: bool) -> None:
        text = display.encodable(text, self.encoding)
        if self.interactive:
            text = display.hang(text, shutil.get_terminal_size().columns)
        with self.print_lock:
            replaces = self.interactive and self.transient and transient
            self.transient = transient and self.interactive and "\n" not in text
            if not self.at_prompt:
                self.printed_below += 1
            if self.line_prompt is not None and self.at_prompt:
                # Printed by the thread at the prompt, which knows then
                # whether the status to replace is still the line above.
                self.line_prompt.above(text + "\n", replaces)
                return
            if replaces:
                text = terminal.UP_OVER + text
            if self.console is not None and self.at_prompt:
                self.console.print_above(text)
                return
            if not (self.interactive and self.at_prompt):
                write_text(self.out, text + "\n")
            else:
                typed = self.readline.get_line_buffer() if self.readline is not None else ""
                up = display.rows(self.prompt() + typed, shutil.get_terminal_size()[0]) - 1
                self.out.write(("\033[%dA" % up if up else "") + "\r\033[J" + text + "\n"
                               + self.prompt() + typed)    # every row of a long line cleared
            self.out.flush()

    def status(self, text: str, transient: bool = False) -> None:
        self.print_line(display.status_line(text, self.colour), transient)

    def erase_typed(self, text: str) -> None:
        """Take the line just entered off the screen: the server's echo of
        it shows it as the others see it, in its place. Left alone if a
        line was printed under it meanwhile."""
        rows = display.rows(self.prompt() + text, shutil.get_terminal_size().columns)
        with self.print_lock:
            if self.printed_below == 0:
                self.out.write("\033[%dA\r\033[J" % rows)
                self.out.flush()

    def tell_pacing(self, waiting: int) -> None:
        """One status line when lines typed or pasted have to wait their turn."""
        rate = self.pacer.bucket.rate if self.pacer else 0
        self.status("sending at %g lines a second, the limit this server sets" % rate)

    def problem(self, text: str) -> None:
        self.print_line(display.error_line(text, self.colour))

    # -- connection ---------------------------------------------------------

    def connect(self) -> None:
        self.conn = self.open_connection()

    def open_connection(self) -> Connection:
        """A connection that joined, having asked for what it missed."""
        conn = Connection(self.options.host, self.options.port, self.tls_context)
        try:
            self.name = conn.register(self.name, self.show_joining, self.password,
                                      self.position)
        except BaseException:
            conn.close()
            raise
        return conn

    def show_joining(self, got: Received) -> None:
        """What the server says while we join: the welcome as one line that
        names who is here, and on a reconnect not at all (the status says it)."""
        if isinstance(got, dict) and got.get("type") == "reply" and got.get("code") == "welcome":
            self.memory.see(got, self.name)
            if self.joined_before:
                return
            self.joined_before = True
            text = display.welcome_text(got)
            if text is not None:
                got = dict(got, text=text)
        self.show(got)

    def read_forever(self) -> None:
        """The reader thread: print what comes; on a lost connection, reconnect."""
        try:
            while True:
                got = self.conn.read() if self.conn else None
                if got is not None:
                    self.receive(got)
                    continue
                if (self.quitting.is_set() or not self.interactive or self.dropped
                        or self.options.no_reconnect):
                    if self.dropped:
                        self.exit_code = 1
                        self.interrupt_main()
                    elif not self.quitting.is_set():
                        self.status("connection to the server lost")
                        self.exit_code = 1
                        self.interrupt_main()
                    return
                with self.send_lock:
                    self.conn = None
                    self.holding = False
                if not self.reconnect():
                    return
        finally:
            self.reader_done.set()

    def receive(self, got: Received) -> None:
        if isinstance(got, dict):
            if not self.position.see(got):
                return      # seen before the connection was lost
            self.memory.see(got, self.name)
            with self.sent_lock:
                self.sent_lines.see(got)
                verdict = self.sent_lines.settle(got) if self.holding else None
            if verdict is not None:
                self.release(verdict)
            kind, code = got.get("type"), got.get("code")
            if kind == "error" and code in REFUSED_CODES:
                self.refused += 1
            elif kind == "error" and code == "disconnected":
                # Dropped for a reason of ours (idle, flooding, our name
                # taken over by a new connection): coming back would not help.
                self.dropped = True
                if self.interactive and not self.options.no_reconnect:
                    got = dict(got, text="%s; not reconnecting" % got.get("text"))
            elif (kind, code) in (("reply", "renamed"), ("error", "name_reclaimed")):
                new = got.get("name")
                if isinstance(new, str) and new:
                    # The prompt and a reconnect use it; lines sent and not
                    # yet seen come back under it.
                    with self.sent_lock:    # one step for a line being sent meanwhile
                        self.sent_lines.renamed(self.name, new)
                        self.name = new
                if kind == "reply":
                    return      # the room's notice of it shows it
            elif kind == "reply" and (code == "token" or code == "resumed" and not (
                    got.get("events") or got.get("missed"))):
                return      # nothing to tell the person
            elif kind == "event" and got.get("history"):
                pass        # earlier lines are shown, our own too
            elif kind == "event" and got.get("kind") == "join" and got.get("names") == [self.name]:
                return      # our own join: the welcome said it
            elif kind == "event" and not self.interactive:
                if got.get("kind") in ("message", "action") and got.get("from") == self.name:
                    return      # our own line: what was piped in is not printed again
        self.show(got)

    def reconnect(self) -> bool:
        """Join again, waiting 1, 2, 4 ... 30 s between tries (Enter at the
        prompt: try now), each failure told on one status line updated in
        place; False when quitting, or when the server refuses us."""
        delay = 1.0
        self.status("connection lost; reconnecting (Enter: try now, Ctrl-C: quit)")
        while True:
            asked = self.wake.wait(delay)
            self.wake.clear()
            if self.quitting.is_set():
                return False
            # Asked to resume: the server says what the room took meanwhile.
            resuming = self.position.last_id is not None and bool(self.position.epoch)
            try:
                conn = self.open_connection()
                if self.quitting.is_set():      # quit while it was joining
                    conn.close()
                    return False
                with self.send_lock:
                    sent = 0
                    with self.sent_lock:
                        self.holding = bool(self.sent_lines) and resuming and conn.backlog > 0
                        doubtful = [] if self.holding else self.sent_lines.take()
                    if not self.holding:
                        sent = self.send_unsent(conn)
                    self.conn = conn
            except (ChatError, OSError) as exc:
                if isinstance(exc, ChatError) and exc.final:
                    self.problem("%s; not reconnecting" % exc)
                    self.exit_code = 1
                    self.interrupt_main()
                    return False
                if not asked:       # a try asked for with Enter does not lengthen the wait
                    delay = min(delay * 2, BACKOFF_MAX)
                tail, width = "; trying again in %d s" % delay, shutil.get_terminal_size()[0]
                reason = display.clip(retry_reason(exc), width - len("00:00 -- " + tail))
                self.status(display.clip(reason + tail, width - len("00:00 -- ")), True)
                continue
            self.status("reconnected as %s" % self.name, True)
            self.tell_sent(sent, [], doubtful)
            return True

    def release(self, verdict: str) -> None:
        """The resume after a reconnect told what the room took (verdict
        RESEND) or cannot tell: the lines it did not take are sent again,
        before those typed meanwhile."""
        with self.send_lock:
            with self.sent_lock:
                lines = self.sent_lines.take()
            again = lines if verdict == RESEND else []
            self.unsent.extendleft(reversed(again))
            self.holding = False
            try:
                sent = self.send_unsent(self.conn) - len(again) if self.conn else 0
            except OSError:
                return      # the reader sees the connection end, and reconnects
        self.tell_sent(sent, again, [] if again else lines)

    def tell_sent(self, sent: int, again: List[str], doubtful: List[str]) -> None:
        if again:
            self.status("sent again %d line%s the server had not received when the "
                        "connection was lost" % (len(again), "" if len(again) == 1 else "s"))
        if doubtful:
            self.status("%d line%s sent just before the connection was lost may not have "
                        "reached the room" % (len(doubtful), "" if len(doubtful) == 1 else "s"))
        if sent > 0:
            self.status("sent %d line%s typed while disconnected" % (
                sent, "" if sent == 1 else "s"))

    def send_unsent(self, conn: Connection) -> int:
        """Send the lines kept while disconnected, oldest first; how many.
        A line leaves the queue only once sent (OSError: the rest stay)."""
        assert self.send_lock.locked()
        sent = 0
        try:
            while self.unsent:
                self.send_tracked(conn, self.unsent[0])
                self.unsent.popleft()
                sent += 1
        except OSError:
            conn.close()
            raise
        return sent

    def send_tracked(self, conn: Connection, line: str) -> None:
        """conn.send_line(line), noted among the lines sent (first: the
        room's echo can come before send_line returns)."""
        if not self.interactive:
            conn.send_line(line)    # nothing is sent again without a terminal
            return
        with self.sent_lock:
            self.sent_lines.sent(self.name, line)
        try:
            conn.send_line(line)
        except OSError:
            with self.sent_lock:
                self.sent_lines.unsend(line)
            raise

    def interrupt_main(self) -> None:
        """Wake the main thread from input(), or from waiting for piped lines."""
        if self.console is not None:
            return      # its read_line() ends once reader_done is set
        if self.interactive and os.name == "nt":
            _thread.interrupt_main()    # there a SIGINT sent with os.kill() ends the process
        elif self.interactive:
            os.kill(os.getpid(), signal.SIGINT)
        else:
            try:
                self.piped.put_nowait(None)
            except queue.Full:
                pass        # pipe_loop takes a line soon and sees exit_code

    def send(self, text: str) -> bool:
        """Send a line; while a reconnect is under way, keep it to send after."""
        with self.send_lock:
            conn = self.conn
            if conn is not None and not self.holding:
                try:
                    self.send_tracked(conn, text)
                    return True
                except OSError:
                    pass
            if not self.interactive or self.options.no_reconnect:
                self.problem("not connected: line not sent")
                return False
            if interpret(text).kind == "quit":
                return True     # no room to leave while disconnected: the client just ends
            if len(self.unsent) >= UNSENT_MAX:
                self.problem("not connected, and %d lines already wait: line not sent"
                             % UNSENT_MAX)
                return False
            self.unsent.append(text)
            waiting = len(self.unsent)
            if self.holding and conn is not None:
                return True     # goes out once the resume is told, in a moment
        self.status("not connected: line kept, sent once reconnected (%d waiting)" % waiting)
        return True

    # -- input --------------------------------------------------------------

    def type_loop(self) -> None:
        """The person's side: read lines at a prompt until /quit, ^D or ^C."""
        self.pacer = Pacer(self.pace(), self.send, self.tell_pacing)
        if self._type_lines():
            self.quitting.set()
            self.wake.set()
        else:
            self.quit()

    def _type_lines(self) -> bool:
        """Send what is typed; True when it was /quit, False at ^D."""
        while not self.reader_done.is_set():
            try:
                with self.print_lock:
                    self.at_prompt = True
                text = self.read_typed_line()
            except EOFError:
                break
            except UnicodeDecodeError:
                self.problem("that line was not valid text in this terminal's encoding: not sent")
                continue
            finally:
                with self.print_lock:
                    self.at_prompt = False
                    self.transient = False      # Enter moved the screen on
                    self.printed_below = 0
                    # What came as the line was entered goes below it.
                    pending = self.line_prompt.take_posted(moved_on=True) \
                        if self.line_prompt else ""
                    if pending:
                        write_text(self.out, pending)
                        self.out.flush()
                        self.printed_below = pending.count("\n")
            if text.strip():
                self.erase_typed(text)
            if self.conn is None and not text.strip():
                self.wake.set()     # Enter while disconnected: try again now
            # A paste that readline took as one line (bracketed paste) is
            # still sent as the lines it was.
            for line in typed_lines(text):
                if line.strip():
                    self.put_typed(line)
            if interpret(text).kind == "quit":
                return True
        return False

    def read_typed_line(self) -> str:
        """A line typed at the prompt (GNU readline's LinePrompt, else input()),
        or the console's line editor; EOFError at the end."""
        if self.line_prompt is not None:
            return self.line_prompt.read_line()
        if self.console is None:
            return input(self.prompt())
        text = self.console.read_line(self.reader_done)
        if text is None:
            raise EOFError
        return text

    def put_typed(self, line: str) -> None:
        """Queue a typed line to send; /reply TEXT goes to whoever wrote privately last."""
        expanded = self.memory.expand_reply(line)
        if expanded is None:
            self.problem("nobody has written to you privately yet: /reply has nobody to answer")
        else:
            self.pacer.put(expanded)

    def pace(self) -> TokenBucket:
        """A bucket under the flood limit the server announced."""
        limits = self.conn.limits if self.conn else {}
        rate, burst = limits.get("rate"), limits.get("burst")
        if not isinstance(rate, (int, float)) or not isinstance(burst, int):
            rate, burst = 20.0, 100     # a server that announced none: its defaults
        return TokenBucket(rate * 0.9, max(1, burst // 2))

    def pipe_loop(self, lines: Iterable[str]) -> None:
        """Send each line of input, paced under the server's flood limit."""
        bucket = self.pace()
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
            if interpret(text).kind == "quit":
                self.quitting.set()
                return
        self.quit()

    def read_pipe(self, lines: Iterable[str]) -> None:
        """Feed lines to pipe_loop from a thread of their own.

        A read from a pipe cannot be interrupted reliably (a signal that comes
        just before the read starts is handled only once it returns), so the
        main thread waits on a queue that the reader thread can also end."""
        try:
            for text in lines:
                self.piped.put(text)
        finally:
            self.piped.put(None)

    def quit(self) -> None:
        self.quitting.set()
        self.wake.set()
        if self.pacer is not None and self.pacer.pending():
            self.pacer.put("/quit")     # after the lines still waiting
        elif self.conn is not None:
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
                if self.pacer is not None:
                    self.pacer.clear()
                if self.exit_code == 0:
                    self.quit()
            if self.interactive:
                self.out.write("\n")
            # Lines still being paced out first; ^C drops them.
            while self.pacer is not None and not self.pacer.wait_sent(0.1):
                if self.reader_done.is_set():
                    break
            # The server answers /quit and closes: then every line was
            # handled. While reconnecting, no server has them to wait for.
            if self.conn is not None:
                self.reader_done.wait(QUIT_TIMEOUT)
            if self.unsent:
                self.problem("not sent: %d line%s typed while disconnected" % (
                    len(self.unsent), "" if len(self.unsent) == 1 else "s"))
                self.exit_code = self.exit_code or 1
        except KeyboardInterrupt:   # a lost connection, or ^C again
            pass
        if self.refused and self.exit_code == 0:
            self.exit_code = 1
        return self.exit_code


def retry_reason(exc: BaseException) -> str:
    """Why a reconnect failed, short enough for a status line."""
    if isinstance(exc, ChatError):
        return exc.brief
    return "cannot connect: %s" % (getattr(exc, "strerror", None) or exc)


def want_colour(disabled: bool, stream: TextIO) -> bool:
    if disabled or os.environ.get("NO_COLOR"):
        return False
    return (stream.isatty() and os.environ.get("TERM") != "dumb"
            and winconsole.enable_terminal_sequences(stream))   # True but on Windows


def run(options: argparse.Namespace) -> int:
    problem = settle_address(options)
    if problem:
        print("client.py: error: " + problem, file=sys.stderr)
        return 2
    if options.name is not None:
        _, problem = check_name(options.name)
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


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    return run(parse_client_args(argv, prog))
