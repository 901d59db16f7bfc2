"""The WebSocket opening handshake (RFC 6455 section 4), without I/O: HTTP
request heads parsed with limits, HTTP responses, the Origin check and
Sec-WebSocket-Accept.

    head = ...bytes up to and including the blank line...   (find_head_end)
    request = parse_request_head(head)        # route on request.path
    response = handshake_response(request)
    send(response.to_bytes())                 # 101: then websocket.Connection
"""

import base64
import hashlib
import http
import re
import urllib.parse
from typing import Iterable, List, Optional, Tuple

# RFC 6455 1.3: appended to the client's key before hashing.
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
VERSION = "13"

# node.js refuses request heads over 16 KiB and Apache more than 100 header
# fields; a browser's WebSocket handshake, cookies included, fits in both.
MAX_HEAD_SIZE = 16 * 1024
MAX_HEADERS = 100


# --------------------------------------------------------------------------
# HTTP request head

class RequestError(Exception):
    """A request head that cannot be served; status is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> "Response":
        return error_response(self.status, self.message)


class RequestHead:
    """An HTTP request line and its header fields.

    Header names are case-insensitive; a field sent more than once reads as
    its values joined by ", " (RFC 7230 3.2.2).
    """

    __slots__ = ("method", "target", "version", "headers", "_fields")

    def __init__(self, method: str, target: str, version: str,
                 headers: List[Tuple[str, str]]) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self._fields = {}  # type: Dict[str, List[str]]
        for name, value in headers:
            self._fields.setdefault(name.lower(), []).append(value)

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.partition("?")[0]

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        values = self._fields.get(name.lower())
        if values is None:
            return default
        return ", ".join(values)

    def get_all(self, name: str) -> List[str]:
        return list(self._fields.get(name.lower(), ()))

    def __repr__(self) -> str:
        return "RequestHead(%r, %r, %r, %r)" % (
            self.method, self.target, self.version, self.headers)


_HEAD_END = re.compile(b"\n\r?\n")
_LINE_END = re.compile(r"\r?\n")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_TARGET = re.compile(r"[\x21-\x7e]+\Z")
_HTTP_VERSION = re.compile(r"HTTP/(\d)\.(\d)\Z")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*\Z")


def find_head_end(buffer: bytes, max_size: int = MAX_HEAD_SIZE) -> int:
    """The length of the request head at the start of buffer, blank line
    included, or 0 while the blank line has not arrived.

    Lines end with CRLF or, as RFC 7230 3.5 allows a recipient to accept,
    a bare LF. Raises RequestError (431) once max_size bytes hold no end.
    """
    match = _HEAD_END.search(buffer, 0, max_size)
    if match is not None:
        return match.end()
    if len(buffer) >= max_size:
        raise RequestError(431, "request head too large")
    return 0


def parse_request_head(head: bytes, max_size: int = MAX_HEAD_SIZE,
                       max_headers: int = MAX_HEADERS) -> RequestHead:
    """Parse a request head (request line, header fields, blank line).

    Raises RequestError: 400 for a malformed head, 431 for one over the
    limits, 505 for an HTTP version other than 1.x.
    """
    if len(head) > max_size:
        raise RequestError(431, "request head too large")
    # Latin-1 maps every byte to one character, so obs-text survives.
    lines = _LINE_END.split(head.decode("latin-1"))
    if "" in lines:
        del lines[lines.index(""):]
    if not lines:
        raise RequestError(400, "empty request")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise RequestError(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.match(method) or not _TARGET.match(target):
        raise RequestError(400, "malformed request line")
    version_match = _HTTP_VERSION.match(version)
    if version_match is None:
        raise RequestError(400, "malformed request line")
    if version_match.group(1) != "1":
        raise RequestError(505, "only HTTP/1.x is served")
    fields = lines[1:]
    if len(fields) > max_headers:
        raise RequestError(431, "too many header fields")
    headers = []  # type: List[Tuple[str, str]]
    for line in fields:
        name, colon, value = line.partition(":")
        # RFC 7230 3.2.4: no whitespace before the colon, no line folding.
        if not colon or not _TOKEN.match(name):
            raise RequestError(400, "malformed header field")
        value = value.strip(" \t")
        if not _FIELD_VALUE.match(value):
            raise RequestError(400, "malformed header field")
        headers.append((name, value))
    return RequestHead(method, target, version, headers)


class Response:
    """An HTTP response, written out by to_bytes().

    Content-Length is added for every status that carries a body.
    """

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: Iterable[Tuple[str, str]] = (),
                 body: bytes = b"") -> None:
        self.status = status
        self.headers = list(headers)
        self.body = body

    @property
    def reason(self) -> str:
        try:
            return http.HTTPStatus(self.status).phrase
        except ValueError:
            return "Unknown"

    def to_bytes(self) -> bytes:
        lines = ["HTTP/1.1 %d %s" % (self.status, self.reason)]
        lines.extend("%s: %s" % field for field in self.headers)
        if self.status >= 200 and self.status not in (204, 304):
            lines.append("Content-Length: %d" % len(self.body))
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body

    def __repr__(self) -> str:
        return "Response(%r, %r, %r)" % (self.status, self.headers, self.body)


def error_response(status: int, message: str = "",
                   headers: Iterable[Tuple[str, str]] = ()) -> Response:
    """A short plain-text error after which the server closes the connection."""
    if not message:
        message = Response(status).reason
    fields = [("Content-Type", "text/plain; charset=utf-8"), ("Connection", "close")]
    fields.extend(headers)
    return Response(status, fields, (message + "\n").encode("utf-8"))


# --------------------------------------------------------------------------
# Opening handshake

def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 4.2.2)."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def _header_tokens(value: Optional[str]) -> List[str]:
    if value is None:
        return []
    return [token.strip().lower() for token in value.split(",")]


_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def _origin_key(origin: str) -> Optional[Tuple[str, str, Optional[int]]]:
    """(scheme, host, port) of an Origin, the port filled in from the scheme."""
    try:
        parts = urllib.parse.urlsplit(origin.strip())
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:
        return None
    if not scheme or not host or parts.path not in ("", "/") or parts.query:
        return None
    if port is None:
        port = _DEFAULT_PORTS.get(scheme)
    return scheme, host, port


def _host_key(host: str) -> Optional[Tuple[str, Optional[int]]]:
    try:
        parts = urllib.parse.urlsplit("//" + host.strip())
        name, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not name or parts.path or parts.query:
        return None
    return name, port


def origin_allowed(origin: Optional[str], host: Optional[str],
                   allowed_origins: Iterable[str] = ()) -> bool:
    """Whether a handshake's Origin may open a WebSocket here.

    Browsers always send Origin, so its absence means a client that is not
    a page and cannot be steered by one. Otherwise the Origin's host and
    port must be the Host the request names (a missing port on either side
    is the Origin scheme's default), or the Origin must be in
    allowed_origins (scheme, host and port compared; "null", sent by
    sandboxed and file: pages, matches only itself).
    """
    if origin is None:
        return True
    key = _origin_key(origin)
    for allowed in allowed_origins:
        if allowed.strip().lower() == origin.strip().lower():
            return True
        if key is not None and _origin_key(allowed) == key:
            return True
    if key is None or host is None:
        return False
    host_key = _host_key(host)
    if host_key is None:
        return False
    scheme, origin_host, origin_port = key
    name, port = host_key
    if port is None:
        port = _DEFAULT_PORTS.get(scheme)
    return (name, port) == (origin_host, origin_port)


def handshake_response(request: RequestHead,
                       allowed_origins: Iterable[str] = ()) -> Response:
    """The answer to an upgrade request: 101 to switch to WebSocket, else
    400 (not a valid upgrade), 426 (another WebSocket version) or 403
    (an Origin refused by origin_allowed)."""
    if request.method != "GET" or request.version != "HTTP/1.1":
        return error_response(400, "a WebSocket upgrade is a GET over HTTP/1.1")
    if "websocket" not in _header_tokens(request.get("Upgrade")):
        return error_response(400, "missing Upgrade: websocket")
    if "upgrade" not in _header_tokens(request.get("Connection")):
        return error_response(400, "missing Connection: Upgrade")
    hosts = request.get_all("Host")
    if len(hosts) != 1:
        return error_response(400, "a request needs exactly one Host")
    if request.get("Sec-WebSocket-Version") != VERSION:
        return error_response(426, "WebSocket version 13 only", [
            ("Upgrade", "websocket"), ("Sec-WebSocket-Version", VERSION)])
    keys = request.get_all("Sec-WebSocket-Key")
    if len(keys) != 1 or not _valid_key(keys[0]):
        return error_response(400, "invalid Sec-WebSocket-Key")
    origins = request.get_all("Origin")
    if len(origins) > 1:
        return error_response(400, "more than one Origin")
    if not origin_allowed(origins[0] if origins else None, hosts[0], allowed_origins):
        return error_response(403, "origin not allowed")
    return Response(101, [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(keys[0])),
    ])


def _valid_key(key: str) -> bool:
    """RFC 6455 4.1: the key is 16 random bytes in base64."""
    try:
        return len(base64.b64decode(key.encode("ascii"), validate=True)) == 16
    except (ValueError, UnicodeEncodeError):
        return False


def handshake(head: bytes, allowed_origins: Iterable[str] = ()) -> Response:
    """handshake_response() for a raw request head; a head that does not
    parse gets its error response."""
    try:
        request = parse_request_head(head)
    except RequestError as error:
        return error.response()
    return handshake_response(request, allowed_origins)
