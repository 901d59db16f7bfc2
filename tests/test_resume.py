"""Resume, history files and name tokens against real server processes."""

import os
import random
import signal
import socket
import sqlite3
import tempfile
import threading
import time
import unittest

from tests.support import (TIMEOUT, WINDOWS, Peer, ServerTestCase, TerminalClient,
                           needs_posix_signals, run_server, wait_until)

from broadcast_chat.connection import (RESEND, UNKNOWN, ChatError, Connection, SentLines,
                                      StreamPosition, expected_event)


class Resumer:
    """An official client's stream logic (Connection, StreamPosition) that
    cuts its own connection after a random number of events, and resumes."""

    def __init__(self, port, name, rng, cuts):
        self.port = port
        self.name = name
        self.rng = rng
        self.cuts_left = cuts
        self.position = StreamPosition()
        self.events = []        # (id, kind, from, text) of every event kept, in order
        self.notes = []         # replies: resumed, history, ...
        self.done = threading.Event()
        self.error = None

    def connect(self):
        conn = Connection("127.0.0.1", self.port)
        self.name = conn.register(self.name, self.take, position=self.position)
        return conn

    def take(self, got):
        if not isinstance(got, dict) or not self.position.see(got):
            return
        if got.get("type") == "event":
            self.events.append((got["id"], got["kind"], got.get("from"), got.get("text")))
        elif got.get("type") == "reply":
            self.notes.append(got)

    def run(self, until):
        try:
            conn = self.connect()
            budget = self.rng.randrange(1, 80)
            while not until(self):
                got = conn.read()
                if got is None:
                    raise AssertionError("%s: connection closed by the server" % self.name)
                self.take(got)
                budget -= 1
                if budget <= 0 and self.cuts_left:
                    self.cuts_left -= 1
                    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                         b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    conn.close()        # a reset, whatever was in flight is lost
                    conn = self.connect()
                    budget = self.rng.randrange(1, 80)
            conn.close()
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()


class RandomCutTest(ServerTestCase):
    server_args = ("--rate-limit", "0", "--history-keep", "20000")

    def test_cuts_at_random_moments_lose_nothing_and_duplicate_nothing(self):
        server = self.server
        rng = random.Random(12)
        senders = [self.peer("s%d" % n) for n in range(3)]
        total = 400
        last = {s.name: "%s-%04d" % (s.name, total - 1) for s in senders}

        def finished(resumer):
            texts = {text for _, _, _, text in resumer.events[-200:]}
            return all(line in texts for line in last.values())

        resumers = [Resumer(server.port, "r%d" % n, random.Random(rng.random()), cuts=10)
                    for n in range(4)]
        steady = Resumer(server.port, "steady", rng, cuts=0)
        threads = [threading.Thread(target=r.run, args=(finished,), daemon=True)
                   for r in resumers + [steady]]
        for thread in threads:
            thread.start()
        server.wait_clients(lambda c: len(c) == 8 and all(r["name"] for r in c))
        for number in range(0, total, 20):      # bursts: blocks the fast path orders whole
            for sender in senders:
                sender.sendraw(b"".join(b"%s-%04d\n" % (sender.name.encode(), n)
                                        for n in range(number, number + 20)))
            time.sleep(0.005)       # pacing the load, not synchronisation
        for resumer in resumers + [steady]:
            if not resumer.done.wait(20):
                texts = [text for _, _, _, text in resumer.events]
                ids = [event[0] for event in resumer.events]
                gaps = [(a, b) for a, b in zip(ids, ids[1:]) if b != a + 1]
                raise AssertionError(
                    "%s did not finish: %d cuts left, %d events, last lines missing: %s, "
                    "gaps in the ids: %s, last events: %s, last notes: %s" % (
                        resumer.name, resumer.cuts_left, len(texts),
                        [line for line in last.values() if line not in texts], gaps[:10],
                        resumer.events[-5:], resumer.notes[-3:]))
            self.assertIsNone(resumer.error)

        def said(resumer):
            return [(i, t) for i, kind, sender, t in resumer.events
                    if kind == "message" and sender in last]
        reference = said(steady)
        self.assertEqual(len(reference), 3 * total)
        for resumer in resumers:
            ids = [event[0] for event in resumer.events]
            self.assertEqual(ids, sorted(set(ids)), resumer.name)    # in order, once each
            self.assertEqual(said(resumer), reference, resumer.name)
            self.assertEqual(resumer.cuts_left, 0, resumer.name)
            self.assertEqual(resumer.name, "r%d" % resumers.index(resumer))  # its name kept
            resumed = [n for n in resumer.notes if n.get("code") == "resumed"]
            self.assertEqual(len(resumed), 10)
            self.assertTrue(all(n["missed"] == 0 for n in resumed))


class HistoryFileServerTest(ServerTestCase):
    def setUp(self):
        pass        # each test starts its own

    @needs_posix_signals
    def test_a_restart_with_the_history_file_keeps_history_ids_and_names(self):
        path = os.path.join(self.server_folder(), "history.db")
        first = self.start_server("--history-file", path)
        alice = self.peer("alice", first)
        position = StreamPosition()
        conn = Connection("127.0.0.1", first.port)
        self.addCleanup(conn.close)
        self.assertEqual(conn.register("bob", lambda got: position.see(got),
                                       position=position), "bob")
        conn.sock.settimeout(TIMEOUT)
        alice.send("before the restart")
        wait_until(lambda: (lambda got: position.see(got) and got.get("text") ==
                            "before the restart")(conn.read()), message="bob hears alice")
        seen, token = position.last_id, position.token
        self.assertEqual(first.stop(), 0)
        conn.close()
        self.assertEqual(sqlite3.connect(path).execute(
            "SELECT body FROM events WHERE kind = 'message'").fetchall(),
            [(b"before the restart\n",)])

        second = self.start_server("--history-file", path, port=first.port)
        carol = Peer(second.port)
        self.addCleanup(carol.close)
        carol.send("/nick carol")
        carol.expect(r"-- earlier messages")
        carol.expect(r"<alice> before the restart$")
        carol.expect(r"-- end of earlier messages$")
        carol.send("while bob is away")
        squatter = self.peer("bob", second)        # takes bob's name meanwhile
        # Once someone has heard carol's line, the room has ordered it, and
        # bob's resume has it to replay (else it comes live, after "resumed").
        squatter.expect(r"<carol> while bob is away$")
        got = []
        again = Connection("127.0.0.1", second.port)
        self.addCleanup(again.close)
        self.assertEqual(again.register("bob", got.append, position=position), "bob")
        self.assertEqual(position.token is not None and position.token != token, True)
        squatter.expect(r"!! your name bob was taken back by its owner, who reconnected; "
                        r"you are now guest-\d+")
        again.sock.settimeout(TIMEOUT)      # a read that waits longer fails, with what came
        replay = []
        try:
            while not any(isinstance(o, dict) and o.get("code") == "history_end" for o in replay):
                replay.append(again.read())
                self.assertIsNotNone(replay[-1], "the server closed the connection")
        except (ChatError, AssertionError) as exc:
            raise AssertionError("no end of the replay: %s; joining: %r; then: %r; server: %s"
                                 % (exc, got, replay, second.errors.text()[-2000:]))
        resumed = [o for o in got + replay if o.get("code") == "resumed"][0]
        self.assertEqual(resumed["missed"], 0)
        events = [o for o in replay if o.get("type") == "event"]
        self.assertEqual(events[0]["id"], seen + 1)          # ids continue across restarts
        self.assertIn("while bob is away", [o.get("text") for o in events])
        self.assertTrue(all(o["history"] for o in events))

    @needs_posix_signals
    def test_every_accepted_line_is_in_the_file_after_a_clean_shutdown(self):
        path = os.path.join(self.server_folder(), "history.db")
        server = self.start_server("--history-file", path, "--rate-limit", "0",
                                   "--history-keep", "100000")
        peers = [self.peer("p%d" % n, server) for n in range(3)]
        for peer in peers:      # plain lines: the fast path's blocks
            peer.sendraw(b"".join(b"%s line %d\n" % (peer.name.encode(), n)
                                  for n in range(2000)))
        peers[0].send("/me is done")
        for peer in peers:
            peer.sync()
        self.assertEqual(server.stop(), 0)
        db = sqlite3.connect(path)
        self.addCleanup(db.close)
        blocks = db.execute("SELECT name, body FROM events WHERE kind = 'message' "
                            "ORDER BY id").fetchall()
        for peer in peers:
            text = b"".join(body for name, body in blocks if name == peer.name)
            self.assertEqual(text, b"".join(b"%s line %d\n" % (peer.name.encode(), n)
                                            for n in range(2000)))
        self.assertEqual(db.execute("SELECT COUNT(*) FROM events WHERE kind = 'action'")
                         .fetchone()[0], 1)

    def test_a_corrupt_history_file_stops_the_start_with_a_clear_error(self):
        path = os.path.join(self.server_folder(), "bad.db")
        with open(path, "wb") as handle:
            handle.write(b"not sqlite at all\n" * 200)
        done = run_server("--history-file", path)
        self.assertEqual(done.returncode, 2)
        err = done.stderr
        self.assertRegex(err, r"server.py: error: cannot use the history file .*bad.db: "
                              r"file is not a database")
        self.assertNotIn("Traceback", err)

    def test_a_history_file_in_a_missing_folder_is_refused_at_start_up(self):
        done = run_server("--history-file", "/nonexistent-folder/history.db")
        self.assertEqual(done.returncode, 2)
        # The folder as the server's own folder makes it absolute (C:\ on Windows).
        self.assertRegex(done.stderr.strip(), r"^server\.py: error: cannot use the history file "
                         r"/nonexistent-folder/history\.db: the folder (\w:)?[/\\]"
                         r"nonexistent-folder does not exist$")

    def server_folder(self):
        folder = tempfile.TemporaryDirectory(prefix="chat-hist-")
        self.addCleanup(folder.cleanup)
        return folder.name


def own(kind, text, name="tty", **fields):
    return dict({"type": "event", "kind": kind, "from": name, "text": text}, **fields)


class SentLinesTest(unittest.TestCase):
    """What the client sends again after a reconnect (pure)."""

    def test_the_event_a_line_makes_is_what_the_server_reads_of_it(self):
        self.assertEqual(expected_event("hello"), ("message", "hello"))
        self.assertEqual(expected_event("tab\there \x1b[2J"), ("message", "tab here ^[[2J"))
        self.assertEqual(expected_event("//not a command"), ("message", "/not a command"))
        self.assertEqual(expected_event("/me waves"), ("action", "waves"))
        for line in ("/nick bob", "/msg bob hi", "/who", "   ", "/me"):
            self.assertIsNone(expected_event(line), line)

    def test_an_echo_takes_its_line_and_those_the_room_refused_before_it(self):
        sent = SentLines()
        for line in ("one", "/who", "two", "/me nods", "three"):
            sent.sent("tty", line)
        self.assertEqual(len(sent), 4)      # /who makes no event
        sent.see(own("message", "two"))
        self.assertEqual([entry[3] for entry in sent.lines], ["/me nods", "three"])
        sent.see(own("message", "three", name="bob"))     # someone else's
        sent.see(own("action", "nods"))
        self.assertEqual(sent.take(), ["three"])
        self.assertEqual(len(sent), 0)

    def test_lines_not_echoed_yet_come_back_under_a_new_name(self):
        sent = SentLines()
        for line in ("one", "two"):
            sent.sent("tty", line)
        sent.see(own("message", "one"))
        sent.renamed("tty", "guest-1")      # taken back by its owner, or /nick
        sent.see(own("message", "two", name="guest-1"))
        self.assertEqual(sent.take(), [])

    def test_a_refusal_leaves_nothing_to_send_again(self):
        sent = SentLines()
        sent.sent("tty", "one")
        sent.see({"type": "error", "code": "flood", "text": "flood: 1 line not sent"})
        self.assertEqual(sent.take(), [])
        sent.sent("tty", "two")
        sent.unsend("two")      # the send failed: it waits among the unsent instead
        self.assertEqual(sent.take(), [])

    def test_the_resume_decides(self):
        resumed = {"type": "reply", "code": "resumed"}
        cases = [
            ([dict(resumed, events=0, missed=0)], RESEND),
            ([dict(resumed, events=2, missed=0), own("message", "x", history=True),
              {"type": "reply", "code": "history_end"}], RESEND),
            ([dict(resumed, events=5, missed=3)], UNKNOWN),
            ([{"type": "reply", "code": "history_reset"}], UNKNOWN),
            ([own("message", "live")], UNKNOWN),
        ]
        for objects, verdict in cases:
            sent = SentLines()
            verdicts = [sent.settle(got) for got in objects]
            self.assertEqual(verdicts, [None] * (len(objects) - 1) + [verdict], objects)


@unittest.skipIf(WINDOWS, "needs a POSIX pty (Windows' console client: tests/test_winclient.py)")
class TerminalResumeTest(ServerTestCase):
    def setUp(self):
        folder = tempfile.TemporaryDirectory(prefix="chat-hist-")
        self.addCleanup(folder.cleanup)
        self.path = os.path.join(folder.name, "history.db")
        self.server = self.start_server("--history-file", self.path)

    def test_after_a_restart_it_shows_what_it_missed_and_sends_what_was_typed(self):
        port = self.server.port
        bob = self.peer("bob")
        bob.sync()      # bob's join notice ordered, so that tty has a history to end
        tty = TerminalClient(port, "--name", "tty", "--no-color")
        self.addCleanup(tty.close)
        tty.expect(r"-- end of earlier messages\r\n(?=tty> )")   # the last line of joining
        bob.send("before the restart")
        tty.expect(r"<bob> before the restart")
        tty.wait_reading()
        self.assertEqual(self.server.stop(), 0)
        tty.expect(r"-- connection lost; reconnecting")
        tty.type("first while away\r")
        tty.expect(r"-- not connected: line kept, sent once reconnected \(1 waiting\)")
        tty.wait_reading()
        tty.type("second while away\r")
        tty.expect(r"\(2 waiting\)")
        tty.expect(r"-- .*; trying again in 2 s")
        second = self.start_server("--history-file", self.path, port=port)
        carol = self.peer("carol", second)
        carol.send("said while tty was away")
        carol.expect(r"-- tty joined$", timeout=10)
        carol.expect(r"<tty> first while away$")
        carol.expect(r"<tty> second while away$")
        tty.expect(r"-- sent 2 lines typed while disconnected")
        tty.expect(r"-- 2 events while you were away\r\n")
        tty.expect(r"-- carol joined\r\n")
        tty.expect(r"<carol> said while tty was away\r\n")
        tty.expect(r"-- end of earlier messages")
        self.assertEqual(tty.text().count("before the restart"), 1)
        tty.wait_reading()
        tty.type("\x04")
        self.assertEqual(tty.wait(), 0)

    @unittest.skipUnless(os.path.exists("/proc/net/tcp"), "reads /proc/net/tcp (Linux)")
    def test_a_line_the_server_never_read_is_sent_again_after_a_restart(self):
        port = self.server.port
        bob = self.peer("bob")
        bob.sync()      # bob's join notice ordered, so that tty has a history to end
        tty = TerminalClient(port, "--name", "tty", "--no-color")
        self.addCleanup(tty.close)
        tty.expect(r"-- end of earlier messages\r\n(?=tty> )")
        tty.wait_reading()
        tty.type("taken before\r")
        bob.expect(r"<tty> taken before$")
        tty.expect(r"<tty> taken before\r\n")     # the room's echo: the client knows it
        wait_until(lambda: self.messages() == [b"taken before\n"], message="the line kept")
        tty.wait_reading()
        stop(self.server)
        tty.type("lost in flight\r")
        # Sent: it waits unread at the server's end of the connection.
        wait_until(lambda: unread_at(port), message="the line to arrive at the stopped server")
        self.server.kill()
        tty.expect(r"-- connection lost; reconnecting")
        second = self.start_server("--history-file", self.path, port=port)
        carol = self.peer("carol", second)
        carol.expect(r"<tty> lost in flight$", timeout=10)
        tty.expect(r"-- sent again 1 line the server had not received when the connection "
                   r"was lost\r\n")
        tty.wait_reading()
        tty.type("after\r")
        carol.expect(r"<tty> after$")
        self.assertEqual(self.messages(wait_for=3),
                         [b"taken before\n", b"lost in flight\n", b"after\n"])
        self.assertEqual(second.stop(), 0)

    @unittest.skipUnless(os.path.exists("/proc/net/tcp"), "reads /proc/net/tcp (Linux)")
    def test_where_the_resume_cannot_tell_the_line_is_said_to_be_in_doubt(self):
        first = self.start_server()     # no history file: a restart forgets the ids
        port = first.port
        tty = TerminalClient(port, "--name", "tty", "--no-color")
        self.addCleanup(tty.close)
        tty.expect(r"-- welcome, tty!.*\r\n(?=tty> )")
        tty.wait_reading()
        stop(first)
        tty.type("lost in flight\r")
        wait_until(lambda: unread_at(port), message="the line to arrive at the stopped server")
        first.kill()
        tty.expect(r"-- connection lost; reconnecting")
        second = self.start_server(port=port)
        carol = self.peer("carol", second)
        tty.expect(r"-- 1 line sent just before the connection was lost may not have "
                   r"reached the room\r\n")
        tty.wait_reading()
        tty.type("after\r")
        carol.expect(r"<tty> after$")
        self.assertNotIn("lost in flight", "\n".join(carol.lines))

    def messages(self, wait_for=0):
        """The bodies of the messages in the history file (once wait_for are there)."""
        def read():
            try:
                return [row[0] for row in sqlite3.connect(self.path).execute(
                    "SELECT body FROM events WHERE kind = 'message' ORDER BY id")]
            except sqlite3.OperationalError:    # being written
                return None
        if wait_for:
            wait_until(lambda: len(read() or ()) >= wait_for, message="%d messages kept" % wait_for)
        return read()


def stop(server):
    """SIGSTOP server, and wait until every thread of it has stopped (each
    stops on its way back from the kernel: one can still read meanwhile)."""
    server.send_signal(signal.SIGSTOP)
    tasks = "/proc/%d/task" % server.proc.pid

    def stopped():
        for task in os.listdir(tasks):
            try:
                with open(os.path.join(tasks, task, "stat")) as stat:
                    if stat.read().rsplit(")", 1)[1].split()[0] != "T":
                        return False
            except FileNotFoundError:
                pass        # a thread that ended
        return True
    wait_until(stopped, message="every thread of the server to stop")


def unread_at(port):
    """Whether a connection to 127.0.0.1:port has bytes its server has not read."""
    with open("/proc/net/tcp") as table:
        for row in list(table)[1:]:
            fields = row.split()
            local, queues = fields[1], fields[4]
            if int(local.split(":")[1], 16) == port and int(queues.split(":")[1], 16) > 0:
                return True
    return False


if __name__ == "__main__":
    unittest.main()
