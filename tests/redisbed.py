"""A redis-server of the tests' own: a free port, a temporary folder, a log.

Never a system-wide instance: each RedisServer starts its own process,
bound to 127.0.0.1, and waits for it to answer PING (not for a time).
"""

import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
from typing import List, Optional, Sequence

from broadcast_chat import resp
from tests.support import TIMEOUT, free_port

REDIS_SERVER = shutil.which("redis-server")
needs_redis = unittest.skipUnless(REDIS_SERVER and sys.platform != "win32",
                                  "needs redis-server (apt-get install redis-server)")

HERE = os.path.dirname(os.path.abspath(__file__))
CERT = os.path.join(HERE, "test_cert.pem")     # for localhost and 127.0.0.1
KEY = os.path.join(HERE, "test_key.pem")

_tls_support = {}   # type: dict


def redis_has_tls() -> bool:
    """Whether this redis-server was built with TLS: one without it
    refuses the tls-port directive."""
    if "answer" not in _tls_support:
        probe = subprocess.run([REDIS_SERVER, "--port", "0", "--tls-port", "0", "--save", ""],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=TIMEOUT)
        _tls_support["answer"] = b"Bad directive" not in probe.stdout
    return _tls_support["answer"]


class RedisServer:
    """redis-server on a free port, as a context manager.

    password: --requirepass. persist: an append-only file fsynced at every
    write, so restart() and even kill() then start() keep the data.
    tls: TLS only (no plain port), with tests/test_cert.pem; url is then
    rediss:// and client() trusts that certificate.
    """

    start_attempts = 5      # another process may take the free port first

    def __init__(self, password: Optional[str] = None, persist: bool = False,
                 tls: bool = False, extra: Sequence[str] = ()) -> None:
        """extra: more options for redis-server."""
        self.password = password
        self.persist = persist
        self.tls = tls
        self.extra = list(extra)
        self.folder = tempfile.mkdtemp(prefix="chat-redis-")
        self.log_path = os.path.join(self.folder, "redis.log")
        self.port = 0
        self.proc = None        # type: Optional[subprocess.Popen]
        self._clients = []      # type: List[resp.Redis]

    @property
    def url(self) -> str:
        return "%s://127.0.0.1:%d/0" % ("rediss" if self.tls else "redis", self.port)

    def command(self) -> List[str]:
        args = [REDIS_SERVER, "--save", "", "--bind", "127.0.0.1", "--dir", self.folder]
        if self.tls:
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", CERT,
                     "--tls-key-file", KEY, "--tls-ca-cert-file", CERT, "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        if self.persist:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        if self.password is not None:
            args += ["--requirepass", self.password]
        return args + self.extra

    def start(self) -> "RedisServer":
        """Start on a free port (the same one again after a stop) and wait
        until it answers PING."""
        fixed = bool(self.port)
        for _ in range(1 if fixed else self.start_attempts):
            if not fixed:
                self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT)
            if self._wait_ready():
                return self
        raise AssertionError("redis-server did not start on port %d; its log:\n%s"
                             % (self.port, self.log_text()[-3000:]))

    def _wait_ready(self, timeout: float = TIMEOUT) -> bool:
        """True once it answers PING, False if it exited (a port taken)."""
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            client = self._make_client(timeout=1.0)
            try:
                client.connect()
                return True
            except (resp.RedisConnectionError, resp.RedisError):   # not listening, LOADING
                pass
            finally:
                client.close()
            if self.proc.poll() is not None:
                return False
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError("redis-server on port %d not ready after %.1f s; log:\n%s"
                                     % (self.port, timeout, self.log_text()[-3000:]))
            time.sleep(delay)   # polling interval, not synchronisation
            delay = min(delay * 2, 0.02)

    def _make_client(self, timeout: Optional[float] = 2.0) -> resp.Redis:
        context = None
        if self.tls:
            context = ssl.create_default_context(cafile=CERT)
        return resp.Redis(resp.parse_url(self.url), password=self.password, timeout=timeout,
                          ssl_context=context)

    def client(self, timeout: Optional[float] = 2.0) -> resp.Redis:
        """A connected client, closed with the server bed at the end."""
        client = self._make_client(timeout)
        client.connect()
        self._clients.append(client)
        return client

    def log_text(self) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                return handle.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM, which Redis takes as SHUTDOWN (saving nothing: no save
        points), and wait for it to exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError("redis-server still running %.1f s after SIGTERM" % TIMEOUT)

    def kill(self) -> None:
        """SIGKILL, and wait: a crash, with no chance to write anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> "RedisServer":
        """Stop, then start again on the same port with the same folder."""
        self.stop()
        return self.start()

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "RedisServer":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info) -> None:
        self.close()
