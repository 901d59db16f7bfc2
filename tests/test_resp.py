"""The Redis client: the pure protocol directly, the socket part against a
redis-server of the tests' own (tests/redisbed.py)."""

import socket
import ssl
import threading
import time
import unittest

from broadcast_chat.resp import (Parser, ProtocolError, Redis, RedisAddress, RedisConnectionError,
                                 RedisError, encode, parse_url, script_sha)
from tests.redisbed import RedisServer, needs_redis, redis_has_tls
from tests.support import TIMEOUT, free_port


class EncodeTest(unittest.TestCase):

    def test_bulk_strings_of_every_kind(self) -> None:
        self.assertEqual(encode("SET", b"k\r\n", 12, 1.5, "é"),
                         b"*5\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n12\r\n$3\r\n1.5\r\n$2\r\n\xc3\xa9\r\n")

    def test_no_arguments_and_empty_ones(self) -> None:
        self.assertEqual(encode(), b"*0\r\n")
        self.assertEqual(encode(""), b"*1\r\n$0\r\n\r\n")

    def test_other_types_are_refused(self) -> None:
        for value in (None, True, [1], object()):
            with self.subTest(value=value), self.assertRaises(TypeError):
                encode("SET", "k", value)


# Several replies of every kind, one after another, as a server sends them.
STREAM = (b"+OK\r\n-NOSCRIPT No matching script\r\n:-42\r\n$5\r\nhe\r\no\r\n$0\r\n\r\n"
          b"$-1\r\n*-1\r\n*0\r\n*3\r\n:1\r\n*2\r\n$1\r\na\r\n*0\r\n+x\r\n:7\r\n")


def expected_stream() -> list:
    return ["OK", "NOSCRIPT No matching script", -42, b"he\r\no", b"", None, None, [],
            [1, [b"a", []], "x"], 7]


def comparable(replies: list) -> list:
    """Replies with errors as their text, so that lists compare."""
    return [str(reply) if isinstance(reply, RedisError) else reply for reply in replies]


class ParserTest(unittest.TestCase):

    def test_each_type(self) -> None:
        replies = Parser().feed(STREAM)
        self.assertEqual(comparable(replies), expected_stream())
        self.assertIsInstance(replies[1], RedisError)
        self.assertEqual(replies[1].code, "NOSCRIPT")

    def test_split_at_every_byte(self) -> None:
        for cut in range(len(STREAM) + 1):
            with self.subTest(cut=cut):
                parser = Parser()
                replies = parser.feed(STREAM[:cut]) + parser.feed(STREAM[cut:])
                self.assertEqual(comparable(replies), expected_stream())

    def test_one_byte_at_a_time(self) -> None:
        parser = Parser()
        replies = []
        for index in range(len(STREAM)):
            replies += parser.feed(STREAM[index:index + 1])
        self.assertEqual(comparable(replies), expected_stream())

    def test_incomplete_reply_waits(self) -> None:
        parser = Parser()
        self.assertEqual(parser.feed(b"*2\r\n$3\r\nabc\r\n$3\r\nde"), [])
        self.assertEqual(parser.feed(b"f\r\n"), [[b"abc", b"def"]])

    def test_garbage_is_a_protocol_error(self) -> None:
        for data in (b"hello\r\n", b":12x\r\n", b"$3\r\nabcd\r\n", b"$-2\r\n", b"*-5\r\n",
                     b"$\r\n", b":\r\n", b"*1_0\r\n"):
            with self.subTest(data=data), self.assertRaises(ProtocolError):
                Parser().feed(data)

    def test_endless_line_is_a_protocol_error(self) -> None:
        parser = Parser()
        self.assertEqual(parser.feed(b"+" + b"x" * (Parser.max_line - 1)), [])
        with self.assertRaises(ProtocolError):
            parser.feed(b"x")

    def test_protocol_error_is_a_connection_error(self) -> None:
        self.assertTrue(issubclass(ProtocolError, RedisConnectionError))
        self.assertTrue(issubclass(RedisConnectionError, OSError))

    def test_large_array_in_pieces_is_linear(self) -> None:
        """An XREAD-sized reply (20,000 elements) fed in 1 KiB pieces:
        parsing it again from its start at each piece would take seconds."""
        entries = [[b"%d-0" % n, [b"field%d" % f for f in range(10)]] for n in range(2000)]
        data = b"*2000\r\n" + b"".join(
            b"*2\r\n$%d\r\n%s\r\n*10\r\n" % (len(entry[0]), entry[0])
            + b"".join(b"$%d\r\n%s\r\n" % (len(f), f) for f in entry[1]) for entry in entries)
        parser = Parser()
        started = time.monotonic()
        replies = []
        for start in range(0, len(data), 1024):
            replies += parser.feed(data[start:start + 1024])
        self.assertEqual(replies, [entries])
        self.assertLess(time.monotonic() - started, 1.0)


class ParseUrlTest(unittest.TestCase):

    def test_good_urls(self) -> None:
        cases = {
            "redis://localhost": RedisAddress("localhost", 6379, 0, False, None, None),
            "redis://10.0.0.1:6380/3": RedisAddress("10.0.0.1", 6380, 3, False, None, None),
            "rediss://cache.example:7000/": RedisAddress("cache.example", 7000, 0, True, None, None),
            "REDIS://h/1": RedisAddress("h", 6379, 1, False, None, None),
            "redis://:s%40cret@h": RedisAddress("h", 6379, 0, False, "s@cret", None),
            "redis://al%3Ace:pw@h:1/2": RedisAddress("h", 1, 2, False, "pw", "al:ce"),
            "redis://[::1]:6390/4": RedisAddress("::1", 6390, 4, False, None, None),
            "redis://[::1]": RedisAddress("::1", 6379, 0, False, None, None),
        }
        for url, address in cases.items():
            with self.subTest(url=url):
                self.assertEqual(parse_url(url), address)

    def test_bad_urls_say_what_is_wrong(self) -> None:
        cases = {
            "http://localhost": "the scheme must be redis:// or rediss://, not http://",
            "localhost:6379": "not a URL like redis://HOST:PORT/DB",
            "redis://": "no host",
            "redis://:6379": "no host",
            "redis://h:0": "the port must be a number from 1 to 65535, not '0'",
            "redis://h:65536": "not '65536'",
            "redis://h:port": "not 'port'",
            "redis://h:": "not ''",
            "redis://h/x": "the database must be a number, not 'x'",
            "redis://h:\u00b2": "the port must be a number",
            "redis://h/\u00b2": "the database must be a number",
            "redis://h/-1": "not '-1'",
            "redis://::1:6379": "brackets",
            "redis://[::1:6379": "brackets",
            "redis://[::1]x": "brackets",
            "redis://user@h": "a user name needs a password",
            "redis://user:@h": "a user name needs a password",
        }
        for url, message in cases.items():
            with self.subTest(url=url):
                with self.assertRaises(ValueError) as caught:
                    parse_url(url)
                self.assertIn(message, str(caught.exception))
                self.assertNotIn("\n", str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            parse_url("redis://:secret@")
        self.assertNotIn("secret", str(caught.exception))


@needs_redis
class RedisTest(unittest.TestCase):
    """Against one server for the class: these tests leave it running."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = RedisServer().__enter__()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.__exit__()

    def setUp(self) -> None:
        self.redis = self.server.client()
        self.addCleanup(self.redis.close)
        self.redis.call("FLUSHALL")

    def test_call(self) -> None:
        self.assertEqual(self.redis.call("SET", "key", "é"), "OK")
        self.assertEqual(self.redis.call("GET", "key"), "é".encode("utf-8"))
        self.assertIsNone(self.redis.call("GET", "missing"))
        self.assertEqual(self.redis.call("INCRBY", "n", 5), 5)
        first = self.redis.call("XADD", "s", "*", "text", "hello", "n", 1)
        self.assertEqual(self.redis.call("XRANGE", "s", "-", "+"),
                         [[first, [b"text", b"hello", b"n", b"1"]]])

    def test_pipeline(self) -> None:
        replies = self.redis.pipeline([("SET", "a", 1), ("INCRBY", "a", 2), ("GET", "a"),
                                       ("GET", "nothing")])
        self.assertEqual(replies, ["OK", 3, b"3", None])
        self.assertEqual(self.redis.pipeline([]), [])

    def test_error_reply_is_raised_with_its_code(self) -> None:
        self.redis.call("SET", "text", "x")
        with self.assertRaises(RedisError) as caught:
            self.redis.call("INCR", "text")
        self.assertEqual(caught.exception.code, "ERR")
        with self.assertRaises(RedisError) as caught:
            self.redis.call("EVALSHA", "0" * 40, 0)
        self.assertEqual(caught.exception.code, "NOSCRIPT")
        self.assertTrue(self.redis.connected)
        self.assertEqual(self.redis.call("PING"), "PONG")

    def test_pipeline_returns_errors_in_place(self) -> None:
        replies = self.redis.pipeline([("SET", "t", "x"), ("INCR", "t"), ("NOSUCHCOMMAND",),
                                       ("GET", "t")])
        self.assertEqual(replies[0], "OK")
        self.assertIsInstance(replies[1], RedisError)
        self.assertIsInstance(replies[2], RedisError)
        self.assertEqual(replies[2].code, "ERR")
        self.assertEqual(replies[3], b"x")

    def test_scripts_run_by_sha1_in_one_pipeline_and_are_sent_whole_where_unknown(self) -> None:
        self.redis.call("SCRIPT", "FLUSH")
        double = "return tonumber(ARGV[1]) * 2"
        key = "return redis.call('INCR', KEYS[1])"
        self.assertEqual(self.redis.scripts([(double, [], [21]), (key, ["n"], []),
                                             (double, [], [5])]), [42, 1, 10])
        self.assertEqual(self.redis.call("SCRIPT", "EXISTS", script_sha(double),
                                         script_sha(key)), [1, 1])
        self.assertEqual(self.redis.scripts([(key, ["n"], []), (double, [], [1])]), [2, 2])
        self.redis.call("SET", "text", "x")
        with self.assertRaises(RedisError) as caught:
            self.redis.scripts([(double, [], [1]), (key, ["text"], [])])
        self.assertEqual(caught.exception.code, "ERR")

    def test_large_reply(self) -> None:
        self.redis.pipeline([("XADD", "big", "*") + tuple("f%d" % f for f in range(10))
                             for _ in range(1000)])
        entries = self.redis.call("XREAD", "COUNT", 1000, "STREAMS", "big", "0")
        self.assertEqual(len(entries[0][1]), 1000)
        self.assertEqual(entries[0][1][-1][1], [b"f%d" % f for f in range(10)])

    def test_select_database_from_url(self) -> None:
        self.redis.call("SET", "where", "db0")
        other = Redis(parse_url(self.server.url[:-1] + "5"))
        other.connect()
        self.addCleanup(other.close)
        self.assertIsNone(other.call("GET", "where"))
        other.call("SET", "where", "db5")
        self.assertEqual(self.redis.call("GET", "where"), b"db0")

    def test_timeout_closes_the_connection(self) -> None:
        self.redis.call("XADD", "s", "*", "a", "b")
        self.redis.settimeout(0.2)
        started = time.monotonic()
        with self.assertRaises(RedisConnectionError) as caught:
            self.redis.call("XREAD", "BLOCK", 2000, "STREAMS", "s", "$")
        self.assertLess(time.monotonic() - started, 1.5)
        self.assertIn("no reply from Redis at 127.0.0.1:%d within 0.2 s" % self.server.port,
                      str(caught.exception))
        self.assertFalse(self.redis.connected)
        self.redis.connect()
        self.assertEqual(self.redis.call("PING"), "PONG")

    def test_block_without_timeout(self) -> None:
        self.redis.settimeout(None)
        self.assertIsNone(self.redis.call("XREAD", "BLOCK", 50, "STREAMS", "s", "$"))

    def test_not_connected(self) -> None:
        self.redis.close()
        self.redis.close()      # twice is fine
        with self.assertRaises(RedisConnectionError) as caught:
            self.redis.call("PING")
        self.assertIn("not connected", str(caught.exception))


class NotRedisTest(unittest.TestCase):
    """Connecting where no Redis is: no redis-server needed."""

    def test_nobody_listening(self) -> None:
        port = free_port()
        client = Redis(parse_url("redis://127.0.0.1:%d" % port))
        with self.assertRaises(RedisConnectionError) as caught:
            client.connect()
        self.assertIn("cannot connect to Redis at 127.0.0.1:%d" % port, str(caught.exception))
        self.assertFalse(client.connected)

    def test_not_redis(self) -> None:
        """Something else on the port: connect() says so (its PING gets no RESP)."""
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)

            def answer() -> None:
                conn, _ = listener.accept()
                with conn:
                    conn.recv(100)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            thread = threading.Thread(target=answer, daemon=True)
            thread.start()
            port = listener.getsockname()[1]
            client = Redis(parse_url("redis://127.0.0.1:%d" % port))
            with self.assertRaises(ProtocolError) as caught:
                client.connect()
            thread.join(TIMEOUT)
        self.assertIn("Redis at 127.0.0.1:%d: unexpected reply b'HTTP/1.1 400" % port,
                      str(caught.exception))
        self.assertFalse(client.connected)


@needs_redis
class RedisLifeTest(unittest.TestCase):
    """Servers that the tests kill, restart or start with a password."""

    def start(self, **options) -> RedisServer:
        server = RedisServer(**options)
        self.addCleanup(server.close)
        return server.start()

    def test_password(self) -> None:
        server = self.start(password="s3cret")
        address = parse_url(server.url)
        wrong = Redis(address, password="wrong")
        with self.assertRaises(RedisError) as caught:
            wrong.connect()
        self.assertEqual(caught.exception.code, "WRONGPASS")
        self.assertFalse(wrong.connected)
        missing = Redis(address)
        with self.assertRaises(RedisError) as caught:
            missing.connect()
        self.assertEqual(caught.exception.code, "NOAUTH")
        right = Redis(parse_url(server.url.replace("//", "//:s3cret@")))
        right.connect()
        self.addCleanup(right.close)
        self.assertEqual(right.call("PING"), "PONG")
        named = Redis(parse_url(server.url.replace("//", "//default:s3cret@")))
        named.connect()
        self.addCleanup(named.close)
        self.assertEqual(named.call("ACL", "WHOAMI"), b"default")

    def test_killed_server_then_restart(self) -> None:
        server = self.start(persist=True)
        client = server.client()
        client.call("SET", "kept", "yes")
        server.kill()
        with self.assertRaises(RedisConnectionError) as caught:
            client.call("GET", "kept")
        self.assertIn("127.0.0.1:%d" % server.port, str(caught.exception))
        self.assertFalse(client.connected)
        with self.assertRaises(RedisConnectionError):
            client.connect()
        server.start()
        client.connect()
        self.assertEqual(client.call("GET", "kept"), b"yes")
        server.restart()
        with self.assertRaises(RedisConnectionError):
            client.call("PING")
        client.connect()
        self.assertEqual(client.call("GET", "kept"), b"yes")

    def test_tls(self) -> None:
        if not redis_has_tls():
            self.skipTest("this redis-server was built without TLS")
        server = self.start(tls=True)
        client = server.client()
        self.assertEqual(client.call("PING"), "PONG")
        self.assertEqual(server.url[:9], "rediss://")
        untrusting = Redis(parse_url(server.url), ssl_context=ssl.create_default_context())
        with self.assertRaises(RedisConnectionError) as caught:
            untrusting.connect()
        self.assertIn("TLS with Redis at 127.0.0.1:%d failed: the certificate was not accepted"
                      % server.port, str(caught.exception))
        plain = Redis(parse_url(server.url.replace("rediss", "redis")), timeout=1.0)
        with self.assertRaises(RedisConnectionError):
            plain.connect()


if __name__ == "__main__":
    unittest.main()
