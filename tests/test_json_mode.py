"""The JSON mode end to end: what a program gets after `/hello json`, and the
official client pacing itself by the limits the server announces."""

import calendar
import json
import time
import unittest

from tests.support import Peer, ServerTestCase, run_client


class JsonPeer:
    """A raw connection in the JSON mode: objects, read in order."""

    def __init__(self, test, port, name):
        self.peer = Peer(port, greet=True)
        test.addCleanup(self.peer.close)
        self.peer.send("/hello json")
        self.hello = self.next("hello")
        self.peer.send("/nick " + name)
        self.welcome = self.next("reply", "welcome")

    def objects(self):
        while True:
            line = self.peer.readline()
            if line is None:
                return
            yield json.loads(line)

    def next(self, type_, code=None, **match):
        for value in self.objects():
            if value["type"] == type_ and (code is None or value.get("code") == code) and all(
                    value.get(key) == wanted for key, wanted in match.items()):
                return value
        raise AssertionError("the connection ended before a %s %s" % (type_, code))


class JsonModeTest(ServerTestCase):
    server_args = ("--rate-limit", "7", "--burst", "9", "--max-line", "300")

    def test_hello_announces_version_and_limits(self):
        alice = JsonPeer(self, self.server.port, "alice")
        self.assertEqual(alice.hello["limits"], {"rate": 7.0, "burst": 9, "max_line": 300})
        self.assertRegex(alice.hello["version"], r"^\d+\.\d+\.\d+$")
        self.assertEqual(alice.welcome["name"], "alice")

    def test_events_have_increasing_ids_kinds_senders_and_utc_times(self):
        alice = JsonPeer(self, self.server.port, "alice")
        bob = JsonPeer(self, self.server.port, "bob")
        before = time.time()
        bob.peer.send("one")
        bob.peer.send("/me waves")
        bob.peer.send("/nick robert")
        seen = [alice.next("event", kind="message"), alice.next("event", kind="action"),
                alice.next("event", kind="rename")]
        ids = [event["id"] for event in seen]
        self.assertEqual(ids, sorted(set(ids)))
        self.assertEqual([e.get("from") for e in seen[:2]], ["bob", "bob"])
        self.assertEqual((seen[2]["name"], seen[2]["new"]), ("bob", "robert"))
        for event in seen:
            when = calendar.timegm(time.strptime(event["time"][:19], "%Y-%m-%dT%H:%M:%S"))
            self.assertTrue(event["time"].endswith("Z"))
            self.assertLess(abs(when - before), 60)
        # The sender gets its own events too, with the same ids.
        self.assertEqual(bob.next("event", kind="message")["id"], ids[0])
        self.assertEqual(bob.next("reply", "renamed")["name"], "robert")

    def test_nick_to_the_name_you_have_says_so(self):
        alice = JsonPeer(self, self.server.port, "alice")
        alice.peer.send("/nick alice")
        self.assertEqual(alice.next("reply", "renamed")["text"], "you are already alice")

    def test_errors_come_with_stable_codes(self):
        alice = JsonPeer(self, self.server.port, "alice")
        for line, code in (("/dance", "unknown_command"), ("/msg", "usage"),
                           ("/msg nobody hi", "no_such_name"), ("/nick root", "name_invalid"),
                           ("x" * 400, "line_too_long"), ("/hello json", "hello_late")):
            alice.peer.send(line)
            self.assertEqual(alice.next("error")["code"], code, line)

    def test_the_client_paces_by_the_announced_limits(self):
        # The server's burst is 9, under the client's default of 50 a go:
        # pacing by the server's defaults would be refused as a flood.
        watcher = JsonPeer(self, self.server.port, "watcher")
        result = run_client(self.server.port, "--name", "bot",
                            stdin="".join("line %d\n" % i for i in range(14)), timeout=20)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertNotIn("flood", result.stdout)
        got = [watcher.next("event", kind="message")["text"] for _ in range(14)]
        self.assertEqual(got, ["line %d" % i for i in range(14)])


if __name__ == "__main__":
    unittest.main()
