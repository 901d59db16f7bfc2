"""TLS done in memory, and the room password: what both sides share.

TlsCodec is a sans-I/O wrapper of ssl.MemoryBIO (bytes in, bytes out); the
two functions below it drive it over a blocking socket for the handshake,
before a connection joins the room.
"""

import ssl
import threading
import time
from typing import Any, Dict, Optional, Tuple

PASSWORD_ENV = "BROADCAST_PASSWORD"


class TlsCodec:
    """TLS over memory buffers: bytes in, bytes out.

    The socket stays a plain socket, so the server writes it without
    blocking, and two threads can share one connection: the lock keeps the
    reader's decrypt and the writer's encrypt apart.
    """

    def __init__(self, context: ssl.SSLContext, server_side: bool,
                 server_hostname: Optional[str] = None) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_side=server_side,
                                    server_hostname=server_hostname)
        self.lock = threading.Lock()

    def handshake(self, data: bytes) -> Tuple[bool, bytes]:
        """Feed what arrived; return (finished, bytes to send). Raises ssl.SSLError."""
        with self.lock:
            if data:
                self.incoming.write(data)
            try:
                self.obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            return done, self.outgoing.read()

    def decrypt(self, data: bytes) -> Tuple[bytes, bool, bool]:
        """Feed what arrived: (plain text, has bytes to send back, peer closed).

        Bytes to send back (a TLS reply) wait for the next encrypt().
        """
        with self.lock:
            self.incoming.write(data)
            parts = []
            closed = False
            while True:
                try:
                    chunk = self.obj.read(65536)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:
                    closed = True
                    break
                if not chunk:
                    closed = True
                    break
                parts.append(chunk)
            return b"".join(parts), self.outgoing.pending > 0, closed

    def encrypt(self, data: bytes) -> bytes:
        """Plain text to TLS records, with anything else waiting to go out."""
        with self.lock:
            if data:
                self.obj.write(data)
            return self.outgoing.read()


def recv_before(sock: Any, size: int, deadline: Optional[float], what: str) -> bytes:
    """sock.recv(size), over by deadline (a time.monotonic() value, or None
    for the socket's own timeout); TimeoutError "what took too long" if not."""
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("%s took too long" % what)
        sock.settimeout(left)
    return sock.recv(size)


def tls_handshake(sock: Any, codec: TlsCodec, deadline: Optional[float] = None) -> bytes:
    """Run the handshake over a blocking socket, done by deadline (a
    time.monotonic() value) if one is given: a peer that sends a byte now
    and then cannot hold it open for longer.

    Returns the plain text that arrived with the handshake's last message:
    it is already off the socket, so waiting on the socket would not find it.
    """
    done, out = codec.handshake(b"")
    while True:
        if out:
            sock.sendall(out)
        if done:
            break
        data = recv_before(sock, 16384, deadline, "the TLS handshake")
        if not data:
            raise ConnectionError("connection closed during the TLS handshake")
        done, out = codec.handshake(data)
    arrived, reply, _ = codec.decrypt(b"")
    if reply:
        sock.sendall(codec.encrypt(b""))
    return arrived


def describe_tls_error(exc: Exception) -> str:
    """A TLS failure in words a person can act on."""
    text = str(getattr(exc, "reason", None) or exc)
    if "WRONG_VERSION_NUMBER" in text or "UNKNOWN_PROTOCOL" in text or "record layer" in text:
        return "the other side does not speak TLS"
    if "CERTIFICATE_VERIFY_FAILED" in text or isinstance(exc, getattr(ssl, "CertificateError", ())):
        return "the certificate was not accepted (%s)" % (
            getattr(exc, "verify_message", None) or text)
    return text


def modern(context: ssl.SSLContext) -> ssl.SSLContext:
    """TLS 1.2 or newer only."""
    if hasattr(ssl, "TLSVersion"):
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    else:   # Python 3.6
        context.options |= ssl.OP_NO_TLSv1 | ssl.OP_NO_TLSv1_1
    return context


def read_password(path: Optional[str], environ: Dict[str, str],
                  variable: str = PASSWORD_ENV) -> Optional[bytes]:
    """The room password (or another: variable) from a file (first line)
    or the environment.

    Raises ValueError with a message for a file that cannot be used.
    """
    if path:
        try:
            with open(path, "rb") as handle:
                secret = handle.read().split(b"\n", 1)[0].rstrip(b"\r")
        except OSError as exc:
            raise ValueError("cannot read the password file %s: %s" % (path, exc.strerror or exc))
        if not secret:
            raise ValueError("the password file %s is empty" % path)
        return secret
    secret_text = environ.get(variable)
    return secret_text.encode("utf-8") if secret_text else None
