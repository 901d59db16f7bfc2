"""The test suite: `python3 -m unittest discover -s tests -t .` runs it in
worker processes side by side (tests/parallel.py; BROADCAST_TEST_JOBS=1
runs it in one process)."""

import os


def load_tests(loader, standard_tests, pattern):
    from tests.parallel import ParallelSuite
    here = os.path.dirname(os.path.abspath(__file__))
    suite = ParallelSuite(standard_tests)
    suite.addTests(loader.discover(start_dir=here, pattern=pattern or "test*.py",
                                   top_level_dir=os.path.dirname(here)))
    return suite
