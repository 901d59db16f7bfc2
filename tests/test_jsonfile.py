"""clients.json written in one step: on every platform, and on Windows while
another thread or process holds the file open (Windows refuses to replace
an open file: PermissionError, WinError 5)."""

import os
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from broadcast_chat import jsonfile

WINDOWS = sys.platform == "win32"
HOLDER = (
    "import sys, time\n"
    "handle = open(sys.argv[1], encoding='utf-8')\n"
    "print('holding', flush=True)\n"
    "sys.stdin.readline()\n"   # until told to let go
    "handle.close()\n"
)


class FileCase(unittest.TestCase):
    def setUp(self) -> None:
        folder = tempfile.TemporaryDirectory(prefix="chat-test-")
        self.addCleanup(folder.cleanup)
        self.folder = folder.name
        self.path = os.path.join(self.folder, "clients.json")

    def leftovers(self):
        return [name for name in os.listdir(self.folder) if name != "clients.json"]


class WriteTest(FileCase):
    def test_write_then_read(self):
        value = [{"name": "al\u00efce", "address": "127.0.0.1:4000"}]
        jsonfile.write_json_atomic(self.path, value)
        self.assertEqual(jsonfile.read_json(self.path), value)
        with open(self.path, encoding="utf-8") as handle:
            self.assertTrue(handle.read().endswith("]\n"))
        self.assertEqual(self.leftovers(), [])

    @unittest.skipIf(WINDOWS, "POSIX file modes")
    def test_readable_by_its_owner_only(self):
        jsonfile.write_json_atomic(self.path, [])
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)

    def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(self):
        jsonfile.write_json_atomic(self.path, [1])
        with self.assertRaises(TypeError):
            jsonfile.write_json_atomic(self.path, [object()])
        self.assertEqual(jsonfile.read_json(self.path), [1])
        self.assertEqual(self.leftovers(), [])

    def test_read_json_default_for_a_missing_or_broken_file(self):
        self.assertEqual(jsonfile.read_json(self.path, "none"), "none")
        with open(self.path, "w") as handle:
            handle.write("[1, 2")
        self.assertEqual(jsonfile.read_json(self.path, "none"), "none")

    def test_a_reader_never_sees_a_partial_file(self):
        values = [list(range(n)) for n in (0, 3000, 10, 5000, 1)]
        jsonfile.write_json_atomic(self.path, values[0])
        stop = threading.Event()
        seen = []

        def read() -> None:
            # With a breath between reads, as a program that polls the file:
            # on Windows a reader that never lets go keeps every write out
            # (see test_a_reader_that_keeps_it_longer_than_the_patience...).
            while not stop.is_set():
                seen.append(jsonfile.read_json(self.path, "unreadable"))
                time.sleep(0.002)
        reader = threading.Thread(target=read)
        reader.start()
        try:
            for i in range(200):
                jsonfile.write_json_atomic(self.path, values[i % len(values)])
        finally:
            stop.set()
            reader.join()
        self.assertGreater(len(seen), 20)
        bad = [value for value in seen if value not in values]
        self.assertEqual(bad[:3], [])
        self.assertEqual(self.leftovers(), [])


class PatienceTest(unittest.TestCase):
    """The retry rule itself, with a stand-in for the refusing call."""

    def refusing(self, times: int):
        calls = []

        def action():
            calls.append(time.monotonic())
            if len(calls) <= times:
                raise PermissionError(13, "Access is denied")
            return "done"
        return action, calls

    def test_windows_tries_again_until_it_works(self):
        action, calls = self.refusing(4)
        self.assertEqual(jsonfile.patiently(action, 1.0, windows=True), "done")
        self.assertEqual(len(calls), 5)
        self.assertLess(calls[-1] - calls[0], 0.5)      # 1 + 2 + 4 + 8 ms of waiting

    def test_windows_gives_up_after_its_patience(self):
        action, calls = self.refusing(10 ** 6)
        started = time.monotonic()
        with self.assertRaises(PermissionError):
            jsonfile.patiently(action, 0.2, windows=True)
        took = time.monotonic() - started
        self.assertGreaterEqual(took, 0.2)
        self.assertLess(took, 1.0)
        gaps = [b - a for a, b in zip(calls, calls[1:])]
        self.assertLess(max(gaps), 0.2)      # the wait between tries stays short

    def test_posix_raises_at_once(self):
        action, calls = self.refusing(1)
        with self.assertRaises(PermissionError):
            jsonfile.patiently(action, 1.0, windows=False)
        self.assertEqual(len(calls), 1)

    def test_other_errors_are_not_retried(self):
        calls = []

        def action():
            calls.append(1)
            raise FileNotFoundError(2, "gone")
        with self.assertRaises(FileNotFoundError):
            jsonfile.patiently(action, 1.0, windows=True)
        self.assertEqual(calls, [1])


@unittest.skipUnless(WINDOWS, "Windows file sharing: POSIX replaces an open file at once")
class WindowsSharingTest(FileCase):
    def setUp(self) -> None:
        super().setUp()
        jsonfile.write_json_atomic(self.path, ["old"])

    def test_a_plain_replace_of_an_open_file_is_refused(self):
        # What the patience is for (and that this Windows, or Wine, behaves so).
        with open(self.path, encoding="utf-8"):
            fd, tmp = tempfile.mkstemp(dir=self.folder)
            os.close(fd)
            try:
                with self.assertRaises(PermissionError) as caught:
                    os.replace(tmp, self.path)
                self.assertEqual(caught.exception.winerror, 5)
            finally:
                os.unlink(tmp)

    def test_the_writer_waits_for_a_thread_that_holds_the_file(self):
        handle = open(self.path, encoding="utf-8")
        released = []

        def release() -> None:
            time.sleep(0.3)     # the reader holds the file this long
            released.append(time.monotonic())
            handle.close()
        releaser = threading.Thread(target=release)
        releaser.start()
        self.addCleanup(releaser.join)
        jsonfile.write_json_atomic(self.path, ["new"])
        self.assertTrue(released, "the writer did not wait for the reader")
        self.assertEqual(jsonfile.read_json(self.path), ["new"])
        self.assertEqual(self.leftovers(), [])

    def test_the_writer_waits_for_another_process_that_holds_the_file(self):
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, self.path],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  universal_newlines=True)
        self.addCleanup(holder.wait)
        self.addCleanup(holder.stdin.close)
        self.addCleanup(holder.stdout.close)
        self.assertEqual(holder.stdout.readline(), "holding\n")
        done = threading.Event()
        errors = []

        def write() -> None:
            try:
                jsonfile.write_json_atomic(self.path, ["new"], patience=10)
            except OSError as exc:
                errors.append(exc)
            done.set()
        writer = threading.Thread(target=write)
        writer.start()
        self.assertFalse(done.wait(0.3), "replaced while another process held the file")
        holder.stdin.write("\n")
        holder.stdin.flush()
        writer.join(10)
        self.assertTrue(done.is_set())
        self.assertEqual(errors, [])
        self.assertEqual(jsonfile.read_json(self.path), ["new"])

    def test_a_reader_that_keeps_it_longer_than_the_patience_gets_the_error(self):
        with open(self.path, encoding="utf-8"):
            started = time.monotonic()
            with self.assertRaises(PermissionError):
                jsonfile.write_json_atomic(self.path, ["new"], patience=0.2)
            self.assertGreaterEqual(time.monotonic() - started, 0.2)
        self.assertEqual(jsonfile.read_json(self.path), ["old"])
        self.assertEqual(self.leftovers(), [])


if __name__ == "__main__":
    unittest.main()
