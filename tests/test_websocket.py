"""broadcast_chat.websocket: the pure code directly, then ws_echo.py over a
real socket with a small hand-written client."""

import base64
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest
from typing import List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from broadcast_chat import handshake  # noqa: E402
from broadcast_chat import websocket as ws  # noqa: E402
from broadcast_chat.websocket import Binary, Close, Ping, Pong, State, Text  # noqa: E402

TIMEOUT = 10.0
MASK = b"\x37\xfa\x21\x3d"


def client_frame(opcode: int, payload: bytes = b"", fin: bool = True,
                 mask: Optional[bytes] = MASK, rsv: int = 0) -> bytes:
    """A frame as a client sends it, built here without the module's help."""
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    length = len(payload)
    mask_bit = 0x80 if mask is not None else 0
    if length < 126:
        header = bytes((first, mask_bit | length))
    elif length < 65536:
        header = bytes((first, mask_bit | 126)) + struct.pack("!H", length)
    else:
        header = bytes((first, mask_bit | 127)) + struct.pack("!Q", length)
    if mask is None:
        return header + payload
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return header + mask + masked


def server_frame(opcode: int, payload: bytes = b"") -> bytes:
    """A frame as the server must send it: final, unmasked."""
    return client_frame(opcode, payload, mask=None)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


REQUEST = (
    "GET /ws HTTP/1.1\r\n"
    "Host: chat.example:8080\r\n"
    "Upgrade: websocket\r\n"
    "Connection: keep-alive, Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n"
)


def request(*extra: str, base: str = REQUEST, drop: Tuple[str, ...] = ()) -> bytes:
    lines = [line for line in base.split("\r\n") if line and not line.startswith(drop)]
    return ("\r\n".join(lines + list(extra)) + "\r\n\r\n").encode("latin-1")


class HandshakeTest(unittest.TestCase):
    def test_accept_key_of_rfc_6455_example(self):
        # RFC 6455 1.3 works this example through.
        self.assertEqual(handshake.accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")

    def test_switching_protocols(self):
        response = handshake.handshake(request())
        self.assertEqual(response.status, 101)
        self.assertEqual(response.to_bytes(),
                         b"HTTP/1.1 101 Switching Protocols\r\n"
                         b"Upgrade: websocket\r\n"
                         b"Connection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")

    def test_header_names_and_tokens_are_case_insensitive(self):
        head = request("upgrade: WebSocket", "CONNECTION: upgrade",
                       drop=("Upgrade", "Connection"))
        self.assertEqual(handshake.handshake(head).status, 101)

    def test_other_version_is_426_naming_13(self):
        for version in ("8", "14", None):
            extra = ("Sec-WebSocket-Version: " + version,) if version else ()
            response = handshake.handshake(request(*extra, drop=("Sec-WebSocket-Version",)))
            self.assertEqual(response.status, 426, version)
            self.assertIn(("Sec-WebSocket-Version", "13"), response.headers)
            self.assertIn(b"\r\nSec-WebSocket-Version: 13\r\n", response.to_bytes())

    def test_malformed_upgrades_are_400(self):
        cases = {
            "no Upgrade": request(drop=("Upgrade",)),
            "Upgrade: h2c": request("Upgrade: h2c", drop=("Upgrade",)),
            "no Connection": request(drop=("Connection",)),
            "no key": request(drop=("Sec-WebSocket-Key",)),
            "short key": request("Sec-WebSocket-Key: " + base64.b64encode(b"x" * 15).decode(),
                                 drop=("Sec-WebSocket-Key",)),
            "key not base64": request("Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==",
                                      drop=("Sec-WebSocket-Key",)),
            "two keys": request("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="),
            "no Host": request(drop=("Host",)),
            "two Hosts": request("Host: other.example"),
            "POST": request(base=REQUEST.replace("GET", "POST")),
            "HTTP/1.0": request(base=REQUEST.replace("HTTP/1.1", "HTTP/1.0")),
            "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        }
        for name, head in cases.items():
            response = handshake.handshake(head)
            self.assertEqual(response.status, 400, name)
            data = response.to_bytes()
            self.assertTrue(data.startswith(b"HTTP/1.1 400 Bad Request\r\n"), name)
            self.assertIn(b"\r\nConnection: close\r\n", data)

    def test_refused_origin_is_403(self):
        response = handshake.handshake(request("Origin: https://evil.example"))
        self.assertEqual(response.status, 403)

    def test_origin_of_the_same_host_and_allowed_origins_pass(self):
        self.assertEqual(handshake.handshake(request("Origin: http://chat.example:8080")).status, 101)
        head = request("Origin: https://app.example")
        self.assertEqual(handshake.handshake(head, allowed_origins=["https://app.example"]).status, 101)

    def test_error_response_has_length_and_body(self):
        data = handshake.error_response(404, "no such page").to_bytes()
        self.assertEqual(data, b"HTTP/1.1 404 Not Found\r\n"
                               b"Content-Type: text/plain; charset=utf-8\r\n"
                               b"Connection: close\r\n"
                               b"Content-Length: 13\r\n\r\n"
                               b"no such page\n")


class OriginTest(unittest.TestCase):
    def test_absent_origin_is_a_client_that_is_no_page(self):
        self.assertTrue(handshake.origin_allowed(None, "chat.example"))
        self.assertTrue(handshake.origin_allowed(None, None))

    def test_same_host_and_port(self):
        self.assertTrue(handshake.origin_allowed("http://localhost:8080", "localhost:8080"))
        self.assertTrue(handshake.origin_allowed("http://LocalHost:8080", "localhost:8080"))
        self.assertTrue(handshake.origin_allowed("http://[::1]:8080", "[::1]:8080"))
        self.assertFalse(handshake.origin_allowed("http://localhost:8081", "localhost:8080"))
        self.assertFalse(handshake.origin_allowed("http://127.0.0.1:8080", "localhost:8080"))
        self.assertFalse(handshake.origin_allowed("http://evil.example", "chat.example"))

    def test_missing_port_is_the_schemes_default(self):
        self.assertTrue(handshake.origin_allowed("https://chat.example", "chat.example"))
        self.assertTrue(handshake.origin_allowed("https://chat.example", "chat.example:443"))
        self.assertTrue(handshake.origin_allowed("http://chat.example:80", "chat.example"))
        self.assertFalse(handshake.origin_allowed("http://chat.example:8080", "chat.example"))
        self.assertFalse(handshake.origin_allowed("https://chat.example", "chat.example:80"))

    def test_allow_list(self):
        allowed = ["https://app.example", "null"]
        self.assertTrue(handshake.origin_allowed("https://app.example", "chat.example", allowed))
        self.assertTrue(handshake.origin_allowed("https://APP.example:443", "chat.example", allowed))
        self.assertTrue(handshake.origin_allowed("null", "chat.example", allowed))
        self.assertFalse(handshake.origin_allowed("http://app.example", "chat.example", allowed))
        self.assertFalse(handshake.origin_allowed("https://app.example:8443", "chat.example", allowed))

    def test_null_and_malformed_origins_are_refused(self):
        for origin in ("null", "", "chat.example", "http://", "http://chat.example:99999",
                       "http://chat.example/page"):
            self.assertFalse(handshake.origin_allowed(origin, "chat.example"), origin)
        self.assertFalse(handshake.origin_allowed("http://chat.example", None))
        self.assertFalse(handshake.origin_allowed("http://chat.example", "chat.example:port"))


class RequestHeadTest(unittest.TestCase):
    def test_fields(self):
        head = handshake.parse_request_head(
            b"GET /ws?room=main HTTP/1.1\r\nHost: a\r\nX-Thing:  one \r\nx-thing: two\r\n\r\n")
        self.assertEqual((head.method, head.target, head.path, head.version),
                         ("GET", "/ws?room=main", "/ws", "HTTP/1.1"))
        self.assertEqual(head.get("X-THING"), "one, two")
        self.assertEqual(head.get_all("x-thing"), ["one", "two"])
        self.assertIsNone(head.get("Missing"))
        self.assertEqual(head.get("Missing", ""), "")

    def test_find_head_end(self):
        self.assertEqual(handshake.find_head_end(b""), 0)
        self.assertEqual(handshake.find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), 0)
        self.assertEqual(handshake.find_head_end(b"GET / HTTP/1.1\r\n\r\nrest"), 18)
        self.assertEqual(handshake.find_head_end(b"GET / HTTP/1.1\n\nrest"), 16)

    def test_bare_line_feeds(self):
        head = handshake.parse_request_head(b"GET / HTTP/1.1\nHost: a\n\n")
        self.assertEqual(head.get("host"), "a")

    def test_size_limits(self):
        with self.assertRaises(handshake.RequestError) as caught:
            handshake.find_head_end(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 3000)
        self.assertEqual(caught.exception.status, 431)
        self.assertEqual(handshake.find_head_end(b"GET / HTTP/1.1\r\n\r\n", max_size=18), 18)
        with self.assertRaises(handshake.RequestError):
            handshake.find_head_end(b"GET / HTTP/1.1\r\n\r\n", max_size=17)
        with self.assertRaises(handshake.RequestError) as caught:
            handshake.parse_request_head(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n")
        self.assertEqual(caught.exception.status, 431)
        handshake.parse_request_head(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 100 + b"\r\n")
        self.assertEqual(handshake.handshake(request(*["X: y"] * 100)).status, 431)

    def test_malformed(self):
        for head in (b"\r\n\r\n", b"GET /\r\n\r\n", b"GET  / HTTP/1.1\r\n\r\n",
                     b"GET / HTTP/1.1 x\r\n\r\n", b"G(T / HTTP/1.1\r\n\r\n",
                     b"GET / FTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
                     b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
                     b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
                     b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n"):
            with self.assertRaises(handshake.RequestError, msg=head) as caught:
                handshake.parse_request_head(head)
            self.assertEqual(caught.exception.status, 400, head)

    def test_http_2_is_505(self):
        with self.assertRaises(handshake.RequestError) as caught:
            handshake.parse_request_head(b"GET / HTTP/2.0\r\n\r\n")
        self.assertEqual(caught.exception.status, 505)


class FrameEncodingTest(unittest.TestCase):
    def test_header_lengths(self):
        self.assertEqual(ws.frame_header(ws.Opcode.TEXT, 0), b"\x81\x00")
        self.assertEqual(ws.frame_header(ws.Opcode.TEXT, 125), b"\x81\x7d")
        self.assertEqual(ws.frame_header(ws.Opcode.TEXT, 126), b"\x81\x7e\x00\x7e")
        self.assertEqual(ws.frame_header(ws.Opcode.BINARY, 65535), b"\x82\x7e\xff\xff")
        self.assertEqual(ws.frame_header(ws.Opcode.BINARY, 65536),
                         b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00")
        self.assertEqual(ws.frame_header(ws.Opcode.TEXT, 5, fin=False), b"\x01\x05")
        self.assertEqual(ws.frame_header(ws.Opcode.CONTINUATION, 5), b"\x80\x05")

    def test_header_refuses_impossible_frames(self):
        for opcode, length, fin in ((ws.Opcode.PING, 126, True), (ws.Opcode.CLOSE, 0, False),
                                    (ws.Opcode.TEXT, -1, True), (ws.Opcode.TEXT, 1 << 63, True)):
            with self.assertRaises(ValueError):
                ws.frame_header(opcode, length, fin)

    def test_encoders(self):
        self.assertEqual(ws.encode_text("héllo"), server_frame(1, "héllo".encode()))
        self.assertEqual(ws.encode_binary(b"\x00" * 70000), server_frame(2, b"\x00" * 70000))
        self.assertEqual(ws.encode_ping(b"p"), b"\x89\x01p")
        self.assertEqual(ws.encode_pong(b"p"), b"\x8a\x01p")
        self.assertEqual(ws.encode_close(1001, "bye"), b"\x88\x05\x03\xe9bye")
        self.assertEqual(ws.encode_close(None), b"\x88\x00")
        for code in (1005, 1006, 999, 5000):
            with self.assertRaises(ValueError):
                ws.encode_close(code)
        with self.assertRaises(ValueError):
            ws.encode_close(1000, "x" * 124)

    def test_mask_both_ways_at_every_size(self):
        # Small and large payloads take different paths.
        for size in (0, 1, 3, 4, 5, 100, 16 * 1024 - 1, 16 * 1024, 16 * 1024 + 3, 65536):
            data = os.urandom(size)
            expected = bytes(byte ^ MASK[index % 4] for index, byte in enumerate(data))
            self.assertEqual(ws.apply_mask(data, MASK), expected, size)
            self.assertEqual(ws.apply_mask(expected, MASK), data, size)


class Utf8Test(unittest.TestCase):
    @staticmethod
    def completable(prefix: bytes) -> bool:
        """Whether some bytes complete prefix to valid UTF-8, by the
        standard decoder on whole input (only a sequence's second byte has
        a range that depends on its lead byte)."""
        for second in (0x80, 0x90, 0xA0):
            candidate = (prefix + bytes((second,)))[:max(len(prefix), 2)]
            lead = prefix[0]
            need = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
            try:
                (candidate + b"\x80" * (need - len(candidate))).decode("utf-8")
                return True
            except UnicodeDecodeError:
                pass
        return False

    def fails_at_once(self, prefix: bytes) -> bool:
        try:
            ws.Utf8Decoder().decode(b"ok" + prefix)
            return False
        except UnicodeDecodeError:
            return True

    def test_every_one_and_two_byte_prefix_fails_as_soon_as_it_is_invalid(self):
        for first in range(0x80, 0x100):
            prefix = bytes((first,))
            self.assertEqual(self.fails_at_once(prefix), not self.completable(prefix), prefix)
            for second in range(0x100):
                prefix = bytes((first, second))
                if second < 0x80 or second >= 0xC0:
                    expected = True   # a lead byte never takes these
                elif first < 0xE0:
                    continue          # a whole 2-byte sequence, not a prefix
                else:
                    expected = not self.completable(prefix)
                self.assertEqual(self.fails_at_once(prefix), expected, prefix)

    def test_three_byte_prefixes_of_four_byte_sequences(self):
        for first in range(0xF0, 0xF5):
            for second in range(0x80, 0xC0):
                for third in (0x00, 0x7F, 0x80, 0xBF, 0xC0, 0xFF):
                    prefix = bytes((first, second, third))
                    expected = not (self.completable(prefix[:2]) and 0x80 <= third <= 0xBF)
                    self.assertEqual(self.fails_at_once(prefix), expected, prefix)

    def test_named_cases(self):
        for invalid in (b"\xed\xa0", b"\xed\xbf\xbf", b"\xf4\x90", b"\xf5", b"\xc0\xaf",
                        b"\xe0\x80", b"\xe0\x9f", b"\xf0\x8f", b"\xf8", b"\xff", b"\x80"):
            self.assertTrue(self.fails_at_once(invalid), invalid)
        for valid_start in (b"\xed\x9f", b"\xf4\x8f\xbf", b"\xe0\xa0", b"\xf0\x90"):
            self.assertFalse(self.fails_at_once(valid_start), valid_start)

    def test_final_fails_inside_a_sequence(self):
        decoder = ws.Utf8Decoder()
        self.assertEqual(decoder.decode("κό".encode()[:3]), "κ")
        with self.assertRaises(UnicodeDecodeError):
            decoder.decode(b"", final=True)


class ConnectionTest(unittest.TestCase):
    def setUp(self):
        self.connection = ws.Connection(max_message_size=1000)

    def receive(self, *frames: bytes) -> List[ws.Event]:
        return self.connection.receive_data(b"".join(frames))

    def assertFailed(self, code: int, events: List[ws.Event] = None) -> None:
        self.assertEqual(events or [], [])
        self.assertIs(self.connection.state, State.CLOSED)
        self.assertEqual(self.connection.close_sent.code, code)
        sent = self.connection.data_to_send()
        self.assertEqual(sent[:4], b"\x88" + bytes((len(sent) - 2,)) + struct.pack("!H", code))
        self.assertEqual(self.receive(client_frame(1, b"late")), [])
        self.assertEqual(self.connection.data_to_send(), b"")

    def test_messages(self):
        events = self.receive(client_frame(1, "héllo".encode()), client_frame(2, b"\x00\xff"),
                              client_frame(1, b""))
        self.assertEqual(events, [Text("héllo"), Binary(b"\x00\xff"), Text("")])
        self.assertEqual(self.connection.data_to_send(), b"")

    def test_extended_lengths(self):
        connection = ws.Connection(max_message_size=None)
        for size in (125, 126, 65535, 65536, 200000):
            payload = os.urandom(size)
            self.assertEqual(connection.receive_data(client_frame(2, payload)), [Binary(payload)])

    def test_any_split_gives_the_same_events(self):
        data = (client_frame(1, "fragment one, ".encode(), fin=False)
                + client_frame(9, b"ping!")
                + client_frame(0, "fragment two ✓".encode())
                + client_frame(2, bytes(range(200)))
                + client_frame(8, close_payload(1000, b"done")))
        expected = [Ping(b"ping!"), Text("fragment one, fragment two ✓"),
                    Binary(bytes(range(200))), Close(1000, "done")]
        for size in (1, 2, 3, 7, 64):
            connection = ws.Connection()
            events = []  # type: List[ws.Event]
            for start in range(0, len(data), size):
                events.extend(connection.receive_data(data[start:start + size]))
            self.assertEqual(events, expected, size)
            self.assertEqual(connection.data_to_send(),
                             server_frame(10, b"ping!") + server_frame(8, close_payload(1000)))

    def test_ping_inside_a_fragmented_message(self):
        self.assertEqual(self.receive(client_frame(1, b"frag", fin=False)), [])
        self.assertEqual(self.receive(client_frame(9, b"are you there")), [Ping(b"are you there")])
        self.assertEqual(self.connection.data_to_send(), server_frame(10, b"are you there"))
        self.assertEqual(self.receive(client_frame(0, b"ment", fin=False)), [])
        self.assertEqual(self.receive(client_frame(10, b"unasked")), [Pong(b"unasked")])
        self.assertEqual(self.receive(client_frame(0, b"ed")), [Text("fragmented")])
        self.assertEqual(self.connection.data_to_send(), b"")

    def test_unmasked_frame_is_1002(self):
        self.assertFailed(1002, self.receive(client_frame(1, b"hi", mask=None)))

    def test_reserved_bits_are_1002(self):
        for rsv in (1, 2, 4, 7):
            self.setUp()
            self.assertFailed(1002, self.receive(client_frame(1, b"hi", rsv=rsv)))

    def test_unknown_opcodes_are_1002(self):
        for opcode in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15):
            self.setUp()
            self.assertFailed(1002, self.receive(client_frame(opcode, b"hi")))

    def test_bad_control_frames_are_1002(self):
        self.assertFailed(1002, self.receive(client_frame(9, b"x" * 126)))
        self.setUp()
        self.assertFailed(1002, self.receive(client_frame(9, b"x", fin=False)))
        self.setUp()
        self.assertEqual(self.receive(client_frame(9, b"x" * 125)), [Ping(b"x" * 125)])

    def test_fails_from_the_first_two_bytes(self):
        self.assertFailed(1002, self.receive(client_frame(1, b"x" * 100, mask=None)[:2]))

    def test_fragmentation_errors_are_1002(self):
        self.assertFailed(1002, self.receive(client_frame(0, b"orphan")))
        self.setUp()
        self.assertFailed(1002, self.receive(client_frame(1, b"a", fin=False), client_frame(1, b"b")))
        self.setUp()
        self.assertFailed(1002, self.receive(client_frame(2, b"a", fin=False), client_frame(2, b"b")))

    def test_length_with_its_top_bit_set_is_1002(self):
        frame = bytes((0x82, 0xFF)) + b"\x80" + b"\x00" * 7 + MASK
        connection = ws.Connection(max_message_size=None)
        self.connection = connection
        self.assertFailed(1002, self.receive(frame))

    def test_events_before_an_error_are_answered_before_the_close(self):
        events = self.receive(client_frame(1, b"first"), client_frame(1, b"bad", rsv=2),
                              client_frame(9))
        self.assertEqual(events, [Text("first")])
        self.connection.send_text("first")
        self.assertEqual(self.connection.data_to_send()[:7], server_frame(1, b"first"))

    def test_invalid_utf8_fails_as_soon_as_it_arrives(self):
        # Autobahn 6.4.1-6.4.4: the invalid byte arrives in a fragment, or a
        # part of one frame, before the end of the message.
        valid = "κόσμε".encode()
        for invalid in (b"\xf4\x90\x80\x80", b"\xf4\x90", b"\xed\xa0\x80", b"\xed\xa0",
                        b"\xc0\xaf", b"\xe0\x80\xaf"):
            self.setUp()
            self.assertEqual(self.receive(client_frame(1, valid, fin=False)), [])
            self.assertFailed(1007, self.receive(client_frame(0, invalid, fin=False)))
            self.setUp()
            frame = client_frame(1, valid + invalid + b"edited")
            end = 2 + 4 + len(valid) + len(invalid)
            self.assertEqual(self.receive(frame[:2 + 4 + len(valid)]), [])
            self.assertFailed(1007, self.receive(frame[2 + 4 + len(valid):end]))

    def test_invalid_utf8_in_whole_message_and_at_its_end(self):
        self.assertFailed(1007, self.receive(client_frame(1, b"\xed\xa0\x80")))
        self.setUp()
        self.assertEqual(self.receive(client_frame(1, b"ab\xce", fin=False)), [])
        self.assertFailed(1007, self.receive(client_frame(0, b"")))

    def test_text_split_inside_a_character(self):
        data = "€uro".encode()
        events = self.receive(client_frame(1, data[:1], fin=False), client_frame(0, data[1:2], fin=False),
                              client_frame(0, data[2:]))
        self.assertEqual(events, [Text("€uro")])

    def test_message_size_limit_is_1009_from_the_header(self):
        header = client_frame(2, b"x" * 1001)[:2 + 2 + 4]
        self.assertFailed(1009, self.receive(header))
        self.setUp()
        self.assertEqual(self.receive(client_frame(2, b"x" * 1000)), [Binary(b"x" * 1000)])

    def test_message_size_limit_counts_fragments(self):
        self.assertEqual(self.receive(client_frame(1, b"x" * 600, fin=False)), [])
        self.assertEqual(self.receive(client_frame(9, b"p" * 100)), [Ping(b"p" * 100)])
        self.connection.data_to_send()
        self.assertFailed(1009, self.receive(client_frame(0, b"x" * 401)[:4]))
        self.setUp()
        self.receive(client_frame(1, b"x" * 600, fin=False))
        self.assertEqual(self.receive(client_frame(0, b"x" * 400)), [Text("x" * 1000)])
        self.assertEqual(self.receive(client_frame(1, b"x" * 1000)), [Text("x" * 1000)])

    def test_close_codes(self):
        valid = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
                 3000, 3999, 4000, 4999]
        invalid = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
        for code in valid:
            self.setUp()
            events = self.receive(client_frame(8, close_payload(code, b"why")))
            self.assertEqual(events, [Close(code, "why")])
            self.assertIs(self.connection.state, State.CLOSED)
            self.assertEqual(self.connection.data_to_send(), server_frame(8, close_payload(code)))
        for code in invalid:
            self.setUp()
            self.assertFailed(1002, self.receive(client_frame(8, close_payload(code))))

    def test_close_without_code_is_echoed_without_code(self):
        self.assertEqual(self.receive(client_frame(8)), [Close(1005, "")])
        self.assertEqual(self.connection.data_to_send(), server_frame(8))

    def test_close_payload_of_one_byte_is_1002(self):
        self.assertFailed(1002, self.receive(client_frame(8, b"\x03")))

    def test_close_reason_not_utf8_is_1007(self):
        self.assertFailed(1007, self.receive(client_frame(8, close_payload(1000, b"\xff"))))

    def test_nothing_after_close(self):
        events = self.receive(client_frame(1, b"before"), client_frame(8, close_payload(1000)),
                              client_frame(1, b"after"), client_frame(9))
        self.assertEqual(events, [Text("before"), Close(1000, "")])
        # The answer to "before" goes out ahead of the Close reply.
        self.connection.send_text("before")
        self.assertEqual(self.connection.data_to_send(),
                         server_frame(1, b"before") + server_frame(8, close_payload(1000)))
        with self.assertRaises(ws.InvalidState):
            self.connection.send_text("too late")
        self.assertEqual(self.receive(client_frame(1, b"later")), [])
        self.assertEqual(self.connection.data_to_send(), b"")

    def test_server_initiated_close(self):
        self.connection.close(ws.CloseCode.GOING_AWAY, "restart")
        self.assertIs(self.connection.state, State.CLOSING)
        self.assertEqual(self.connection.data_to_send(),
                         server_frame(8, close_payload(1001, b"restart")))
        with self.assertRaises(ws.InvalidState):
            self.connection.send_text("no")
        self.connection.close(1000)   # does nothing now
        events = self.receive(client_frame(1, b"in flight"), client_frame(9, b"p"),
                              client_frame(8, close_payload(1001)))
        self.assertEqual(events, [Close(1001, "")])
        self.assertIs(self.connection.state, State.CLOSED)
        self.assertEqual(self.connection.data_to_send(), b"")

    def test_server_close_codes(self):
        for code in (1008, 1009, 1011):
            self.setUp()
            self.connection.close(code)
            self.assertEqual(self.connection.data_to_send(), server_frame(8, close_payload(code)))
        with self.assertRaises(ValueError):
            ws.Connection().close(1006)

    def test_error_while_closing_sends_nothing_more(self):
        self.connection.close()
        self.connection.data_to_send()
        self.assertEqual(self.receive(client_frame(1, b"x", mask=None)), [])
        self.assertIs(self.connection.state, State.CLOSED)
        self.assertEqual(self.connection.data_to_send(), b"")

    def test_eof(self):
        self.connection.receive_eof()
        self.assertIs(self.connection.state, State.CLOSED)
        self.assertEqual(self.receive(client_frame(1, b"x")), [])
        with self.assertRaises(ws.InvalidState):
            self.connection.send_text("x")
        self.assertEqual(self.connection.data_to_send(), b"")

    def test_events_compare_by_type_and_value(self):
        self.assertEqual(Ping(b"x"), Ping(b"x"))
        self.assertNotEqual(Ping(b"x"), Pong(b"x"))
        self.assertNotEqual(Close(1000, "a"), Close(1000, "b"))
        self.assertEqual(repr(Close(1000, "a")), "Close(1000, 'a')")
        with self.assertRaises(AttributeError):
            Text("a").data = "b"


class EchoServerTest(unittest.TestCase):
    """ws_echo.py as a subprocess, over a real socket."""

    def setUp(self):
        self.process = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "ws_echo.py"), "0"], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(self.stop_server)
        line = self.read_line(self.process.stdout)
        self.assertTrue(line.startswith(b"ws_echo listening on 127.0.0.1:"), line)
        self.port = int(line.rsplit(b":", 1)[1])
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)
        self.addCleanup(self.sock.close)
        self.buffer = b""

    def stop_server(self):
        self.process.terminate()
        self.process.wait(TIMEOUT)
        self.process.stdout.close()
        errors = self.process.stderr.read()
        self.process.stderr.close()
        self.assertEqual(errors, b"")

    def read_line(self, stream) -> bytes:
        """A line of stream, read in a thread (Windows cannot select() a pipe)."""
        got = []
        reader = threading.Thread(target=lambda: got.append(stream.readline()), daemon=True)
        reader.start()
        reader.join(TIMEOUT)
        if not got:
            self.fail("no line from ws_echo.py within %.0f s" % TIMEOUT)
        if not got[0].endswith(b"\n"):
            self.fail("ws_echo.py ended: %r" % (got[0] + self.process.stderr.read()))
        return got[0].rstrip(b"\r\n") + b"\n"

    def read_exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            data = self.sock.recv(65536)   # the socket's timeout is the deadline
            if not data:
                self.fail("connection closed with %r" % self.buffer)
            self.buffer += data
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def read_frame(self) -> Tuple[int, bytes]:
        first, second = self.read_exactly(2)
        self.assertEqual(first & 0xF0, 0x80, "final, no reserved bits")
        self.assertFalse(second & 0x80, "server frames are not masked")
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self.read_exactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self.read_exactly(8))[0]
        return first & 0x0F, self.read_exactly(length)

    def upgrade(self) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(request("Sec-WebSocket-Key: " + key, drop=("Sec-WebSocket-Key",)))
        while b"\r\n\r\n" not in self.buffer:
            data = self.sock.recv(4096)
            self.assertTrue(data, "closed during the handshake: %r" % self.buffer)
            self.buffer += data
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        self.assertIn(("Sec-WebSocket-Accept: " + handshake.accept_key(key)).encode(), head.split(b"\r\n"))

    def test_echo_ping_and_close_handshake(self):
        self.upgrade()
        self.sock.sendall(client_frame(1, "héllo".encode()))
        self.assertEqual(self.read_frame(), (1, "héllo".encode()))
        big = os.urandom(70000)
        self.sock.sendall(client_frame(2, big[:30000], fin=False) + client_frame(9, b"beat")
                          + client_frame(0, big[30000:]))
        self.assertEqual(self.read_frame(), (10, b"beat"))
        self.assertEqual(self.read_frame(), (2, big))
        self.sock.sendall(client_frame(8, close_payload(1000, b"bye")))
        self.assertEqual(self.read_frame(), (8, close_payload(1000)))
        self.assertEqual(self.sock.recv(100), b"", "the server closes the TCP connection")

    def test_protocol_error_closes_with_1002(self):
        self.upgrade()
        self.sock.sendall(client_frame(1, b"unmasked", mask=None))
        self.assertEqual(self.read_frame(), (8, close_payload(1002, b"client frame not masked")))
        self.assertEqual(self.sock.recv(100), b"")

    def test_plain_request_gets_an_error(self):
        self.sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        response = b""
        while True:
            data = self.sock.recv(4096)
            if not data:
                break
            response += data
        self.assertTrue(response.startswith(b"HTTP/1.1 400 Bad Request\r\n"), response)


if __name__ == "__main__":
    unittest.main()
