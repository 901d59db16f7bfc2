"""Several servers, one room, through a real redis-server the tests start.

Every test starts its own Redis on a free port and its own server
processes with --redis. --presence-ttl 1 makes a server killed outright
gone within about a second, not five.
"""

import json
import os
import re
import signal
import socket
import threading
import types
import unittest
from typing import Optional

from broadcast_chat import cluster, clusterdata, resp, wire
from tests.redisbed import CERT, RedisServer, needs_redis, redis_has_tls
from tests.support import TIMEOUT, Peer, ServerProcess, child_env, run_server, wait_until


def json_objects(peer: Peer, start: int = 0):
    return [json.loads(line) for line in peer.lines[start:] if line.startswith("{")]


class ClusterCase(unittest.TestCase):
    def setUp(self) -> None:
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.close)

    def node(self, name: str, *args: str, port: int = 0,
             redis: Optional[RedisServer] = None) -> ServerProcess:
        server = ServerProcess("--redis", (redis or self.redis).url, "--node", name,
                               "--presence-ttl", "1", *args, port=port).start()
        self.addCleanup(server.__exit__)
        # (The log line may come before or after "Server running".)
        wait_until(lambda: "joined the cluster as %s\n" % name in server.log.text(),
                   message="%s joins the cluster" % name)
        return server

    def peer(self, server: ServerProcess, name=None) -> Peer:
        peer = Peer(server.port, name)
        self.addCleanup(peer.close)
        return peer

    def json_peer(self, server: ServerProcess, hello: str = "/hello json") -> Peer:
        peer = self.peer(server)
        peer.send(hello)
        peer.expect(r'^\{"type":"hello"')
        return peer


@needs_redis
class OneRoomTest(ClusterCase):
    def test_every_line_reaches_every_member_on_every_server_in_each_senders_order(self):
        servers = [self.node(name, "--rate-limit", "0") for name in ("a", "b", "c")]
        peers = [self.peer(server, "p%d" % index) for index, server in enumerate(servers)]
        listener = self.peer(servers[0], "listener")
        count = 200
        threads = [threading.Thread(target=peer.sendraw, args=(b"".join(
            b"%s line %d\n" % (peer.name.encode(), n) for n in range(count)),)) for peer in peers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        for receiver in peers + [listener]:
            got = {peer.name: [] for peer in peers}
            while any(len(lines) < count for name, lines in got.items()
                      if name != receiver.name):
                match = receiver.expect(r"<(p\d)> (p\d) line (\d+)$")
                got[match.group(1)].append(int(match.group(3)))
            for name, numbers in got.items():
                if name != receiver.name:
                    self.assertEqual(numbers, list(range(count)), (receiver.name, name))
            self.assertEqual(got.get(receiver.name, []), [])    # its own lines not echoed

    def test_names_are_unique_across_servers_confusables_and_reserved_names_too(self):
        a, b = self.node("a"), self.node("b")
        self.peer(a, "alice")
        for taken in ("alice", "ALICE", "aIice", "\u0430lice"):
            peer = self.peer(b)
            peer.send("/nick " + taken)
            peer.expect(r"!! name taken: alice is already in use")
        peer = self.peer(b)
        peer.send("/nick admin")
        peer.expect(r"!! invalid name: the name admin is reserved")
        peer.send("/nick alicia")
        peer.expect(r"-- welcome, alicia!")

    def test_who_msg_and_notices_span_the_servers(self):
        a, b = self.node("a"), self.node("b")
        alice = self.peer(a, "alice")
        bob = self.peer(b, "bob")
        alice.expect(r"-- bob joined$")
        # b has read alice's join (in bob's backlog, or live after it: a's
        # notice may reach the Stream after bob's), so carol's welcome names her.
        bob.expect(r"-- alice joined$")
        carol = self.peer(b)
        carol.send("/nick carol")
        carol.expect(r"-- welcome, carol! 2 others online")
        alice.send("/who")
        alice.expect(r"-- 3 online: alice, bob, carol$")
        alice.send("/msg BOB see you at five")
        bob.expect(r"\*alice\* see you at five$")
        alice.expect(r"-> \*bob\* see you at five$")
        bob.send("/nick robert")
        alice.expect(r"-- bob is now known as robert$")
        bob.send("/msg nobody hello")
        bob.expect(r"!! no such name: nobody")
        bob.close()
        alice.expect(r"-- robert left \(")
        alice.send("/who")
        alice.expect(r"-- 2 online: alice, carol$")

    def test_clients_file_lists_this_servers_members_and_its_node(self):
        a, b = self.node("a"), self.node("b")
        self.peer(a, "alice")
        self.peer(b, "bob")
        records = a.wait_clients(lambda c: len(c) == 1 and c[0]["name"] == "alice")
        self.assertEqual(records[0]["node"], "a")
        b.wait_clients(lambda c: [r["name"] for r in c] == ["bob"] and c[0]["node"] == "b")

    def test_name_races_between_servers_give_the_name_once(self):
        servers = [self.node("a"), self.node("b")]
        peers = [self.peer(servers[n % 2]) for n in range(10)]
        threads = [threading.Thread(target=p.send, args=("/nick racer",)) for p in peers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        answers = [p.expect(r"-- welcome, racer!|!! name taken: racer").group(0) for p in peers]
        self.assertEqual(sum(a.startswith("-- welcome") for a in answers), 1, answers)

    def test_a_name_taken_back_leaves_its_holder_a_guest_name_free_on_every_server(self):
        a, b = self.node("a"), self.node("b")
        guest = self.peer(b, "guest-1")     # the first guest name a would give
        owner = self.json_peer(a)
        owner.send("/nick carol")
        token = json.loads(owner.expect(r'^\{"type":"reply","code":"welcome".*').group(0))["token"]
        owner.close()
        guest.expect(r"-- carol left")      # a has let go of her
        squatter = self.peer(a)
        squatter.send("/nick carol")    # while carol's token holds it for her
        squatter.expect(r"-- welcome, carol!")
        again = self.json_peer(a, "/hello json token=" + token)
        again.send("/nick carol")
        again.expect(r'"code":"welcome"')
        squatter.expect(r"!! your name carol was taken back by its owner, who reconnected; "
                        r"you are now guest-1")
        squatter.expect(r"-- guest-1 is now known as (guest-\d+)$")
        squatter.send("/who")
        names = squatter.expect(r"-- 3 online: (.*)$").group(1).split(", ")
        self.assertEqual(sorted(names), sorted(set(names)), names)
        self.assertIn("guest-1", names)
        self.assertIn("carol", names)


@needs_redis
class TlsRedisTest(ClusterCase):
    def setUp(self) -> None:
        if not redis_has_tls():
            self.skipTest("this redis-server was built without TLS")
        self.redis = RedisServer(tls=True).start()
        self.addCleanup(self.redis.close)

    def test_rediss_urls_speak_tls_checked_against_the_trusted_certificates(self):
        # OpenSSL's SSL_CERT_FILE: the tests' certificate is the one trusted.
        env = child_env(SSL_CERT_FILE=CERT)
        servers = []
        for name in ("a", "b"):
            server = ServerProcess("--redis", self.redis.url, "--node", name, env=env).start()
            self.addCleanup(server.__exit__)
            wait_until(lambda: "joined the cluster as %s\n" % name in server.log.text())
            servers.append(server)
        alice, bob = self.peer(servers[0], "alice"), self.peer(servers[1], "bob")
        alice.send("over tls")
        bob.expect(r"<alice> over tls$")
        untrusting = ServerProcess("--redis", self.redis.url, "--node", "c").start()
        self.addCleanup(untrusting.__exit__)
        wait_until(lambda: "certificate" in untrusting.log.text(), message="refused certificate")


@needs_redis
class HistoryAcrossServersTest(ClusterCase):
    def test_a_resume_on_another_server_gets_exactly_what_was_missed(self):
        a, b = self.node("a"), self.node("b")
        talker = self.peer(a, "talker")
        reader = self.json_peer(a)
        reader.send("/nick reader")
        talker.send("one")
        talker.send("two")
        reader.expect(r'"text":"two"')
        hello = json_objects(reader)[0]
        seen = max(o["id"] for o in json_objects(reader) if o.get("type") == "event")
        reader.close()
        talker.expect(r"-- reader left")
        talker.send("three")
        talker.send("four")
        again = self.json_peer(b, "/hello json resume=%d epoch=%s" % (seen, hello["epoch"]))
        again.send("/nick reader")
        # Replayed, or live after the replay if b had not read them yet
        # from the Stream: either way once each, in order, nothing missed.
        again.expect(r'"text":"four"')
        got = json_objects(again)
        resumed = [o for o in got if o.get("code") == "resumed"][0]
        self.assertEqual(resumed["missed"], 0)
        texts = [o["text"] for o in got if o.get("kind") == "message"]
        self.assertEqual(texts, ["three", "four"])
        ids = [o["id"] for o in got if o.get("kind") == "message"]
        self.assertEqual(ids, sorted(ids))
        self.assertGreater(ids[0], seen)
        self.assertEqual(json_objects(again)[0]["epoch"], hello["epoch"])

    def test_a_new_server_shows_the_clusters_history_to_newcomers(self):
        a = self.node("a")
        self.peer(a, "alice").send("said before b started")
        wait_until(lambda: self.redis.client().call("XLEN", "broadcast:events") >= 2)
        b = self.node("b")
        newcomer = self.peer(b, "newcomer")
        newcomer.expect(r"<alice> said before b started$", start=0)


@needs_redis
class FaultTest(ClusterCase):
    def test_a_server_killed_outright_leaves_the_room_and_frees_its_names(self):
        a, b = self.node("a"), self.node("b")
        alice = self.peer(a, "alice")
        self.peer(b, "bob")
        alice.expect(r"-- bob joined$")
        b.kill()
        alice.expect(r"-- bob left \(server lost\)$", timeout=TIMEOUT)
        a.log.expect(r"server b is gone")
        alice.send("/who")
        alice.expect(r"-- 1 online: alice$")
        self.peer(a, "bob")     # the name is free again
        # b's last sequence number stays: a publish of b's on its way (its
        # reply lost) would otherwise be appended again when b came back.
        self.assertIsNotNone(self.redis.client().call("HGET", "broadcast:seq", "b"))

    def test_an_error_reply_to_the_heartbeat_is_an_outage_not_the_end_of_it(self):
        slow = RedisServer(extra=["--lua-time-limit", "100"]).start()
        self.addCleanup(slow.close)
        a = self.node("a", redis=slow)
        # Someone else's script runs for two to three seconds: Redis answers
        # BUSY meanwhile, to the heartbeats (five a second) too.
        slow.client(timeout=10).call("EVAL", "local t = redis.call('TIME')[1] + 0 "
                                     "while redis.call('TIME')[1] - t < 3 do end", 0)
        a.log.expect(r"BUSY")
        a.log.expect(r"joined the cluster again as a$")
        self.assertNotIn("Traceback", a.errors.text() + a.log.text())

    def test_a_server_stopped_cleanly_says_its_members_left_and_leaves_no_trace(self):
        a, b = self.node("a"), self.node("b")
        alice = self.peer(a, "alice")
        bob = self.peer(b, "bob")
        bob.expect(r"-- alice joined$")
        self.assertEqual(a.stop(), 0)
        bob.expect(r"-- alice left \(server shutting down\)$")
        redis = self.redis.client()
        self.assertEqual(redis.call("SMEMBERS", "broadcast:nodes"), [b"b"])
        self.assertIsNone(redis.call("GET", "broadcast:alive:a"))
        self.assertEqual(redis.call("EXISTS", "broadcast:members:a"), 0)
        self.peer(b, "alice")   # the name is free
        alice.close()

    @unittest.skipUnless(hasattr(signal, "SIGSTOP"), "stops a server with SIGSTOP")
    def test_a_stopped_server_holds_nobody_up_and_comes_back_with_what_it_missed(self):
        a, b = self.node("a"), self.node("b")
        alice, carol = self.peer(a, "alice"), self.peer(a, "carol")
        bob = self.peer(b, "bob")
        alice.expect(r"-- bob joined$")
        b.send_signal(signal.SIGSTOP)
        try:
            alice.send("while b is stopped")
            carol.expect(r"<alice> while b is stopped$")
            alice.expect(r"-- bob left \(server lost\)$")
        finally:
            b.send_signal(signal.SIGCONT)
        alice.expect(r"-- bob joined$")
        bob.expect(r"<alice> while b is stopped$")
        bob.send("back")
        alice.expect(r"<bob> back$")
        alice.send("/who")
        alice.expect(r"-- 3 online: alice, bob, carol$")

    @unittest.skipUnless(hasattr(signal, "SIGSTOP"), "stops a server with SIGSTOP")
    def test_what_the_stream_no_longer_holds_when_a_server_is_back_is_told_as_missed(self):
        options = ("--rate-limit", "0", "--history-keep", "10")
        a, b = self.node("a", *options), self.node("b", *options)
        alice, carol = self.peer(a, "alice"), self.peer(a, "carol")
        bob = self.peer(b, "bob")
        alice.expect(r"-- bob joined$")
        start = len(bob.lines)
        b.send_signal(signal.SIGSTOP)
        try:
            # An entry each (lines read at once share one); b's reader may
            # have one read on its way, of what the first publish appended.
            count = 1200
            alice.sendraw(b"".join(b"/me says %d\n" % n for n in range(count)))
            carol.expect(r"\* alice says %d$" % (count - 1))
            redis = self.redis.client()
            wait_until(lambda: redis.call("XLEN", "broadcast:events") < count // 2,
                       message="the Stream trimmed")
        finally:
            b.send_signal(signal.SIGCONT)
        bob.expect(r"\* alice says %d$" % (count - 1))
        told = [re.search(r"\* alice says (\d+)$|-- (\d+) events of the room missed: said on "
                          r"other servers while this one could not hear them$", line)
                for line in bob.lines[start:]]
        numbers = [int(m.group(1)) for m in told if m and m.group(1)]
        missed = [int(m.group(2)) for m in told if m and m.group(2)]
        self.assertEqual(len(missed), 1, bob.lines[start:start + 5])
        self.assertEqual(numbers, sorted(set(numbers)))
        self.assertEqual(len(numbers) + missed[0], count)
        where = [m.group(2) is not None for m in told if m].index(True)
        before = numbers[where - 1] if where else -1
        self.assertEqual(numbers[where] - before - 1, missed[0])   # told where the gap is

    def test_servers_share_one_port(self):
        a = self.node("a")
        b = self.node("b", port=a.port)
        peers = [self.peer(a, "p%d" % n) for n in range(8)]     # the kernel picks a or b
        wait_until(lambda: len((a.clients() or []) + (b.clients() or [])) == 8)
        peers[0].send("to all")
        for peer in peers[1:]:
            peer.expect(r"<p0> to all$")

    @unittest.skipUnless(hasattr(socket, "SO_REUSEPORT"), "--processes needs SO_REUSEPORT")
    def test_one_command_starts_a_server_per_process_on_one_port(self):
        server = ServerProcess("--redis", self.redis.url, "--node", "p", "--processes", "2",
                               "--presence-ttl", "1").start()
        self.addCleanup(server.__exit__)
        wait_until(lambda: all("joined the cluster as %s\n" % name in server.log.text()
                               for name in ("p", "p-2")), message="both servers join")
        second = os.path.join(server.folder, "clients-2.json")

        def members():
            try:
                with open(second) as handle:
                    return len(server.clients()) + len(json.load(handle))
            except (OSError, ValueError, TypeError):
                return -1
        peers = [self.peer(server, "u%d" % n) for n in range(6)]   # the kernel spreads them
        wait_until(lambda: members() == 6, message="6 members in the two clients files")
        peers[0].send("to everyone")
        for peer in peers[1:]:
            peer.expect(r"<u0> to everyone$")
        self.assertEqual(server.stop(), 0)      # and the other with it
        redis = self.redis.client()
        wait_until(lambda: redis.call("SMEMBERS", "broadcast:nodes") == [],
                   message="both servers gone from Redis")

    def test_redis_restarted_mid_traffic_the_rooms_go_on_and_join_again(self):
        a, b = self.node("a"), self.node("b")
        alice, carol = self.peer(a, "alice"), self.peer(a, "carol")
        bob = self.peer(b, "bob")
        alice.expect(r"-- bob joined$")
        self.redis.kill()
        alice.send("while redis is down")
        carol.expect(r"<alice> while redis is down$")       # the room here goes on
        a.log.expect(r"this server's room goes on alone")
        self.redis.start()      # empty: it kept nothing
        a.log.expect(r"joined the cluster again as a")
        b.log.expect(r"joined the cluster again as b")
        bob.expect(r"<alice> while redis is down$")          # sent on once it answered
        bob.send("after")
        alice.expect(r"<bob> after$")
        carol.expect(r"<bob> after$")
        self.assertEqual(a.log.text().count("goes on alone"), 1, a.log.text())
        carol.sync()
        self.assertEqual([l for l in carol.lines if "while redis is down" in l].__len__(), 1)
        alice.send("/who")
        alice.expect(r"-- 3 online: alice, bob, carol$")

    def test_a_name_let_go_of_while_redis_was_away_is_free_once_it_is_back(self):
        self.redis = RedisServer(persist=True).start()     # it keeps the names
        self.addCleanup(self.redis.close)
        a, b = self.node("a"), self.node("b")
        alice, bob = self.peer(a, "alice"), self.peer(b, "bob")
        alice.expect(r"-- bob joined$")
        self.redis.kill()
        bob.send("/quit")
        bob.expect_closed()
        self.redis.start()
        a.log.expect(r"joined the cluster again as a")
        b.log.expect(r"joined the cluster again as b")
        alice.expect(r"-- bob left \(quit\)$")
        alice.send("/who")
        alice.expect(r"-- 1 online: alice$")
        self.peer(a, "bob")     # not held by a ghost

    def test_a_server_restarted_under_its_name_frees_the_names_of_its_last_run(self):
        a, b = self.node("a"), self.node("b")
        alice, carol = self.peer(a, "alice"), self.peer(b, "carol")
        alice.expect(r"-- carol joined$")
        b.kill()
        again = self.node("b")      # at once: whether or not a took b for gone first
        alice.expect(r"-- carol left \(server (lost|restarted)\)$")
        dave = self.peer(again, "dave")     # this run's first member, as carol was the last's
        alice.send("/msg carol not for dave")
        alice.expect(r"!! ")
        # One sent to carol as her server went: in b's inbox under her
        # serial, which is dave's in this run. The inbox is read in order.
        redis = self.redis.client()
        serial = redis.call("HGET", "broadcast:members:b", "dave").split(b"|")[1]
        redis.call("XADD", "broadcast:inbox:b", "*", "f", "alice", "s", serial, "n", "carol",
                   "x", "not for dave either")
        alice.send("/msg dave for dave")
        dave.expect(r"\*alice\* for dave$")
        self.assertFalse([line for line in dave.lines if "not for dave" in line], dave.lines)
        alice.send("/who")
        alice.expect(r"-- 2 online: alice, dave$")
        self.peer(a, "carol")

    def test_a_server_that_rejoins_after_being_taken_for_gone_says_its_members_joined(self):
        a, b = self.node("a"), self.node("b")
        alice, bob = self.peer(a, "alice"), self.peer(b, "bob")
        alice.expect(r"-- bob joined$")
        b.send_signal(signal.SIGSTOP)
        try:
            alice.expect(r"-- bob left \(server lost\)$")
            # And its connections to Redis cut meanwhile (a's too), as a
            # network cut that long would: b joins again from the start.
            self.redis.client().call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        finally:
            b.send_signal(signal.SIGCONT)
        b.log.expect(r"joined the cluster again as b")
        bob.send("back")
        alice.expect(r"-- bob joined$")
        alice.expect(r"<bob> back$")

    def test_a_server_that_cannot_reach_redis_runs_alone_and_says_so(self):
        url = self.redis.url
        self.redis.kill()
        server = ServerProcess("--redis", url, "--node", "a", "--presence-ttl", "1").start()
        self.addCleanup(server.__exit__)
        wait_until(lambda: "runs alone until Redis answers" in server.log.text())
        alice = self.peer(server, "alice")
        bob = self.peer(server, "bob")
        alice.send("hello")
        bob.expect(r"<alice> hello$")
        self.redis.start()
        wait_until(lambda: "joined the cluster as a\n" in server.log.text())
        alice.send("again")
        bob.expect(r"<alice> again$")

    def test_bad_redis_options_are_refused_in_one_line(self):
        for args, message in (
                (["--redis", "http://x"], r"--redis: the scheme must be redis:// or rediss://"),
                (["--redis", "redis://127.0.0.1:1/0", "--history-file", "h.db"],
                 r"--history-file and --redis do not go together"),
                (["--node", "a"], r"--redis-password-file, --node and --processes need --redis"),
                (["--redis", "redis://127.0.0.1:1/0", "--processes", "65"],
                 r"--processes must be from 0 \(one per CPU\) to 64"),
                (["--redis", "redis://127.0.0.1:1/0", "--node", "a|b"], r"--node a\|b: use")):
            done = run_server(*args)
            self.assertEqual(done.returncode, 2, done.stderr)
            self.assertRegex(done.stderr, r"^server.py: error: " + message)
            self.assertEqual(done.stderr.count("\n"), 1, done.stderr)


@needs_redis
class ControlTest(ClusterCase):
    """A Cluster in this process, its threads not started, the steps of its
    control thread run one by one, with another's step put between two."""

    def in_process(self, node: str) -> cluster.Cluster:
        room = types.SimpleNamespace(lock=threading.Lock(), members=[],
                                     announce=lambda *args: None)
        here = cluster.Cluster(room, resp.parse_url(self.redis.url), None, lambda *args: None,
                               node=node)
        self.addCleanup(here.control.close)
        here.control.connect()
        here.state = cluster.UP
        return here

    def test_a_notice_read_while_the_heartbeat_asks_is_not_undone_by_its_answer(self):
        a = self.node("a")
        self.peer(a, "alice")
        here = self.in_process("here")
        bob_joined = wire.Event(None, 1.0, "join", notice=wire.Notice("join", ["bob"], 0, ""))
        ask = here._ask_names

        def ask_then_read(conn):
            answer = ask(conn)      # alice alone: bob's join is not in Redis yet...
            with here.lock:         # ...but read from the Stream before the answer is taken
                here._read_in([(b"0-1", [b"e", clusterdata.entry_value("a", 9, bob_joined)])])
            return answer
        here._ask_names = ask_then_read
        here._beat()
        self.assertEqual(here.elsewhere, ["alice", "bob"])
        here._beat()                # the next heartbeat asks again: alice alone
        self.assertEqual(here.elsewhere, ["alice"])

    def test_a_restarted_server_lets_go_of_its_last_runs_names_but_tells_of_none_held_now(self):
        last_run = self.in_process("b")
        last_run.room.members += [types.SimpleNamespace(serial=7, name="carol"),
                                  types.SimpleNamespace(serial=8, name="dave")]
        self.assertEqual(last_run._claim_all(), [])
        this_run = self.in_process("b")    # carol came back to it before Redis answered; dave not
        this_run.room.members.append(types.SimpleNamespace(serial=1, name="carol"))
        self.assertEqual(this_run._let_go_of_stale(), ["dave"])
        self.assertEqual(this_run._claim_all(), [])     # carol's again, under this run

    def test_a_server_restarted_under_its_name_is_not_reaped_while_it_joins(self):
        last_run = self.in_process("b")
        last_run.room.members.append(types.SimpleNamespace(serial=7, name="carol"))
        self.assertEqual(last_run._claim_all(), [])
        last_run.control.call("SADD", last_run.keys.nodes, "b")     # then killed: no presence
        reaper = self.in_process("reaper")
        this_run = self.in_process("b")
        this_run.state = cluster.DOWN
        this_run.room.__dict__.update(epoch="e", adopt=lambda epoch, events: None, last_id=0)
        release = this_run._release

        def reaper_between(*args):      # the reaper looks just before b lets go
            reaper._beat()
            return release(*args)
        this_run._release = reaper_between
        told = []
        reaper.room.announce = this_run.room.announce = lambda *args: told.append(args)
        this_run._join()
        self.assertEqual(told, [("leave", ["carol"], "server restarted")])   # once

    def test_a_server_back_while_it_is_reaped_keeps_its_names(self):
        back, reaper = self.in_process("back"), self.in_process("reaper")
        carol = types.SimpleNamespace(serial=7, name="carol", state=None)
        back.room.members.append(carol)
        alive = ["SET", back.keys.alive("back"), "1"]
        back.control.checked([alive, ["SADD", back.keys.nodes, "back"]])
        self.assertEqual(back._claim_all(), [])
        back.control.call("DEL", back.keys.alive("back"))     # not heard of: gone
        release = reaper._release

        def back_between(*args):    # back beats and claims again before the names go
            back.control.call(*alive)
            self.assertEqual(back._claim_all(), [])
            return release(*args)
        reaper._release = back_between
        reaper._reap("back")
        newcomer = types.SimpleNamespace(serial=1, name=None, state=None)
        self.assertEqual(reaper.claim(newcomer, "carol"), "carol")     # still back's
        self.assertEqual(reaper.control.call("HGET", back.keys.members("back"), "carol"),
                         b"back|7")


class ClusterPureTest(unittest.TestCase):
    def test_an_entry_is_the_event_it_carries(self):
        notice = wire.Notice("leave", ["bob"], 0, "quit")
        for event in (wire.Event(None, 1764567890.5, "message", "alice", block=b"one\ntwo\n",
                                 count=2),
                      wire.Event(None, 1764567890.25, "action", "\u00e9lise", text="waves"),
                      wire.Event(None, 1764567891.0, "leave", notice=notice)):
            value = clusterdata.entry_value("n1", 3, event)
            got, node, seq = clusterdata.entry_event(b"0-41", [b"e", value])
            self.assertEqual((node, seq), (b"n1", 3))
            self.assertEqual((got.first, got.count, got.time, got.kind, got.name, got.block,
                              got.text, got.notice),
                             (41, event.count, event.time, event.kind, event.name, event.block,
                              event.text, event.notice))
        block = clusterdata.entry_event(b"0-41", [b"e", clusterdata.entry_value(
            "n1", 3, wire.Event(None, 1.0, "message", "a", block=b"x\ny\n", count=2))])[0]
        self.assertIn(b'"id":42', block.render("json"))     # its second line

    def test_publish_args_carry_each_event_as_one_value(self):
        events = [(4, wire.Event(None, 1.5, "message", "alice", block=b"a\nb\n", count=2))]
        self.assertEqual(clusterdata.publish_args("n1", 1000, 41, events),
                         ["n1", 1000, 41, 4, 2, b"n1\x004\x001.5\x00message\x00alice\x00a\nb\n"])

    def test_in_order_whichever_source_comes_first(self):
        def event(first, count=1):
            return wire.Event(first, 1.0, "message", "x", block=b"l\n" * count, count=count)
        order = clusterdata.InOrder(10)
        own = event(13)
        self.assertEqual(order.given((own, "me", False)), [])      # 11 and 12 not out yet
        out, missed = order.read(event(11, 2), None)                # another server's block
        self.assertEqual([d[0].first for d in out], [11, 13])
        self.assertEqual((out[1][1], missed), ("me", 0))
        self.assertEqual(order.read(event(13), None), ([], 0))     # read after: once only
        self.assertEqual(order.last, 13)
        late = event(14)
        out, _ = order.read(late, (late, "me", True))               # read before its id came
        self.assertEqual(out, [(late, "me", True)])
        self.assertEqual(order.given((event(15), None, False))[0][0].first, 15)
        out, missed = order.read(event(19), None)                   # 16-18 trimmed away
        self.assertEqual((out[0][0].first, missed), (19, 3))

    def test_names_elsewhere_follow_notices_that_name_everyone(self):
        names = ["bob"]
        names = clusterdata.follow(names, wire.Notice("join", ["carol"], 0, ""))
        names = clusterdata.follow(names, wire.Notice("rename", ["bob", "robert"], 0, ""))
        self.assertEqual(names, ["robert", "carol"])
        self.assertEqual(clusterdata.follow(names, wire.Notice("leave", ["carol"], 0, "quit")),
                         ["robert"])
        folded = wire.Notice("join", ["a", "b", "c"], 97, "")
        self.assertEqual(clusterdata.follow(names, folded), names)     # the heartbeat tells
        self.assertEqual(clusterdata.follow(names, None), names)

    def test_stale_names_are_those_their_owner_no_longer_holds(self):
        listed = [b"alice", b"b|1", b"bob", b"b|2", b"carol", b"b|3"]
        held = {"b|1": "alice", "b|2": "robert"}    # bob renamed; carol gone
        self.assertEqual(clusterdata.stale_names(listed, held), [(2, "bob"), (3, "carol")])
        self.assertEqual(clusterdata.stale_names([], held), [])

    def test_a_claim_covers_every_key_of_the_name(self):
        keys, args = clusterdata.Keys("p:", "n1").claim(7, "Alice")
        self.assertEqual(len(keys), 4)
        self.assertEqual(keys[3], "p:members:n1")
        self.assertIn("p:name:1:alice", keys)
        self.assertEqual(args, ["n1|7", "Alice", "p:alive:"])

    def test_node_names_are_unique_to_a_run_and_hold_no_separator(self):
        first, second = clusterdata.node_name(), clusterdata.node_name()
        self.assertNotEqual(first, second)
        self.assertNotIn("|", first)
        self.assertTrue(re.match(r"[A-Za-z0-9.-]+-%d-[0-9a-f]{6}\Z" % os.getpid(), first))


if __name__ == "__main__":
    unittest.main()
