"""The parallel runner (tests/parallel.py) against tests meant to pass,
fail, skip and crash (tests/parallel_samples.py): what it reports is what
unittest alone reports."""

import os
import subprocess
import unittest
from unittest import mock

from tests import parallel


def run(names, jobs):
    loader = unittest.TestLoader()
    suite = parallel.ParallelSuite(loader.loadTestsFromName(name) for name in names)
    suite.jobs = jobs
    suite.worker_stderr = subprocess.DEVNULL    # the samples' tracebacks are no news
    result = unittest.TestResult()
    suite.run(result)
    return result


def summary(result):
    ids = lambda pairs: sorted(test.id() for test, _ in pairs)
    return {"run": result.testsRun, "failures": ids(result.failures), "errors": ids(result.errors),
            "skipped": ids(result.skipped), "expected": ids(result.expectedFailures),
            "unexpected": sorted(test.id() for test in result.unexpectedSuccesses)}


class ParallelSuiteTest(unittest.TestCase):
    def test_reports_what_unittest_alone_reports(self):
        names = ["tests.parallel_samples.Outcomes", "tests.parallel_samples.SharedFixture",
                 "tests.parallel_samples.BrokenFixture", "tests.parallel_samples.SkippedClass"]
        alone, side_by_side = summary(run(names, 1)), summary(run(names, 3))
        self.assertEqual(side_by_side, alone)
        # What the samples are, so that the comparison compares something.
        self.assertIn(alone["run"], (9, 10))         # 3.12 does not count a skipped class's
        self.assertIn("tests.parallel_samples.SkippedClass.test_skipped", alone["skipped"])
        self.assertEqual(len(alone["failures"]), 2)     # test_fails and a subtest
        self.assertTrue(any("BrokenFixture" in name for name in alone["errors"]), alone)
        self.assertIn("tests.parallel_samples.Outcomes.test_unexpected_success",
                      alone["unexpected"])

    def test_a_failure_comes_with_the_workers_traceback(self):
        result = run(["tests.parallel_samples.Outcomes.test_fails",
                      "tests.parallel_samples.Outcomes.test_errors"], 2)
        (_, failure), = result.failures
        (_, error), = result.errors
        self.assertIn("meant to fail", failure)
        self.assertIn('raise RuntimeError("meant to error")', error)

    def test_a_worker_that_dies_fails_its_test_and_the_rest_go_on(self):
        result = run(["tests.parallel_samples.Crash", "tests.parallel_samples.Outcomes.test_passes",
                      "tests.parallel_samples.SharedFixture"], 2)
        self.assertEqual(result.testsRun, 5)
        (test, text), = result.errors
        self.assertEqual(test.id(), "tests.parallel_samples.Crash.test_ends_its_worker")
        self.assertIn("exit status 3", text)
        self.assertEqual(result.failures, [])

    def test_a_module_that_does_not_import_is_an_error_here(self):
        result = run(["tests.no_such_module", "tests.parallel_samples.Outcomes.test_passes"], 2)
        self.assertEqual(result.testsRun, 2)
        (_, text), = result.errors
        self.assertIn("no_such_module", text)

    def test_a_test_that_hangs_ends_its_worker_after_the_unit_timeout(self):
        with mock.patch.dict(os.environ, {"BROADCAST_TEST_UNIT_TIMEOUT": "1"}):
            result = run(["tests.parallel_samples.Hang",
                          "tests.parallel_samples.Outcomes.test_passes"], 2)
        self.assertEqual(result.testsRun, 2)
        (test, text), = result.errors
        self.assertEqual(test.id(), "tests.parallel_samples.Hang.test_hangs")
        self.assertIn("more than 1 s", text)
