"""Tests that pass, fail, skip and crash on purpose, for tests/test_parallel.py.

Not named test_*.py, so discovery leaves them out; only loaded by name.
"""

import os
import threading
import unittest


class Outcomes(unittest.TestCase):
    def test_passes(self):
        pass

    def test_fails(self):
        self.assertEqual(1, 2, "meant to fail")

    def test_errors(self):
        raise RuntimeError("meant to error")

    def test_skips(self):
        self.skipTest("meant to skip")

    def test_subtests(self):
        for n in range(3):
            with self.subTest(n=n):
                self.assertNotEqual(n, 1, "subtest meant to fail")

    @unittest.expectedFailure
    def test_expected_failure(self):
        self.fail("expected")

    @unittest.expectedFailure
    def test_unexpected_success(self):
        pass


class SharedFixture(unittest.TestCase):
    """Its tests must run in one process, after one setUpClass."""

    @classmethod
    def setUpClass(cls):
        cls.pid = os.getpid()
        cls.steps = []

    def test_1_first(self):
        self.steps.append(1)

    def test_2_second(self):
        self.assertEqual((self.pid, self.steps), (os.getpid(), [1]))


class BrokenFixture(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        raise RuntimeError("meant to break the class")

    def test_never_runs(self):
        pass


class Crash(unittest.TestCase):
    def test_ends_its_worker(self):
        if not os.environ.get("BROADCAST_TEST_WORKER"):
            self.skipTest("ends its process: only in a worker")
        os._exit(3)

    def test_after_the_crash(self):
        pass


@unittest.skip("meant to skip the class")
class SkippedClass(unittest.TestCase):
    """Python 3.12 reports its tests skipped without starting them."""

    @classmethod
    def setUpClass(cls):
        raise RuntimeError("never called")

    def test_skipped(self):
        pass


class Hang(unittest.TestCase):
    def test_hangs(self):
        if not os.environ.get("BROADCAST_TEST_WORKER"):
            self.skipTest("waits for a long time: only in a worker with a short unit timeout")
        threading.Event().wait(60)
