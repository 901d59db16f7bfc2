"""The client on a Windows console, with fakes for the console: keys as
msvcrt.getwch() returns them, an output that keeps what is written. Runs
on every platform; the client part talks to a real server."""

import io
import queue
import socket
import threading
import unittest

from broadcast_chat import client as chat_client
from broadcast_chat.console import ConsolePrompt, write_text
from broadcast_chat.log import Log
from tests import winproc
from tests.support import ServerTestCase, wait_until
from tests.test_lineedit import screen_line

WIDTH = 60
UP, LEFT, HOME = "\xe0H", "\xe0K", "\xe0G"      # getwch(): a prefix, then the scan code


class FakeConsole:
    """Keys typed into a queue; what is written kept in .written."""

    def __init__(self) -> None:
        self.keys = queue.Queue()       # type: queue.Queue
        self.lock = threading.Lock()
        self.written = []

    def type(self, text: str) -> None:
        for ch in text:
            self.keys.put(ch)

    def key_waiting(self) -> bool:
        return not self.keys.empty()

    def read_key(self) -> str:
        return self.keys.get_nowait()

    def write(self, text: str) -> None:
        with self.lock:
            self.written.append(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True

    def text(self) -> str:
        with self.lock:
            return "".join(self.written)

    def screen(self):
        """The last line as a terminal shows it, and the cursor's column."""
        text = self.text()
        return screen_line(text[text.rfind("\n") + 1:], WIDTH)


def prompt_for(console: FakeConsole, name: str = "me") -> ConsolePrompt:
    return ConsolePrompt(console, lambda: name + "> ", console.read_key, console.key_waiting,
                         lambda: WIDTH)


class ConsolePromptTest(unittest.TestCase):
    def setUp(self) -> None:
        self.console = FakeConsole()
        self.prompt = prompt_for(self.console)
        self.stop = threading.Event()

    def read(self, keys: str):
        self.console.type(keys)
        return self.prompt.read_line(self.stop)

    def test_enter_gives_the_line_and_leaves_it_on_screen(self):
        self.assertEqual(self.read("hello\r"), "hello")
        self.assertIn("me> hello\r\n", self.console.text())

    def test_backspace_arrows_and_home_edit_the_line(self):
        self.assertEqual(self.read("helo" + LEFT + "l\x08l" + HOME + ">\r"), ">hello")

    def test_up_recalls_the_last_line(self):
        self.read("first\r")
        self.assertEqual(self.read(UP + "!\r"), "first!")

    def test_a_line_printed_meanwhile_goes_above_the_half_typed_one(self):
        self.console.type("half" + LEFT)
        reader = threading.Thread(target=self.prompt.read_line, args=(self.stop,))
        reader.start()
        self.addCleanup(reader.join)
        self.addCleanup(self.stop.set)
        wait_until(lambda: self.console.keys.empty() and self.prompt.editor.cursor == 3)
        self.prompt.print_above("12:00 <bob> hi")
        text = self.console.text()
        self.assertIn("\r\x1b[2K12:00 <bob> hi\r\n", text)
        self.assertEqual(self.console.screen(), ("me> half", len("me> hal")))

    def test_ctrl_z_then_enter_ends_the_input(self):
        self.assertIsNone(self.read("\x1a\r"))

    def test_ctrl_c_raises_keyboard_interrupt(self):
        with self.assertRaises(KeyboardInterrupt):
            self.read("typed\x03")
        self.assertIn("me> typed^C\r\n", self.console.text())

    def test_it_stops_when_told_without_a_key(self):
        self.stop.set()
        self.assertIsNone(self.prompt.read_line(self.stop))


class WriteTextTest(unittest.TestCase):
    def test_what_a_code_page_lacks_is_escaped_not_raised(self):
        raw = io.BytesIO()
        stream = io.TextIOWrapper(raw, encoding="cp1252", newline="\n")
        write_text(stream, "caf\u00e9 \u263a\n")
        stream.flush()
        self.assertEqual(raw.getvalue(), b"caf\xe9 \\u263a\n")


class LogCodePageTest(unittest.TestCase):
    def test_the_server_log_escapes_what_a_code_page_lacks_and_keeps_the_batch(self):
        raw = io.BytesIO()
        log = Log(io.TextIOWrapper(raw, encoding="cp1252", newline="\n"))
        log.write("join \u03b1\u03bb\u03af\u03ba\u03b7 1.2.3.4:5\nleave caf\u00e9\n")
        self.assertEqual(raw.getvalue(),
                         b"join \\u03b1\\u03bb\\u03af\\u03ba\\u03b7 1.2.3.4:5\nleave caf\xe9\n")


class ServerLogPipeTest(ServerTestCase):
    def test_a_name_the_log_pipe_cannot_encode_is_logged_and_the_room_goes_on(self):
        # On Windows the server's standard output, a pipe, is in the ANSI
        # code page (cp1252 here): Greek is not in it.
        greek = "\u03b1\u03bb\u03af\u03ba\u03b7"
        alpha = self.peer(greek)
        self.server.log.expect(r" join (%s|\\u03b1\\u03bb\\u03af\\u03ba\\u03b7) " % greek)
        bob = self.peer("bob")
        alpha.expect(r"-- bob joined$")
        bob.send("still logging")
        alpha.expect(r"<bob> still logging$")
        self.server.log.expect(r" join bob ")
        self.assertEqual(self.server.errors.text(), "")


class ConsoleClientTest(ServerTestCase):
    """Client with its console prompt faked, against a real server."""

    def start_client(self, name: str):
        console = FakeConsole()
        options = chat_client.parse_client_args(
            ["--port", str(self.server.port), "--name", name, "--no-color"])
        chat = chat_client.Client(options, out=console)
        chat.interactive = True
        chat.console = prompt_for(console, name)
        chat.readline = chat.line_prompt = None
        result = {}
        thread = threading.Thread(target=lambda: result.setdefault("code", chat.run()))
        thread.start()
        self.addCleanup(lambda: chat.conn is not None and chat.conn.close())
        self.addCleanup(thread.join, 15)
        return chat, console, thread, result

    def test_typed_lines_go_out_and_received_ones_go_above_the_prompt(self):
        bob = self.peer("bob")
        chat, console, thread, result = self.start_client("win")
        bob.expect(r"-- win joined$")
        console.type("hello from windows\r")
        bob.expect(r"<win> hello from windows$")
        console.type("half")
        wait_until(lambda: chat.console.editor.buffer == "half")
        bob.send("hi win")
        wait_until(lambda: "<bob> hi win" in console.text())
        self.assertEqual(console.screen()[0], "win> half")
        console.type("\x08\x08\x08\x08/quit\r")
        thread.join(10)
        self.assertFalse(thread.is_alive())
        self.assertEqual(result["code"], 0)
        bob.expect(r"-- win left \(quit\)$")

    def test_a_lost_connection_ends_the_key_loop(self):
        chat, console, thread, result = self.start_client("win")
        wait_until(lambda: "welcome, win" in console.text())
        chat.options.no_reconnect = True
        if winproc.under_wine():
            # winproc.KILLED_SOCKET_LINGERS: the connection ends here instead
            # (the welcome is shown before connect() returns).
            conn = wait_until(lambda: chat.conn, message="the client's connection")
            conn.sock.shutdown(socket.SHUT_RDWR)
        else:
            self.server.kill()
        thread.join(10)
        self.assertFalse(thread.is_alive())
        self.assertEqual(result["code"], 1)
        self.assertIn("connection to the server lost", console.text())


if __name__ == "__main__":
    unittest.main()
