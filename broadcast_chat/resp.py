"""A small Redis client (RESP2): the protocol apart from the socket.

encode(), Parser and parse_url() are pure and tested directly; Redis only
moves their bytes over one socket. Standard library only.
"""

import collections
import functools
import hashlib
import re
import socket
import ssl
import urllib.parse
from typing import Any, List, Optional, Sequence, Tuple

from broadcast_chat.tls import describe_tls_error


class RedisConnectionError(OSError):
    """Cannot connect, connection lost, or no reply in time: the message
    says which, and the address."""


class ProtocolError(RedisConnectionError):
    """The other side sent something that is not RESP2."""


class RedisError(Exception):
    """An error reply; .code is its first word ("ERR", "NOSCRIPT", "WRONGPASS")."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code = message.split(" ", 1)[0]


RedisAddress = collections.namedtuple("RedisAddress", "host port db tls password username")

_INCOMPLETE = object()
_DIGITS = re.compile(r"[0-9]+\Z")     # str.isdigit() takes "²", which int() refuses


def encode(*args: Any) -> bytes:
    """One command as a RESP array of bulk strings: bytes as they are, str
    as UTF-8, int and float as their str(). A bool is refused: it would go
    as "True", which no Redis command means."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, (bytes, bytearray)):
            data = bytes(arg)
        elif isinstance(arg, str):
            data = arg.encode("utf-8")
        elif isinstance(arg, (int, float)) and not isinstance(arg, bool):
            data = str(arg).encode("ascii")
        else:
            raise TypeError("cannot send %r to Redis: bytes, str, int or float only" % (arg,))
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class Parser:
    """RESP2 replies from bytes that arrive in pieces of any size.

    feed() returns the replies that the new bytes completed, in order.
    Arrays are built on a stack of open arrays instead of being parsed
    again from their start when more bytes come, so a reply of N elements
    costs O(N) however it is split. After a ProtocolError the parser is
    lost in the stream: drop it with its connection.
    """

    max_line = 1 << 20     # a simple string, error or header without its CRLF

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pos = 0           # bytes before this are parsed
        self._open = []         # type: List[list]   # [elements, still expected]

    def feed(self, data: bytes) -> List[Any]:
        self._buffer += data
        done = []               # type: List[Any]
        while True:
            value = self._element()
            if value is _INCOMPLETE:
                break
            while self._open:   # a complete value fills the innermost open array
                frame = self._open[-1]
                frame[0].append(value)
                frame[1] -= 1
                if frame[1]:
                    break
                value = self._open.pop()[0]
            else:
                done.append(value)
        # Only what is left of one element moves: parsed bytes are dropped
        # once a feed, never an element at a time.
        if self._pos:
            del self._buffer[:self._pos]
            self._pos = 0
        return done

    def _element(self) -> Any:
        """The next scalar, an empty or null array, or _INCOMPLETE; a
        non-empty array header opens an array and returns the next element."""
        while True:
            buffer, start = self._buffer, self._pos
            end = buffer.find(b"\r\n", start)
            if end < 0:
                if len(buffer) - start > self.max_line:
                    raise ProtocolError("a reply line longer than %d bytes" % self.max_line)
                return _INCOMPLETE
            kind, line, after = buffer[start:start + 1], bytes(buffer[start + 1:end]), end + 2
            if kind in (b"$", b"*"):
                size = _number(line)
                if size < -1:
                    raise ProtocolError("a negative length %d" % size)
                if kind == b"$" and size >= 0:
                    if len(buffer) < after + size + 2:
                        return _INCOMPLETE
                    if buffer[after + size:after + size + 2] != b"\r\n":
                        raise ProtocolError("a bulk string longer than its length %d" % size)
                    self._pos = after + size + 2
                    return bytes(buffer[after:after + size])
            self._pos = after
            if kind == b"+":
                return line.decode("utf-8", "replace")
            if kind == b"-":
                return RedisError(line.decode("utf-8", "replace"))
            if kind == b":":
                return _number(line)
            if kind not in (b"$", b"*"):
                raise ProtocolError("unexpected reply %r" % bytes(buffer[start:after][:40]))
            if size <= 0:
                return [] if size == 0 else None    # $-1 comes here too
            self._open.append([[], size])


def _number(line: bytes) -> int:
    if not (line[1:] if line[:1] == b"-" else line).isdigit():
        raise ProtocolError("not a number: %r" % line[:40])
    return int(line)


def parse_url(url: str) -> RedisAddress:
    """redis://[USER:PASSWORD@]HOST[:PORT][/DB], or rediss:// for TLS.

    Raises ValueError with a one-line message naming what is wrong, for
    the caller to show with its option's name ("--redis: " + message);
    it never repeats the URL, which may hold a password.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("not a URL like redis://HOST:PORT/DB")
    if scheme.lower() not in ("redis", "rediss"):
        raise ValueError("the scheme must be redis:// or rediss://, not %s://" % scheme)
    netloc, _, path = rest.partition("/")
    userinfo, _, hostport = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = urllib.parse.unquote(user) or None
        password = urllib.parse.unquote(secret) if colon else None
        if not password:
            raise ValueError("a user name needs a password: redis://USER:PASSWORD@HOST")
    if hostport.startswith("["):
        host, bracket, after = hostport[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ValueError("an IPv6 address goes in brackets: redis://[::1]:6379")
        port_text = after[1:] if after else None
    else:
        host, colon, port_text = hostport.partition(":")
        if ":" in port_text:
            raise ValueError("an IPv6 address goes in brackets: redis://[::1]:6379")
        port_text = port_text if colon else None
    if not host:
        raise ValueError("no host in the URL")
    port = 6379
    if port_text is not None:
        if not _DIGITS.match(port_text) or not 0 < int(port_text) < 65536:
            raise ValueError("the port must be a number from 1 to 65535, not %r" % port_text)
        port = int(port_text)
    db_text = path.rstrip("/")
    if db_text and not _DIGITS.match(db_text):
        raise ValueError("the database must be a number, not %r" % db_text)
    return RedisAddress(host, port, int(db_text or 0), scheme.lower() == "rediss",
                        password, username)


def describe(address: RedisAddress) -> str:
    host = "[%s]" % address.host if ":" in address.host else address.host
    return "%s:%d" % (host, address.port)


@functools.lru_cache(maxsize=None)     # a few scripts, each hashed once
def script_sha(script: str) -> str:
    """The SHA1 that Redis knows a Lua script by (EVALSHA)."""
    return hashlib.sha1(script.encode("utf-8")).hexdigest()


class Redis:
    """One connection to Redis, used by one thread at a time (no locks).

    Any socket error, timeout or end of stream during a command closes the
    connection and raises RedisConnectionError; connect() may then be
    called again.
    """

    recv_bufsize = 65536

    def __init__(self, address: RedisAddress, password: Optional[str] = None,
                 timeout: Optional[float] = 2.0,
                 ssl_context: Optional[ssl.SSLContext] = None) -> None:
        """Does not connect. password overrides the URL's; timeout is for
        connecting and for each reply (None: wait forever)."""
        self.address = address
        self.password = password if password is not None else address.password
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.where = describe(address)
        self._sock = None       # type: Optional[socket.socket]
        self._parser = Parser()
        self._replies = []      # type: List[Any]

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        """Connect, then AUTH and SELECT as the address asks, or PING: so a
        server that is not Redis, or wants a password, fails here.

        Raises RedisConnectionError, or RedisError for a refused AUTH or
        SELECT (.code "WRONGPASS", "NOAUTH", "ERR"); either way it is closed.
        """
        self.close()
        try:
            sock = socket.create_connection((self.address.host, self.address.port), self.timeout)
        except socket.timeout:
            raise RedisConnectionError("cannot connect to Redis at %s: timed out" % self.where)
        except OSError as exc:
            raise RedisConnectionError("cannot connect to Redis at %s: %s"
                                       % (self.where, exc.strerror or exc))
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.address.tls:
                context = self.ssl_context or ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=self.address.host)
        except (OSError, ValueError) as exc:   # ValueError: CertificateError on 3.6
            sock.close()
            raise RedisConnectionError("TLS with Redis at %s failed: %s"
                                       % (self.where, describe_tls_error(exc)))
        self._sock, self._parser, self._replies = sock, Parser(), []
        commands = []           # type: List[Sequence[Any]]
        if self.password:
            user = self.address.username
            commands.append(("AUTH", user, self.password) if user else ("AUTH", self.password))
        if self.address.db:
            commands.append(("SELECT", self.address.db))
        for reply in self.pipeline(commands or [("PING",)]):
            if isinstance(reply, RedisError):
                self.close()
                raise reply

    def call(self, *args: Any) -> Any:
        """One command's reply; an error reply is raised as RedisError."""
        reply = self.pipeline([args])[0]
        if isinstance(reply, RedisError):
            raise reply
        return reply

    def pipeline(self, commands: Sequence[Sequence[Any]]) -> List[Any]:
        """Send every command at once, then read one reply for each; error
        replies are RedisError instances in the list, not raised."""
        payload = b"".join(encode(*command) for command in commands)
        if self._sock is None:
            raise RedisConnectionError("not connected to Redis at %s" % self.where)
        try:
            self._sock.sendall(payload)
            while len(self._replies) < len(commands):
                data = self._sock.recv(self.recv_bufsize)
                if not data:
                    raise RedisConnectionError("Redis at %s closed the connection" % self.where)
                self._replies.extend(self._parser.feed(data))
        except socket.timeout:
            self.close()
            raise RedisConnectionError("no reply from Redis at %s within %s s"
                                       % (self.where, self.timeout))
        except ProtocolError as exc:
            self.close()
            raise ProtocolError("Redis at %s: %s" % (self.where, exc))
        except RedisConnectionError:
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise RedisConnectionError("lost the connection to Redis at %s: %s"
                                       % (self.where, exc.strerror or exc))
        replies = self._replies[:len(commands)]
        del self._replies[:len(commands)]
        return replies

    def script(self, script: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run a Lua script by its SHA1; sent whole (EVAL) only when Redis
        does not have it (NOSCRIPT: the first time, or after a restart)."""
        try:
            return self.call("EVALSHA", script_sha(script), len(keys), *keys, *args)
        except RedisError as exc:
            if exc.code != "NOSCRIPT":
                raise
        return self.call("EVAL", script, len(keys), *keys, *args)

    def scripts(self, calls: Sequence[Tuple[str, Sequence[Any], Sequence[Any]]]) -> List[Any]:
        """Lua scripts (script, keys, args) in one pipeline by their SHA1,
        each Redis does not have sent whole after; the first error raised."""
        replies = self.pipeline([["EVALSHA", script_sha(script), len(keys)] + list(keys)
                                 + list(args) for script, keys, args in calls])
        for index, ((script, keys, args), reply) in enumerate(zip(calls, replies)):
            if isinstance(reply, RedisError) and reply.code == "NOSCRIPT":
                replies[index] = self.call("EVAL", script, len(keys), *keys, *args)
            elif isinstance(reply, RedisError):
                raise reply
        return replies

    def checked(self, commands: Sequence[Sequence[Any]]) -> List[Any]:
        """pipeline(), with the first error reply raised as RedisError."""
        replies = self.pipeline(commands)
        for reply in replies:
            if isinstance(reply, RedisError):
                raise reply
        return replies

    def settimeout(self, seconds: Optional[float]) -> None:
        """The wait for each reply from now on (None: forever, for XREAD BLOCK)."""
        self.timeout = seconds
        if self._sock is not None:
            self._sock.settimeout(seconds)

    def close(self) -> None:
        if self._sock is not None:
            sock, self._sock = self._sock, None
            try:
                sock.close()
            except OSError:
                pass
