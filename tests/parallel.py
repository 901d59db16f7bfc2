"""Runs the suite in worker processes side by side.

`python3 -m unittest discover -s tests -t .` reaches tests/__init__.py's
load_tests(), which hands the discovered tests to ParallelSuite: its run()
starts BROADCAST_TEST_JOBS workers (`python -m tests.parallel`, by default
two per CPU, at most 8; 1 runs everything here, as unittest would), gives
each one unit at a time and replays what the workers report into
unittest's own result, a test at a time, so the runner's output, counts,
failfast and exit status are unittest's. Most of a test's time is
waiting for a server or a client process; beside each other they wait
together.

A unit is one test, or a whole class when the class or its module has
fixtures (setUpClass, setUpModule): those run once per unit. Tests unittest
made itself (an import error) run here. A unit that takes more than
BROADCAST_TEST_UNIT_TIMEOUT seconds (300) ends its worker with the
tracebacks of all its threads: a hung test fails, it does not hang the run.

The protocol is JSON, one object a line: the runner writes a unit (a list
of test ids) to a worker's stdin; the worker writes events on its original
stdout (what the tests print goes to stderr) and {"done": true} after each
unit; an empty line ends it.
"""

import faulthandler
import json
import os
import queue
import subprocess
import sys
import threading
import traceback
import unittest
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FromWorker(Exception):
    """An error a worker reported, as it formatted it."""


class FailureFromWorker(AssertionError):
    """A failure a worker reported, as it formatted it."""


class Described:
    """Stands for what has no test object here: a subtest, a class fixture."""

    failureException = AssertionError

    def __init__(self, description: str, test_id: Optional[str] = None) -> None:
        self.description = description
        self.test_id = test_id or description

    def id(self) -> str:
        return self.test_id

    def shortDescription(self) -> None:
        return None

    def __str__(self) -> str:
        return self.description


def jobs_wanted() -> int:
    text = os.environ.get("BROADCAST_TEST_JOBS", "")
    if text.strip():
        try:
            return max(1, int(text))
        except ValueError:
            raise SystemExit("BROADCAST_TEST_JOBS must be a number of processes, not %r" % text)
    return min(8, 2 * (os.cpu_count() or 1))


def unit_timeout() -> float:
    """Seconds a worker may spend on one unit (BROADCAST_TEST_UNIT_TIMEOUT)."""
    try:
        return float(os.environ.get("BROADCAST_TEST_UNIT_TIMEOUT", "") or 300)
    except ValueError:
        return 300.0


def flatten(suite) -> List[unittest.TestCase]:
    tests = []
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            tests.extend(flatten(item))
        else:
            tests.append(item)
    return tests


def has_fixtures(test: unittest.TestCase) -> bool:
    cls = type(test)
    module = sys.modules.get(cls.__module__)
    if module is not None and (hasattr(module, "setUpModule") or hasattr(module, "tearDownModule")):
        return True
    for name in ("setUpClass", "tearDownClass"):
        if getattr(cls, name).__func__ is not getattr(unittest.TestCase, name).__func__:
            return True
    return False


# Modules whose units take seconds each (a browser, a benchmark, real
# timeouts, a terminal client): handed out first, so that the run does not
# end waiting for one of them begun last. Only the order depends on this.
SLOW_FIRST = ("tests.test_browser", "tests.test_bench", "tests.test_attacks",
              "tests.test_client", "tests.test_cluster", "tests.test_resume")


def units_of(tests: List[unittest.TestCase]) -> List[List[unittest.TestCase]]:
    """Tests in units that a worker runs whole: the slow modules' first,
    then in discovery order."""
    units = []              # type: List[List[unittest.TestCase]]
    by_class = {}           # type: Dict[type, List[unittest.TestCase]]
    for test in tests:
        if has_fixtures(test):
            if type(test) not in by_class:
                by_class[type(test)] = []
                units.append(by_class[type(test)])
            by_class[type(test)].append(test)
        else:
            units.append([test])

    def rank(unit: List[unittest.TestCase]) -> int:
        module = type(unit[0]).__module__
        return SLOW_FIRST.index(module) if module in SLOW_FIRST else len(SLOW_FIRST)
    return sorted(units, key=rank)      # stable: discovery order within a rank


def runs_here(test) -> bool:
    """Tests a worker could not load by name: unittest's own (a module that
    failed to import becomes one), anything not a TestCase."""
    return (not isinstance(test, unittest.TestCase)
            or type(test).__module__.split(".")[0] == "unittest")


class Worker:
    """One worker process and the thread that reads its events."""

    def __init__(self, events: "queue.Queue", stderr=None) -> None:
        self.stderr = stderr
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.parallel"], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)
        self.unit = None        # type: Optional[List[unittest.TestCase]]
        self.reader = threading.Thread(target=self._read, args=(events,), daemon=True)
        self.reader.start()

    def _read(self, events: "queue.Queue") -> None:
        """Its events, then None once it has ended (or wrote what is no event)."""
        try:
            for line in self.proc.stdout:
                line = line.strip()
                if line:
                    events.put((self, json.loads(line.decode("utf-8"))))
        except ValueError:
            self.proc.kill()
        finally:
            self.proc.stdout.close()
            events.put((self, None))

    def give(self, unit: List[unittest.TestCase]) -> None:
        """Its next unit; if it has ended meanwhile, its end reports the unit."""
        self.unit = unit
        try:
            self.proc.stdin.write(json.dumps([test.id() for test in unit]).encode("ascii") + b"\n")
            self.proc.stdin.flush()
        except OSError:
            pass

    def finish(self) -> None:
        """No more units: the worker ends once the one it has is done."""
        if self.proc.stdin.closed:
            return
        try:
            self.proc.stdin.write(b"\n")
            self.proc.stdin.close()
        except OSError:
            pass

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class ParallelSuite(unittest.TestSuite):
    jobs = None     # type: Optional[int]   None: jobs_wanted()
    worker_stderr = None    # where the workers' stderr goes; None: this process's

    def run(self, result, debug: bool = False):
        tests = flatten(self)
        jobs = self.jobs or jobs_wanted()
        here = [test for test in tests if runs_here(test)]
        units = units_of([test for test in tests if not runs_here(test)])
        if jobs <= 1 or debug or len(units) <= 1:
            return unittest.TestSuite(tests).run(result, debug)
        if here:
            unittest.TestSuite(here).run(result)
        by_id = {test.id(): test for unit in units for test in unit}
        events = queue.Queue()      # type: queue.Queue
        workers = [Worker(events, self.worker_stderr) for _ in range(min(jobs, len(units)))]
        pending = list(reversed(units))
        running = {}    # type: Dict[Worker, dict]   per worker: its test's events, the ids done
        try:
            for worker in workers:
                worker.give(pending.pop())
                running[worker] = {"events": [], "done": set()}
            while running:
                worker, event = events.get()
                state = running[worker]
                if event is None or event.get("done"):
                    if event is None:
                        self._lost(result, worker, state)
                        del running[worker]
                        if pending and not result.shouldStop:
                            fresh = Worker(events, worker.stderr)
                            workers.append(fresh)
                            fresh.give(pending.pop())
                            running[fresh] = {"events": [], "done": set()}
                        continue
                    if pending and not result.shouldStop:
                        worker.give(pending.pop())
                    else:
                        worker.finish()
                        worker.unit = None
                    continue
                self._take(result, state, event, by_id)
        finally:
            for worker in workers:
                worker.finish()
            for worker in workers:
                if worker.proc.poll() is None:
                    try:
                        worker.proc.wait(timeout=5 if not result.shouldStop else 0.1)
                    except subprocess.TimeoutExpired:
                        pass
                worker.kill()
        return result

    @staticmethod
    def _take(result, state: dict, event: dict, by_id: Dict[str, unittest.TestCase]) -> None:
        """Keep a test's events until it stops, then replay them at once, so
        that tests of two workers never mix in the output."""
        if event["event"] == "fixture":     # a setUpClass or the like that failed
            replay(result, Described(event["id"]), [event])
            return
        state["events"].append(event)
        if event["event"] == "stop":
            test = by_id.get(event["id"]) or Described(event["id"])
            state["done"].add(event["id"])
            replay(result, test, state["events"])
            state["events"] = []

    @staticmethod
    def _lost(result, worker: Worker, state: dict) -> None:
        """A worker ended in the middle of a unit: what did not finish is an error."""
        status = worker.proc.wait()
        text = ("the worker process running it ended (exit status %s); if the test took "
                "more than %g s, the tracebacks of its threads are in the output above"
                % (status, unit_timeout()))
        for test in worker.unit or []:
            if test.id() not in state["done"]:
                replay(result, test, [{"event": "start"}, {"event": "error", "text": text},
                                      {"event": "stop"}])
        worker.unit = None


def replay(result, test, events: List[dict]) -> None:
    """One test's events, from its start (if unittest started it: 3.12 does
    not for a skipped class) to its stop."""
    for event in events:
        kind = event["event"]
        if kind == "start":
            result.startTest(test)
        elif kind == "stop":
            result.stopTest(test)
        elif kind == "fixture":
            result.addError(test, error(event))
        elif kind == "success":
            result.addSuccess(test)
        elif kind == "failure":
            result.addFailure(test, error(event))
        elif kind == "error":
            result.addError(test, error(event))
        elif kind == "skip":
            result.addSkip(test, event["reason"])
        elif kind == "expectedFailure":
            result.addExpectedFailure(test, error(event))
        elif kind == "unexpectedSuccess":
            result.addUnexpectedSuccess(test)
        elif kind == "subtest":
            subtest = Described(event["subtest"], event["id"])
            result.addSubTest(test, subtest, error(event) if "text" in event else None)
        elif kind == "duration" and hasattr(result, "addDuration"):
            result.addDuration(test, event["seconds"])


def error(event: dict):
    kind = FailureFromWorker if event.get("failure") else FromWorker
    return (kind, kind("in a worker process:\n" + event["text"].rstrip()), None)


# -- the worker ------------------------------------------------------------

class Reporter(unittest.TestResult):
    """A result that writes each event to the runner."""

    def __init__(self, out) -> None:
        super().__init__()
        self.out = out

    def emit(self, test, **event) -> None:
        event["id"] = event.get("id") or test.id()
        self.out.write(json.dumps(event).encode("utf-8") + b"\n")
        self.out.flush()

    def text(self, err, test) -> str:
        return self._exc_info_to_string(err, test)

    def startTest(self, test) -> None:
        super().startTest(test)
        self.emit(test, event="start")

    def stopTest(self, test) -> None:
        super().stopTest(test)
        self.emit(test, event="stop")

    def addSuccess(self, test) -> None:
        self.emit(test, event="success")

    def addFailure(self, test, err) -> None:
        self.emit(test, event="failure", failure=True, text=self.text(err, test))

    def addError(self, test, err) -> None:
        if not isinstance(test, unittest.TestCase):     # a class or module fixture
            self.emit(test, event="fixture", id=str(test), text=self.text(err, test))
        else:
            self.emit(test, event="error", text=self.text(err, test))

    def addSkip(self, test, reason) -> None:
        self.emit(test, event="skip", reason=reason)

    def addExpectedFailure(self, test, err) -> None:
        self.emit(test, event="expectedFailure", text=self.text(err, test))

    def addUnexpectedSuccess(self, test) -> None:
        self.emit(test, event="unexpectedSuccess")

    def addSubTest(self, test, subtest, err) -> None:
        if err is None:
            self.emit(test, event="subtest", subtest=str(subtest), id=subtest.id())
        else:
            failure = issubclass(err[0], test.failureException)
            self.emit(test, event="subtest", subtest=str(subtest), id=subtest.id(), failure=failure,
                      text=self.text(err, subtest))

    def addDuration(self, test, elapsed) -> None:
        self.emit(test, event="duration", seconds=elapsed)


def work() -> None:
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())   # what tests print goes to stderr
    sys.stdout = sys.stderr
    os.environ["BROADCAST_TEST_WORKER"] = "1"
    loader = unittest.TestLoader()
    for line in sys.stdin.buffer:
        if not line.strip():
            break
        ids = json.loads(line.decode("ascii"))
        reporter = Reporter(out)
        # A test that hangs ends its worker, with every thread's traceback
        # on stderr, instead of holding up the run for good.
        faulthandler.dump_traceback_later(unit_timeout(), exit=True)
        try:
            suite = unittest.TestSuite(loader.loadTestsFromName(test_id) for test_id in ids)
            suite.run(reporter)
        except Exception:
            reporter.emit(None, event="fixture", id="loading %s" % ", ".join(ids),
                          text=traceback.format_exc())
        finally:
            faulthandler.cancel_dump_traceback_later()
        reporter.out.write(b'{"done": true}\n')
        reporter.out.flush()


if __name__ == "__main__":
    work()
