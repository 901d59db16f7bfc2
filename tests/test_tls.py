"""TLS and the room password, end to end: real server and client processes.

tests/test_cert.pem and tests/test_key.pem are a self-signed certificate for
localhost and 127.0.0.1; tests/other_cert.pem and tests/other_key.pem an
unrelated one for example.org (a wrong CA, a wrong name). They are for these
tests only: the keys are public, never serve anything real with them.
"""

import concurrent.futures
import json
import os
import re
import socket
import ssl
import stat
import threading
import time
import unittest
from typing import List, Optional, Set

from broadcast_chat import tls as tlscodec
from tests.support import (TIMEOUT, WINDOWS, ClientProcess, Peer, ServerProcess, child_env, proc_threads,
                           run_client, run_server, tls_peer, wait_until)

HERE = os.path.dirname(os.path.abspath(__file__))
CERT = os.path.join(HERE, "test_cert.pem")
KEY = os.path.join(HERE, "test_key.pem")
OTHER_CERT = os.path.join(HERE, "other_cert.pem")     # for example.org only
OTHER_KEY = os.path.join(HERE, "other_key.pem")
TLS_ARGS = ("--tls-cert", CERT, "--tls-key", KEY)
SECRET = "correct horse"


def trusting(cafile: str = CERT) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)


def write_file(folder: str, name: str, text: str) -> str:
    path = os.path.join(folder, name)
    with open(path, "w") as handle:
        handle.write(text + "\n")
    return path


def send_with_handshake_end(port: int, text: str) -> socket.socket:
    """Connect over TLS and send text in the same piece as the handshake's
    last message, as a fast client may; return the plain socket."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = trusting().wrap_bio(incoming, outgoing, server_hostname="localhost")
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            incoming.write(sock.recv(16384))
    tls.write(text.encode("utf-8"))
    sock.sendall(outgoing.read())
    return sock


def in_parallel(function, cases) -> list:
    """function(*case) for every case, in threads: start-ups are slow, waits are not."""
    with concurrent.futures.ThreadPoolExecutor(len(cases)) as pool:
        return list(pool.map(lambda case: function(*case), cases))


class ClearError:
    """Assertions on a client or server that stopped with an error."""

    def assertClearError(self, result, *words: str) -> None:
        self.assertNotEqual(result.returncode, 0, result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, "want one line on stderr, got %r" % result.stderr)
        for word in words:
            self.assertIn(word, lines[0])


class TlsServerTest(ClearError, unittest.TestCase):
    """One TLS server (no password) shared by the tests of this class."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = ServerProcess(*TLS_ARGS, env=child_env()).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.__exit__(None, None, None)

    def tls_socket(self, context: Optional[ssl.SSLContext] = None) -> Peer:
        sock = tls_peer(self.server.port, context or trusting(), greet=False)
        self.addCleanup(sock.close)
        return sock

    def client(self, *args: str, stdin: str = ""):
        return run_client(self.server.port, *args, stdin=stdin, env=child_env())

    def test_official_clients_chat_over_tls(self) -> None:
        alice = ClientProcess(self.server.port, "--cafile", CERT, "--name", "alice",
                              "--no-reconnect", env=child_env())
        self.addCleanup(alice.kill)
        alice.expect(r"-- welcome, alice!")
        bob = self.client("--cafile", CERT, "--name", "bob", stdin="hello over tls\n")
        self.assertEqual(bob.returncode, 0, bob.stderr)
        self.assertIn("-- welcome, bob!", bob.stdout)
        alice.expect(r"<bob> hello over tls")
        alice.send("and back")
        code, error = alice.finish()
        self.assertEqual((code, error), (0, ""))
        self.server.log.expect(r"join bob ")

    def test_raw_tls_sockets_chat(self) -> None:
        carol = self.tls_socket().nick("carol")
        dave = self.tls_socket().nick("dave")
        carol.send("hi dave, this is encrypted")
        dave.expect(r"<carol> hi dave, this is encrypted$")
        dave.send("/msg carol psst")
        carol.expect(r"\*dave\* psst$")

    def test_lines_that_come_with_the_end_of_the_handshake(self) -> None:
        uma = self.tls_socket().nick("uma")
        eager = send_with_handshake_end(self.server.port, "/nick eager\nin the same piece\n")
        self.addCleanup(eager.close)
        uma.expect(r"<eager> in the same piece$")

    def test_plain_client_at_tls_server(self) -> None:
        result = self.client("--name", "plain")
        self.assertClearError(result, "--tls")
        self.server.log.expect(r"refuse \S+ TLS handshake failed: the other side does not speak TLS")
        raw = Peer(self.server.port, greet=False)
        self.addCleanup(raw.close)
        raw.send("/nick rawplain")
        raw.expect_closed()
        self.assertEqual([line for line in raw.lines if line], [])
        # The server carries on.
        self.tls_socket().nick("after-plain")

    def test_certificate_not_trusted(self) -> None:
        cases = [("--tls",), ("--cafile", OTHER_CERT)]
        results = in_parallel(lambda *args: self.client("--name", "doubter", *args), cases)
        for args, result in zip(cases, results):
            with self.subTest(args=args):
                self.assertClearError(result, "TLS handshake failed", "certificate")
                self.assertNotIn("welcome", result.stdout)

    def test_insecure_connects_with_a_warning(self) -> None:
        result = self.client("--insecure", "--name", "reckless", stdin="hi\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("-- welcome, reckless!", result.stdout)
        self.assertRegex(result.stderr, r"warning: --insecure: .*certificate is not checked")

    def test_stalled_handshakes_block_nobody(self) -> None:
        stalled = []
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", self.server.port))
            self.addCleanup(sock.close)
            stalled.append(sock)
        erin = self.tls_socket().nick("erin")
        frank = self.tls_socket().nick("frank")
        erin.send("nobody waits for the silent ones")
        frank.expect(r"<erin> nobody waits for the silent ones$")
        result = self.client("--cafile", CERT, "--name", "grace", stdin="me neither\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        erin.expect(r"<grace> me neither$")
        for sock in stalled:    # still waiting in their own threads, not refused
            sock.setblocking(False)
            with self.assertRaises(BlockingIOError):
                sock.recv(1)

    @unittest.skipIf(WINDOWS, "POSIX file modes")
    def test_clients_file_is_for_its_owner_only(self) -> None:
        self.tls_socket().nick("henry")
        path = self.server.clients_file

        def has_henry() -> bool:
            try:
                with open(path) as handle:
                    return any(record["name"] == "henry" for record in json.load(handle))
            except (OSError, ValueError):
                return False
        wait_until(has_henry, message="henry in clients.json")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)


class OtherNameTest(ClearError, unittest.TestCase):

    def test_certificate_for_another_name(self) -> None:
        with ServerProcess("--tls-cert", OTHER_CERT, "--tls-key", OTHER_KEY,
                           env=child_env()) as server:
            result = run_client(server.port, "--cafile", OTHER_CERT, "--name", "vic",
                                env=child_env())
            self.assertClearError(result, "TLS handshake failed", "certificate", "--host")
            result = run_client(server.port, "--cafile", OTHER_CERT, "--insecure",
                                "--name", "vic", env=child_env())
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn("-- welcome, vic!", result.stdout)


class PlainServerTest(ClearError, unittest.TestCase):

    def test_tls_client_at_plain_server(self) -> None:
        in_parallel(self.check_tls_client_at_plain_server, [(None,), (SECRET,)])

    def check_tls_client_at_plain_server(self, password: str) -> None:
        env = child_env() if password is None else child_env(BROADCAST_PASSWORD=password)
        with ServerProcess(env=env) as server:
            result = run_client(server.port, "--cafile", CERT, "--name", "tlsy", env=env)
            self.assertClearError(result, "TLS handshake failed", "does not speak TLS")
            server.log.expect(r"\S+ spoke TLS to a server without TLS")
            raw = server.connect(greet=False)
            try:
                if password is not None:
                    raw.send("/pass " + password)
                raw.nick("plainly")     # the server carries on
            finally:
                raw.close()


class PasswordTest(ClearError, unittest.TestCase):
    """One plain server with --password-file, shared by this class.

    Failed passwords from 127.0.0.1 slow each other down until a right one
    comes, so every test here lets a right one in before a wrong one.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = ServerProcess(env=child_env())
        cls.secret_file = write_file(cls.server.folder, "secret", SECRET)
        cls.wrong_file = write_file(cls.server.folder, "wrong", "incorrect horse")
        cls.server.args += ["--password-file", cls.secret_file]
        cls.server.start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.__exit__(None, None, None)

    def member(self, name: str) -> Peer:
        sock = self.server.connect(greet=False)
        self.addCleanup(sock.close)
        sock.send("/pass " + SECRET)
        return sock.nick(name)

    def count_log(self, refusal: str) -> int:
        return sum(1 for line in self.server.log.lines if re.search(r"refuse \S+ " + refusal, line))

    def clients_file_addresses(self) -> Set[str]:
        try:
            with open(self.server.clients_file) as handle:
                return {record["address"] for record in json.load(handle)}
        except (OSError, ValueError):
            return set()

    def test_password_file_on_both_sides(self) -> None:
        ivy = self.member("ivy")
        result = run_client(self.server.port, "--password-file", self.secret_file,
                            "--name", "jack", stdin="the password worked\n", env=child_env())
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("-- welcome, jack!", result.stdout)
        ivy.expect(r"<jack> the password worked$")

    def test_raw_pass_first_line(self) -> None:
        kate = self.member("kate")
        nc = self.server.connect(greet=False)
        self.addCleanup(nc.close)
        nc.sendraw(("/pass %s\r\n/nick leo\nsent with the password\n" % SECRET).encode())
        nc.expect(r"-- welcome, leo!")
        kate.expect(r"<leo> sent with the password$")

    def test_pass_is_read_like_other_commands(self) -> None:
        kate = self.member("kate2")
        nc = self.server.connect(greet=False)
        self.addCleanup(nc.close)
        nc.sendraw(("/PASS  %s\n/nick leo2\nin with capitals\n" % SECRET).encode())
        nc.expect(r"-- welcome, leo2!")
        kate.expect(r"<leo2> in with capitals$")
        nc.send("/pass again")      # once in, /pass is harmless
        nc.expect(r"-- you are in: /pass is needed only as the first line")

    def test_official_client_with_wrong_or_no_password(self) -> None:
        for args, words, logged in ((("--password-file", self.wrong_file), ("wrong password",),
                                     "wrong password"),
                                    ((), ("password needed", "/pass"), "no password given")):
            with self.subTest(args=args):
                mia = self.member("mia" if args else "mia2")
                refusals = self.count_log(logged)
                result = run_client(self.server.port, "--name", "nemo", *args,
                                    stdin="should never arrive\n", env=child_env())
                self.assertClearError(result, *words)
                self.assertNotIn("welcome", result.stdout)
                wait_until(lambda: self.count_log(logged) > refusals, message="a refusal logged")
                mia.send("/who")
                self.assertNotIn("nemo", mia.expect(r"-- \d+ online: ").string)
                self.assertFalse([line for line in mia.lines if "nemo" in line or "never" in line])
                mia.send("/quit")
                mia.expect_closed()

    def test_refused_raw_client_never_joins_hears_or_speaks(self) -> None:
        for serial, first, logged in ((1, "/pass incorrect horse", "wrong password"),
                                      (2, "/nick intruder", "no password given")):
            with self.subTest(first=first):
                self.check_refused(first, logged, serial)

    def check_refused(self, first: str, logged: str, serial: int) -> None:
        olga = self.member("olga%d" % serial)
        paul = self.member("paul%d" % serial)
        seen = set()    # type: Set[str]
        watching = threading.Event()

        def watch_clients_file() -> None:
            while not watching.is_set():
                seen.update(self.clients_file_addresses())
                watching.wait(0.01)     # polling interval
        watcher = threading.Thread(target=watch_clients_file, daemon=True)
        watcher.start()
        intruder = self.server.connect(greet=False)
        self.addCleanup(intruder.close)
        address = "%s:%d" % intruder.sock.getsockname()[:2]
        olga.send("said while the stranger waits")
        paul.expect(r"<olga\d> said while the stranger waits$")
        intruder.sendraw((first + "\n/nick intruder\nintruder speaks\n").encode())
        olga.send("said while the stranger is refused")
        intruder.expect(r"!! (wrong password|password needed)")
        intruder.expect_closed()
        self.server.log.expect(r"refuse %s %s" % (re.escape(address), logged))
        olga.send("fence")
        paul.expect(r"<olga\d> fence$")
        olga.send("/who")
        self.assertNotIn("intruder", olga.expect(r"-- \d+ online: ").string)
        watching.set()
        watcher.join()
        seen.update(self.clients_file_addresses())
        self.assertNotIn(address, seen)
        self.assertFalse([line for line in intruder.lines if "said while" in line or "<" in line])
        for member in (olga, paul):
            self.assertFalse([line for line in member.lines if "intruder" in line])
        mentions = [line for line in self.server.log.lines if address in line]
        self.assertEqual(len(mentions), 1, mentions)
        self.assertIn("refuse", mentions[0])
        for member in (olga, paul):
            member.send("/quit")
            member.expect_closed()


class PasswordFromEnvironmentTest(ClearError, unittest.TestCase):

    def test_environment_on_both_sides_with_tls(self) -> None:
        env = child_env(BROADCAST_PASSWORD=SECRET)
        with ServerProcess(*TLS_ARGS, env=env) as server:
            quinn = tls_peer(server.port, trusting(), greet=False)
            self.addCleanup(quinn.close)
            quinn.send("/pass " + SECRET)
            quinn.nick("quinn")
            result = run_client(server.port, "--cafile", CERT, "--name", "rosa",
                                stdin="from the environment\n", env=env)
            self.assertEqual(result.returncode, 0, result.stderr)
            quinn.expect(r"<rosa> from the environment$")
            eager = send_with_handshake_end(server.port, "/pass %s\n/nick eager\nfast\n" % SECRET)
            self.addCleanup(eager.close)
            quinn.expect(r"<eager> fast$")
            result = run_client(server.port, "--cafile", CERT, "--name", "sam",
                                env=child_env(BROADCAST_PASSWORD="not it"))
            self.assertClearError(result, "wrong password")


class ThrottleTest(unittest.TestCase):

    def test_repeated_failures_get_slower(self) -> None:
        with ServerProcess(env=child_env(BROADCAST_PASSWORD=SECRET)) as server:
            durations = []  # type: List[float]
            for _ in range(3):
                sock = server.connect(greet=False)
                self.addCleanup(sock.close)
                start = time.monotonic()
                sock.send("/pass guess")
                sock.expect(r"!! wrong password")
                durations.append(time.monotonic() - start)
                sock.expect_closed()
            # No wait for the first, 0.25 s before the second, 0.5 s before
            # the third: leave wide margins.
            self.assertGreater(durations[2], durations[0] + 0.3, durations)
            sock = server.connect(greet=False)
            self.addCleanup(sock.close)
            sock.send("/pass " + SECRET)
            sock.nick("tina")

    def test_guesses_made_at_once_wait_their_turn(self) -> None:
        with ServerProcess(env=child_env(BROADCAST_PASSWORD=SECRET)) as server:
            first = server.connect(greet=False)
            self.addCleanup(first.close)
            first.send("/pass guess")
            first.expect(r"!! wrong password")
            guesses = [server.connect(greet=False) for _ in range(3)]
            for sock in guesses:
                self.addCleanup(sock.close)
            start = time.monotonic()
            guesses[0].send("/pass another guess")
            guesses[1].send("/pass a third guess")
            guesses[2].send("/pass " + SECRET)
            guesses[2].nick("uma")
            # Even the right one waited (0.25 s after one wrong password):
            # so many connections guessing at once guess no faster than
            # Gate.max_checks per delay.
            self.assertGreater(time.monotonic() - start, 0.15)


class HandshakeLimitTest(unittest.TestCase):
    def test_connections_still_handshaking_count_against_max_clients(self) -> None:
        with ServerProcess("--max-clients", "2", *TLS_ARGS, env=child_env()) as server:
            base = proc_threads(server.proc.pid)
            silent = [socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
                      for _ in range(2)]
            for sock in silent:
                self.addCleanup(sock.close)
            # Their handler threads are up (and counted at once as they start).
            wait_until(lambda: proc_threads(server.proc.pid) >= base + 2)
            late = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
            self.addCleanup(late.close)
            server.log.expect(r"refuse \S+ server full \(before joining\)")
            late.settimeout(TIMEOUT)
            self.assertEqual(late.recv(100), b"")     # closed, without a word it could read

    def test_the_handshake_has_one_deadline(self) -> None:
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        codec = tlscodec.TlsCodec(trusting(), server_side=False, server_hostname="localhost")
        started = time.monotonic()
        with self.assertRaises((TimeoutError, socket.timeout)):     # one class from 3.10
            tlscodec.tls_handshake(ours, codec, deadline=started + 0.2)   # nobody answers
        self.assertLess(time.monotonic() - started, 5)


class StartupTest(ClearError, unittest.TestCase):

    def start_stop(self, *args: str, env: dict = None) -> str:
        """Start a server, stop it, return what it wrote on stderr."""
        with ServerProcess(*args, env=env or child_env()) as server:
            if WINDOWS:     # no signal stops it cleanly (support.needs_posix_signals)
                server.proc.kill()
                server.wait()
            else:
                self.assertEqual(server.stop(), 0)
            return server.errors.text()

    def test_open_to_the_network_without_protection_warns(self) -> None:
        error = self.start_stop("--host", "0.0.0.0")
        lines = error.strip().splitlines()
        self.assertEqual(len(lines), 1, error)
        self.assertRegex(lines[0], r"^server.py: warning: listening on 0\.0\.0\.0 without "
                                   r"TLS or a password")

    def test_no_warning_with_a_password_or_tls_or_on_loopback(self) -> None:
        password = child_env(BROADCAST_PASSWORD=SECRET)
        errors = in_parallel(lambda *args: self.start_stop(*args[1:], env=args[0]),
                             [(password, "--host", "0.0.0.0"),
                              (None, "--host", "0.0.0.0") + TLS_ARGS,
                              (None,)])
        self.assertEqual(errors, ["", "", ""])

    def test_unusable_certificate_or_key(self) -> None:
        missing = os.path.join(HERE, "no-such-cert.pem")
        cases = (
            (("--tls-cert", missing, "--tls-key", KEY), ("cannot read", "no-such-cert.pem")),
            (("--tls-cert", CERT, "--tls-key", missing), ("cannot read", "no-such-cert.pem")),
            (("--tls-cert", CERT), ("--tls-cert and --tls-key go together",)),
            (("--tls-key", KEY), ("--tls-cert and --tls-key go together",)),
            (("--tls-cert", CERT, "--tls-key", OTHER_CERT), ("cannot use the TLS certificate",)),
        )
        results = in_parallel(lambda *args: run_server(*args, env=child_env()),
                              [args for args, _ in cases])
        for (args, words), result in zip(cases, results):
            with self.subTest(args=args):
                self.assertClearError(result, *words)
                self.assertEqual(result.stdout, "")


if __name__ == "__main__":
    unittest.main()
