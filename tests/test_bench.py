"""Smoke tests of the benchmarks: they run, and our server loses nothing."""

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench", "fanout.py")
CLUSTER_BENCH = os.path.join(ROOT, "bench", "cluster.py")


def run_bench(test: unittest.TestCase, script: str, *args: str):
    """Run a benchmark with its --json file: (the results, what it printed),
    having checked that it succeeded and said that protection is off."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "results.json")
        proc = subprocess.run([sys.executable, script] + list(args) + ["--json", out],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        text = proc.stdout.decode("utf-8", "replace")
        test.assertEqual(proc.returncode, 0, text)
        test.assertIn("PROTECTION IS OFF", text)
        with open(out) as f:
            return json.load(f), text


@unittest.skipIf(sys.platform == "win32", "bench/fanout.py's workers select() on multiprocessing "
                 "pipes, which Windows' select() cannot watch (bench/platforms.py runs there)")
class BenchSmokeTest(unittest.TestCase):

    def test_quick_run_reports_zero_loss(self):
        results, text = run_bench(self, BENCH, "--quick", "--no-ncat")
        for scenario in ("flat", "paced", "stuck"):
            ours = results[scenario]["ours"]
            self.assertNotIn("error", ours, text)
            self.assertGreater(ours["sent"], 0, text)
            self.assertEqual(ours["delivered"], ours["expected"], text)
            for key in ("lost_total", "dup_total", "ooo", "mangled"):
                self.assertEqual(ours[key], 0, "%s %s\n%s" % (scenario, key, text))
            self.assertTrue(ours["clean"], text)
        many = results["many"]["ours"]
        self.assertEqual(many["registered"], many["clients"], text)
        self.assertEqual(many["final_got"], many["final_want"], text)
        churn = results["churn"]["ours"]
        self.assertGreater(churn["connections"], 0, text)
        self.assertTrue(churn["clients_json_empty"], text)

    def test_the_python_floor_relays_every_line_in_ncats_place(self):
        floor = os.path.join(ROOT, "bench", "floor.py")
        for mode in ("threads", "select"):
            results, text = run_bench(self, BENCH, "--quick", "--scenario", "paced", "--peer",
                                      "%s -S %s %s" % (shlex.quote(sys.executable),
                                                        shlex.quote(floor), mode))
            self.assertIn("in the ncat column: ", text)
            peer = results["paced"]["ncat"]
            self.assertNotIn("error", peer, text)
            self.assertGreater(peer["sent"], 0, text)
            self.assertEqual(peer["delivered"], peer["expected"], "%s\n%s" % (mode, text))


@unittest.skipIf(sys.platform == "win32", "bench/cluster.py reads /proc and its workers select() "
                 "on multiprocessing pipes, which Windows cannot do")
@unittest.skipUnless(shutil.which("redis-server"), "bench/cluster.py needs redis-server "
                     "(apt-get install redis-server)")
class ClusterBenchSmokeTest(unittest.TestCase):

    def test_quick_run_reports_zero_loss(self):
        results, text = run_bench(self, CLUSTER_BENCH, "--quick", "--scenario", "flat")
        for scenario in ("flat",):     # (paced, in the full run, measures; it checks the same)
            setups = [k for k in results[scenario] if k != "redis_hop_p99_ms"]
            self.assertEqual(len(setups), 3, text)      # 1 server, 1 server+redis, 2 servers+redis
            for label in setups:
                res = results[scenario][label]
                where = "%s, %s" % (scenario, label)
                self.assertNotIn("error", res, "%s\n%s" % (where, text))
                self.assertNotIn("died", res, "%s\n%s" % (where, text))
                self.assertGreater(res["sent"], 0, text)
                self.assertEqual(res["delivered"], res["expected"], "%s\n%s" % (where, text))
                for key in ("lost_total", "dup_total", "ooo", "mangled"):
                    self.assertEqual(res[key], 0, "%s %s\n%s" % (where, key, text))
                self.assertTrue(res["clean"], "%s\n%s" % (where, text))
        self.assertEqual(results["problems"], {}, text)


if __name__ == "__main__":
    unittest.main()
