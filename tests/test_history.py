"""History in one process: the backlog on join, resume, /history, the
SQLite file, reconnect tokens. Members on socket pairs, as in test_room."""

import os
import socket
import sqlite3
import tempfile
import unittest

from tests import support  # (also puts the repository on sys.path)
from tests.test_room import NOW, Far, Quiet, RoomCase, flush_notices

from broadcast_chat import history, protocol, wire
from broadcast_chat.history import HistoryError, HistoryFile, Ring
from broadcast_chat.room import Member
from broadcast_chat.tokens import NameTokens


def objects(data):
    return [wire.parse_json_line(line) for line in data.decode().splitlines()
            if line.startswith("{")]


def event_ids(data, history=None):
    return [(o["id"], o.get("text")) for o in objects(data) if o["type"] == "event"
            and (history is None or bool(o.get("history")) == history)]


class HistoryCase(RoomCase):
    def join(self, room, name, fmt=wire.JSON, resume=None, claim=None):
        """A member that joins as name after a /hello with resume and token."""
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        ours.setblocking(False)
        item = Member(ours, ("192.0.2.9", 40000))
        item.fmt = fmt
        item.resume = resume
        item.claim = claim
        self.assertIsNone(room.admit(item))
        self.assertIsNone(room.rename(item, name))
        return item, Far(theirs)

    def said(self, room, who, count, start=0):
        for number in range(start, start + count):
            room.say(who, b"line %d\n" % number, 1)


class BacklogTest(HistoryCase):
    def test_a_newcomer_sees_the_last_events_marked_earlier_then_live_ones(self):
        room = self.make_room(backlog=3)
        alice, _ = self.member(room, "alice")
        flush_notices(room)
        room.say(alice, b"one\ntwo\nthree\nfour\n", 4)    # one block: cut between lines
        bob, far = self.join(room, "bob")
        room.say(alice, b"live\n", 1)
        data = far.read_until(lambda data: b'"live"' in data)
        got = objects(data)
        codes = [o.get("code") or o.get("kind") for o in got]
        self.assertEqual(codes[:6], ["welcome", "history", "message", "message", "message",
                                     "history_end"])
        self.assertEqual(event_ids(data, history=True),
                         [(3, "two"), (4, "three"), (5, "four")])
        self.assertEqual(event_ids(data, history=False)[-1], (room.last_id, "live"))
        self.assertEqual(got[2]["time"], wire.iso_time(NOW))    # the original time
        self.assertIn("bob joined", [o.get("text") for o in got])

    def test_text_members_see_the_backlog_between_two_notices(self):
        room = self.make_room(backlog=50)
        alice, _ = self.member(room, "alice")
        room.act(alice, "waves")
        bob, far = self.join(room, "bob", fmt=wire.TEXT)
        lines = far.read_lines(5)
        self.assertRegex(lines[1], rb"^\d\d:\d\d -- earlier messages: the last 2 events$")
        self.assertRegex(lines[2], rb"-- alice joined$")
        self.assertRegex(lines[3], rb"\* alice waves$")
        self.assertRegex(lines[4], rb"-- end of earlier messages$")

    def test_private_messages_are_never_in_the_history(self):
        room = self.make_room()
        alice, _ = self.member(room, "alice")
        bob, _ = self.member(room, "bob")
        room.whisper(alice, bob, "secret")
        room.say(alice, b"public\n", 1)
        carol, far = self.join(room, "carol")
        data = far.read_until(lambda data: b"history_end" in data)
        self.assertIn(b"public", data)
        self.assertNotIn(b"secret", data)
        self.assertFalse(any(b"secret" in e.render(wire.TEXT) for e in room.ring.events))

    def test_history_0_keeps_nothing_and_says_so(self):
        room = self.make_room(backlog=0)
        alice, _ = self.member(room, "alice")
        room.say(alice, b"hello\n", 1)
        self.assertEqual(len(room.ring), 0)
        bob, far = self.join(room, "bob")
        self.session(room, bob).handle(protocol.interpret_lines([b"/history"]), 0)
        self.assertEqual(far.answer()["code"], "welcome")
        self.assertEqual(far.answer()["code"], "history_off")
        self.assertNotIn(b"hello", far.data)

    def test_slash_history_shows_more_on_request_bounded(self):
        room = self.make_room(backlog=2)
        room.history_request_max = 10
        alice, _ = self.member(room, "alice")
        flush_notices(room)
        self.said(room, alice, 30)
        bob, far = self.join(room, "bob")
        far.read_until(lambda data: b"history_end" in data)
        far.data = b""
        session = self.session(room, bob)
        session.handle(protocol.interpret_lines([b"/history 5"]), 0)
        data = far.read_until(lambda data: b"history_end" in data)
        self.assertEqual([text for _, text in event_ids(data, True)],     # bob's join too
                         ["line %d" % n for n in range(26, 30)] + ["bob joined"])
        far.data = b""
        session.handle(protocol.interpret_lines([b"/history 1000"]), 0)
        data = far.read_until(lambda data: b"history_end" in data)
        self.assertEqual(len(event_ids(data, True)), 10)
        self.assertEqual(protocol.interpret("/history x").target, "usage")
        self.assertEqual(protocol.interpret("/history \u0663").target, "usage")


class ResumeTest(HistoryCase):
    def test_a_resume_gets_exactly_the_missed_events_then_live_ones(self):
        room = self.make_room()
        alice, _ = self.member(room, "alice")
        self.said(room, alice, 5)
        seen = room.last_id
        room.say(alice, b"a\nb\nc\n", 3)
        room.act(alice, "waves")
        # A resume from the middle of a block: the rest of the block only.
        bob, far = self.join(room, "bob", resume=(seen + 1, room.epoch))
        room.say(alice, b"live\n", 1)
        data = far.read_until(lambda data: b'"live"' in data)
        got = objects(data)
        resumed = [o for o in got if o.get("code") == "resumed"][0]
        self.assertEqual((resumed["events"], resumed["missed"]), (3, 0))
        ids = [o["id"] for o in got if o["type"] == "event"]
        self.assertEqual(ids, list(range(seen + 2, room.last_id + 1)))
        self.assertEqual([o.get("text") for o in got if o.get("history")], ["b", "c", "waves"])

    def test_a_gap_older_than_what_is_kept_is_a_missed_count(self):
        room = self.make_room()
        room.ring.max_events = 10
        alice, _ = self.member(room, "alice")
        flush_notices(room)
        self.said(room, alice, 30)
        bob, far = self.join(room, "bob", resume=(5, room.epoch))
        data = far.read_until(lambda data: b"history_end" in data)
        resumed = [o for o in objects(data) if o.get("code") == "resumed"][0]
        self.assertEqual(resumed["missed"], room.last_id - 5 - 10)
        self.assertEqual(resumed["events"], 10)
        self.assertIn("events missed", resumed["text"])
        self.assertEqual([i for i, _ in event_ids(data)],
                         list(range(room.last_id - 9, room.last_id + 1)))

    def test_a_replay_fills_at_most_half_the_queue(self):
        room = self.make_room(queue_limit=4096)
        alice, _ = self.member(room, "alice")
        flush_notices(room)
        for _ in range(40):
            room.say(alice, b"x" * 200 + b"\n", 1)
        bob, far = self.join(room, "bob", resume=(1, room.epoch))
        data = far.read_until(lambda data: b"history_end" in data)
        resumed = [o for o in objects(data) if o.get("code") == "resumed"][0]
        self.assertGreater(resumed["missed"], 0)
        self.assertLess(resumed["events"] * 250, 2048 + 250)
        self.assertEqual(bob.queue.reason, "")      # not dropped as too slow

    def test_another_epoch_voids_the_ids(self):
        room = self.make_room()
        alice, _ = self.member(room, "alice")
        self.said(room, alice, 3)
        bob, far = self.join(room, "bob", resume=(2, "another-run"))
        data = far.read_until(lambda data: b"history_end" in data)
        codes = [o.get("code") for o in objects(data)]
        self.assertEqual(codes[:3], ["welcome", "history_reset", "history"])

    def test_replay_pieces_are_shared_between_members(self):
        room = self.make_room()
        alice, _ = self.member(room, "alice")
        self.said(room, alice, 3)
        with room.lock:     # nothing sent before both are queued
            one = room.ring.events[-1].render_history(wire.JSON)
            got = history.replay(room.ring, 0, room.last_id, wire.JSON, 1 << 20)
            again = history.replay(room.ring, 0, room.last_id, wire.JSON, 1 << 20)
        self.assertIs(got.pieces[-1], one)
        self.assertTrue(all(a is b for a, b in zip(got.pieces, again.pieces)))

    def test_members_resuming_from_one_point_share_one_piece(self):
        room = self.make_room()
        alice, _ = self.member(room, "alice")
        self.said(room, alice, 5)
        with room.lock:
            first = room.replays.get(room.ring, 2, room.last_id, wire.JSON, room.replay_bytes, 0.0)
            second = room.replays.get(room.ring, 2, room.last_id, wire.JSON, room.replay_bytes, 0.0)
            third = room.replays.get(room.ring, 2, room.last_id, wire.JSON, room.replay_bytes, 0.0)
        self.assertGreater(len(first.pieces), 1)
        self.assertEqual(len(second.pieces), 1)
        self.assertEqual(second.pieces[0], b"".join(first.pieces))
        self.assertIs(third.pieces[0], second.pieces[0])
        room.say(alice, b"new\n", 1)      # a new event: made afresh
        with room.lock:
            self.assertIn(b'"new"', b"".join(room.replays.get(room.ring, 2, room.last_id, wire.JSON, room.replay_bytes, 0.0).pieces))

    def test_hello_words(self):
        self.assertEqual(protocol.hello_options("resume=12 epoch=ab token=x"),
                         {"resume": "12", "epoch": "ab", "token": "x"})
        self.assertEqual(protocol.hello_options("future=1"), {"future": "1"})
        self.assertIsNone(protocol.hello_options("resume=x"))
        self.assertIsNone(protocol.hello_options("resume"))
        self.assertEqual(protocol.interpret("/hello json resume=-1").target, "usage")
        self.assertEqual(protocol.interpret("/hello json resume=3 epoch=e").text,
                         "resume=3 epoch=e")


class TokenTest(HistoryCase):
    def test_a_reconnect_with_the_token_takes_the_name_back_from_a_squatter(self):
        room = self.make_room(tokens=NameTokens(b"k" * 32, grace=60))
        alice, alice_far = self.join(room, "alice")
        token = alice_far.answer()["token"]
        room.leave(alice, "connection lost")
        squatter, squatter_far = self.member(room, "alice")     # a raw client
        back, back_far = self.join(room, "alice", claim=token)
        self.assertEqual(back.name, "alice")
        self.assertRegex(squatter.name, r"^guest-\d+$")
        got = squatter_far.read_until(lambda data: b"taken back" in data)
        self.assertIn(b"you are now " + squatter.name.encode(), got)
        flush_notices(room)
        squatter_far.read_until(lambda data: b"alice is now known as guest-" in data)

    def test_a_token_is_for_one_name_and_a_wrong_one_changes_nothing(self):
        room = self.make_room(tokens=NameTokens(b"k" * 32, grace=60))
        bob, bob_far = self.join(room, "bob")
        token = bob_far.answer()["token"]
        holder, _ = self.member(room, "alice")
        with self.assertRaises(AssertionError):
            self.join(room, "alice", claim=token)           # bob's token
        self.assertEqual(holder.name, "alice")
        self.assertFalse(room.tokens.valid("A" * 32, "alice"))

    def test_the_owners_own_stale_connection_is_replaced_silently(self):
        room = self.make_room(tokens=NameTokens(b"k" * 32, grace=60))
        watcher, watcher_far = self.member(room, "watcher")
        alice, alice_far = self.join(room, "alice")
        token = alice_far.answer()["token"]
        flush_notices(room)
        watcher_far.read_until(lambda data: b"alice joined" in data)
        watcher_far.data = b""
        again, _ = self.join(room, "alice", claim=token)    # the old one is still here
        self.assertEqual(again.name, "alice")
        alice_far.read_until(lambda data: b"replaced by a new connection" in data)
        room.leave(alice, "replaced")
        room.say(again, b"back\n", 1)
        data = watcher_far.read_until(lambda data: b"back" in data)
        self.assertNotIn(b"joined", data)
        self.assertNotIn(b"left", data)

    def test_after_the_grace_period_the_squatter_keeps_the_name(self):
        clock = [100.0]
        tokens = NameTokens(b"k" * 32, grace=60, clock=lambda: clock[0])
        room = self.make_room(tokens=tokens)
        alice, alice_far = self.join(room, "alice")
        token = alice_far.answer()["token"]
        room.leave(alice, "connection lost")
        clock[0] += 61
        squatter, _ = self.member(room, "alice")
        with self.assertRaises(AssertionError):
            self.join(room, "alice", claim=token)
        self.assertEqual(squatter.name, "alice")

    def test_text_members_get_no_token(self):
        room = self.make_room(tokens=NameTokens(b"k" * 32))
        raw, far = self.join(room, "raw", fmt=wire.TEXT)
        self.assertIsNone(raw.token)
        self.assertNotIn(b"token", far.read_until(lambda data: b"welcome" in data))


class FullDisk:
    """A connection whose writes fail as SQLite's do on a full disk."""

    def __init__(self, db):
        self.db = db

    def execute(self, statement, *args):
        return self.db.execute(statement, *args)

    def executemany(self, statement, rows):
        raise sqlite3.OperationalError("database or disk is full")


class HistoryFileTest(unittest.TestCase):
    def setUp(self):
        self.folder = tempfile.TemporaryDirectory(prefix="chat-history-")
        self.addCleanup(self.folder.cleanup)
        self.path = os.path.join(self.folder.name, "history.db")

    def events(self, start, count):
        notice = wire.Notice("join", ["alice"], 0, "")
        made = [wire.Event(start, NOW, "join", notice=notice),
                wire.Event(start + 1, NOW, "action", "alice", text="waves \u00e9")]
        made.append(wire.Event(start + 2, NOW, "message", "alice",
                               block=b"".join(b"l%d\n" % n for n in range(count)), count=count))
        return made

    def test_events_survive_a_reopen_with_the_same_epoch_and_secret(self):
        log = Quiet()
        store = HistoryFile(self.path, 1000, 0.0, log)
        store.start()
        for event in self.events(1, 5):
            store.add(event)
        store.close()
        again = HistoryFile(self.path, 1000, 0.0, log)
        self.addCleanup(again.close)
        events, last_id = again.load(NOW)
        self.assertEqual(last_id, 7)
        self.assertEqual((again.epoch, again.secret), (store.epoch, store.secret))
        for old, new in zip(self.events(1, 5), events):
            self.assertEqual(old.render(wire.JSON), new.render(wire.JSON))

    def test_retention_by_count_and_age(self):
        store = HistoryFile(self.path, 6, 3600.0, Quiet())
        for event in self.events(1, 3) + [wire.Event(9, NOW - 7200, "action", "x", text="old")]:
            store.add(event)
        store.write_waiting()
        events, last_id = store.load(NOW)
        self.assertEqual(last_id, 9)
        self.assertEqual([e.first for e in events], [3])    # ids after 3 kept; 9 is too old
        store.prune()
        store.close()

    def test_a_corrupt_file_is_a_clear_error_at_start_up(self):
        with open(self.path, "wb") as handle:
            handle.write(b"this is not a database" * 100)
        with self.assertRaisesRegex(HistoryError, "cannot use the history file .*history.db"):
            HistoryFile(self.path, 10, 0.0, Quiet())

    def test_a_full_disk_is_logged_once_and_the_events_are_written_later(self):
        log = Quiet()
        store = HistoryFile(self.path, 100000, 0.0, log)
        self.addCleanup(store.close)
        real = store.db
        store.db = FullDisk(real)
        for number in range(1, 40):
            store.add(wire.Event(number, NOW, "message", "a", block=b"x\n"))
            self.assertFalse(store.write_waiting())
        self.assertEqual(sum("cannot write the history file" in line for line in log.lines), 1)
        store.db = real
        self.assertTrue(store.write_waiting())
        self.assertEqual(store.load(NOW)[1], 39)
        self.assertIn("written again", log.lines[-1])


class RingTest(unittest.TestCase):
    def test_ring_bounds_by_ids_and_bytes(self):
        ring = Ring(10, 100)
        for number in range(1, 20):
            ring.keep(wire.Event(number, NOW, "action", "a", text="x" * 5))
        self.assertEqual(ring.ids, 10)
        ring = Ring(1000, 100)
        for number in range(1, 20):
            ring.keep(wire.Event(number, NOW, "action", "a", text="x" * 30))
        self.assertLessEqual(ring.size, 100)
        self.assertEqual(ring.first_id(), 17)


if __name__ == "__main__":
    unittest.main()
