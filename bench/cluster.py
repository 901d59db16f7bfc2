#!/usr/bin/env python3
"""Cluster benchmark for Broadcast Chat: one server against servers joined by Redis.

    python3 bench/cluster.py                         # every scenario, 2 nodes
    python3 bench/cluster.py --quick                 # a smoke run of a second or so each
    python3 bench/cluster.py --scenario flat,paced --nodes 3

Each scenario runs against three set-ups, each started afresh (its own
redis-server on a free port of 127.0.0.1, its own servers, each with its
own --clients-file, in a temporary folder removed at the end):

  1 server          server.py alone, no Redis
  1 server+redis    server.py --redis: the same room, but every line makes
                    the hop through Redis (the hop's cost alone)
  N servers+redis   N servers on N ports joined by one Redis; the clients
                    alternate between the servers' ports (and so do the
                    senders), so most lines cross from one server to another

Scenarios (bench/fanout.py's workers and checks, see its docstring):
  flat    100 clients, 10 sending flat out: delivered lines/s, lost /
          duplicated / out-of-order / mangled lines, CPU of every server
          process and of redis-server.
  paced   100 clients, 10 senders at 100 lines/s: latency p50 / p99 / max.
          The target: the Redis hop adds under 2 ms to p99.
  many    N x 5,000 named clients (5,000 on each server) register, then one
          line to all: time to register, p99 latency of that line, server
          RSS per client.

Protection is off as in bench/fanout.py (--rate-limit 0 and so on).
Everything this starts is stopped at the end, also on an error or Ctrl-C.
Standard library only; Linux (it reads /proc), with redis-server on PATH.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from fanout import (HOST, QUEUE_LIMIT, SERVER, Target, describe_fanout, fmt,  # noqa: E402
                    free_port, gen_note, load_average, proc_cpu, proc_mem, raise_file_limit,
                    ratio, run_fanout, run_many, show_summary, spoiled)

REDIS_SERVER = shutil.which("redis-server")
# Seconds between the last client's welcome and the SYNC lines: a server
# announces a join about 50 ms after the welcome, and in a cluster a line
# relayed by another server may overtake that announcement, which a sender
# would then count as an extra line. Every set-up waits the same.
SETTLE = 0.3
STARTED = []        # every process this started, stopped in main()'s finally
# A line of a server's log that tells of trouble (the level is the third word).
PROBLEM = re.compile(r"^\S+ \S+ (error|refuse)\b|Traceback|Exception|too slow", re.I)


def command_line(args):
    """args as a shell would take them (shlex.join is new in 3.8)."""
    return " ".join(shlex.quote(str(arg)) for arg in args)


def stop_processes(procs, grace=5):
    """SIGTERM to all at once (a server leaving a cluster takes a while),
    then wait for each; SIGKILL for one still there after grace seconds."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(0.01, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop_process(proc, grace=5):
    stop_processes([proc], grace)


def tail(path, n=600):
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode("utf-8", "replace").strip()
    except OSError:
        return ""


class RedisProcess:
    """redis-server on a free port of 127.0.0.1, ready once it answers PING."""

    def __init__(self, tmpdir):
        self.folder = tempfile.mkdtemp(prefix="redis-", dir=tmpdir)
        self.log = os.path.join(self.folder, "redis.log")
        for attempt in range(5):        # another process may take the free port first
            self.port = free_port()
            self.cmd = [REDIS_SERVER, "--port", str(self.port), "--bind", HOST, "--save", "",
                        "--appendonly", "no", "--dir", self.folder]
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT)
            STARTED.append(self.proc)
            if self._wait_ready(10):
                break
            stop_process(self.proc)
        else:
            raise RuntimeError("redis-server did not start: %s" % tail(self.log))
        self.pid = self.proc.pid
        self.url = "redis://%s:%d/0" % (HOST, self.port)

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with socket.create_connection((HOST, self.port), 1) as s:
                    s.settimeout(1)
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def cpu(self):
        return proc_cpu(self.pid)

    def stop(self):
        stop_process(self.proc)


class Node:
    """One of our servers, with --redis URL --node NAME when url is given;
    its stdout and stderr go to files, read for the readiness lines."""

    def __init__(self, name, tmpdir, url=None):
        self.name = name
        self.out = os.path.join(tmpdir, "%s.out" % name)
        self.err = os.path.join(tmpdir, "%s.err" % name)
        self.cmd = Target.ours_command(os.path.join(tmpdir, "clients-%s.json" % name))
        if url:
            self.cmd += ["--redis", url, "--node", name]
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, cwd=tmpdir)
        STARTED.append(self.proc)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 30
        self.port = None
        joined = not url
        while True:
            text = tail(self.out, 1 << 20)
            match = re.search(r"Server running on \[?([^\]\s]*)\]?:(\d+)", text)
            if match:
                self.port = int(match.group(2))
            if url and re.search(r"joined the cluster (again )?as %s\b" % re.escape(name), text):
                joined = True
            if self.port and joined:
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                stop_process(self.proc)
                raise RuntimeError("server %s did not %s: %s %s" % (
                    name, "start" if not self.port else "join the cluster",
                    tail(self.out), tail(self.err)))
            time.sleep(0.02)

    def problems(self):
        """Lines of its log that tell of trouble, and everything on stderr."""
        found = []
        try:
            with open(self.out, "r", errors="replace") as f:
                found = [line.rstrip() for line in f if PROBLEM.search(line)]
        except OSError:
            pass
        err = tail(self.err, 4000)
        if err:
            found += ["stderr: " + line for line in err.splitlines()]
        return found


class Setup:
    """One set-up under test, in the shape of fanout.Target: kind "ours"
    (clients /nick), port (the first server's), ports (all), cpu() (the
    servers' sum), cpu_parts() (each server and redis-server), hwm() and
    rss() (the servers' sum), alive(), stop()."""

    kind = "ours"

    def __init__(self, label, nodes, use_redis, tmpdir):
        self.label = label
        self.folder = tempfile.mkdtemp(prefix="setup-", dir=tmpdir)
        self.redis = RedisProcess(self.folder) if use_redis else None
        self.nodes = []
        try:
            for k in range(nodes):
                self.nodes.append(Node("n%d" % (k + 1), self.folder,
                                       self.redis.url if self.redis else None))
        except BaseException:
            self.stop()
            raise
        self.port = self.nodes[0].port
        self.ports = [n.port for n in self.nodes]
        self.pid = self.nodes[0].pid

    def cpu(self):
        return sum(proc_cpu(n.pid) for n in self.nodes)

    def cpu_parts(self):
        parts = {n.name: proc_cpu(n.pid) for n in self.nodes}
        if self.redis:
            parts["redis"] = self.redis.cpu()
        return parts

    def hwm(self):
        return sum(proc_mem(n.pid, "VmHWM") for n in self.nodes)

    def rss(self):
        return sum(proc_mem(n.pid, "VmRSS") for n in self.nodes)

    def alive(self):
        return all(n.proc.poll() is None for n in self.nodes) and (
            self.redis is None or self.redis.proc.poll() is None)

    def died(self):
        dead = ["%s exited with status %s" % (n.name, n.proc.poll())
                for n in self.nodes if n.proc.poll() is not None]
        if self.redis and self.redis.proc.poll() is not None:
            dead.append("redis-server exited with status %s" % self.redis.proc.poll())
        return "; ".join(dead) or None

    def problems(self):
        return {n.name: n.problems() for n in self.nodes}

    def commands(self):
        out = ([command_line(self.redis.cmd)] if self.redis else [])
        return out + [command_line(n.cmd) for n in self.nodes]

    def stop(self):
        stop_processes([n.proc for n in self.nodes])
        if self.redis:      # after the servers: they leave the cluster on the way out
            self.redis.stop()


def cpu_line(res, echo):
    """Each process's CPU over the run, as a share of a core while lines flowed."""
    span = res.get("span") or res.get("wall_s") or 0
    parts = res.get("cpu_parts", {})
    text = ", ".join("%s %.2f s = %.0f%%" % (k, v, 100 * v / span if span else 0)
                     for k, v in sorted(parts.items(), key=lambda kv: (kv[0] == "redis", kv[0])))
    hot = [k for k, v in parts.items() if span and v / span > 0.9]
    echo("  [%s] CPU of a core over the %.2f s of delivery: %s%s" % (
        res["target"], span, text,
        ("  -- %s SATURATED a core" % ", ".join(sorted(hot))) if hot else ""))
    return hot


class Table:
    """fanout.Report's table, with one column per set-up."""

    def __init__(self, echo, labels):
        self.echo = echo
        self.labels = labels
        self.rows = []

    def row(self, scenario, metric, values, spec="%.1f", better="high"):
        first, last = values[0], values[-1]
        r = ratio(last, first) if all(isinstance(v, (int, float)) for v in (first, last)) else "-"
        if r != "-":
            r += " (higher better)" if better == "high" else " (lower better)"
        self.rows.append([scenario, metric] + [fmt(v, spec) for v in values] + [r])

    def show(self):
        head = ["scenario", "metric"] + self.labels + ["%s / %s" % (self.labels[-1], self.labels[0])]
        widths = [max(len(r[i]) for r in self.rows + [head]) for i in range(len(head))]
        line = "  ".join("%-*s" % (w, h) for w, h in zip(widths, head))
        self.echo(line)
        self.echo("-" * len(line))
        for r in self.rows:
            self.echo("  ".join("%-*s" % (w, c) for w, c in zip(widths, r)))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="cluster.py", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: few clients, about a second each")
    ap.add_argument("--scenario", default="flat,paced,many",
                    help="comma-separated: flat,paced,many (default all)")
    ap.add_argument("--nodes", type=int, default=2, help="servers in the cluster (default 2)")
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--senders", type=int, default=10)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds of sending (default 3)")
    ap.add_argument("--rate", type=float, default=100.0, help="paced lines/s per sender (default 100)")
    ap.add_argument("--check", type=int, default=2,
                    help="receivers that parse every line in the flat run (the others add up "
                         "bytes); they alternate between the servers too")
    ap.add_argument("--many-per-node", type=int, default=5000,
                    help="clients on each server of the cluster in the many scenario (default "
                         "5000; the single server gets them all)")
    ap.add_argument("--procs", type=int, default=2, help="receiver worker processes")
    ap.add_argument("--server", default=SERVER, metavar="PATH",
                    help="the server.py to measure (default: the one beside bench/)")
    ap.add_argument("--server-args", default="", metavar="'OPTIONS'",
                    help="more options for every server, e.g. '--history 0'")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args(argv)
    echo = lambda s="": print(s, flush=True)
    scenarios = [s.strip() for s in args.scenario.split(",") if s.strip()]
    for s in scenarios:
        if s not in ("flat", "paced", "many"):
            ap.error("unknown scenario %s" % s)
    if args.nodes < 1:
        ap.error("--nodes must be at least 1")
    if not REDIS_SERVER:
        ap.error("redis-server is not installed (apt-get install redis-server)")
    if not os.path.exists("/proc/self/stat"):
        ap.error("this benchmark reads /proc: Linux only")
    q = args.quick
    clients, senders = (6, 2) if q else (args.clients, args.senders)
    duration = 0.4 if q else args.duration
    flat_duration = 0.1 if q else args.duration
    settle = 0.2 if q else SETTLE
    procs = 1 if q else args.procs      # fewer worker processes to spawn in a smoke run
    per_node = 25 if q else args.many_per_node
    Target.server = os.path.abspath(args.server)
    Target.server_args = shlex.split(args.server_args)
    nofile = raise_file_limit()
    n = args.nodes
    setups = [("1 server", 1, False), ("1 server+redis", 1, True)]
    if n > 1:
        setups.append(("%d servers+redis" % n, n, True))
    labels = [s[0] for s in setups]

    # SIGTERM (and SIGHUP) as Ctrl-C: the finally below stops what was started.
    def interrupted(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)

    version = subprocess.run([REDIS_SERVER, "--version"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT).stdout.decode("utf-8", "replace").strip()
    echo("Broadcast Chat cluster benchmark: %d CPUs, Python %s, RLIMIT_NOFILE %d, %d nodes"
         % (os.cpu_count() or 0, sys.version.split()[0], nofile, n))
    echo("redis: %s" % version)
    echo("command: %s" % command_line([sys.executable] + sys.argv))
    echo("settings: clients %d, senders %d, flat %.1f s, paced %g lines/s per sender for %.1f s, "
         "many %d per server, checking clients %d, receiver workers %d"
         % (clients, senders, flat_duration, args.rate, duration, per_node, args.check, procs))
    echo("set-ups: %s; clients (and senders apart) alternate between the servers' ports"
         % "; ".join(labels))
    echo("load average at start: %s (other work on the machine skews every figure)" % load_average())
    echo("PROTECTION IS OFF: every server runs with --rate-limit 0 --queue-limit %d "
         "--max-clients 0 --max-per-address 0." % QUEUE_LIMIT)
    table = Table(echo, labels)
    results = {}
    commands = {}
    problems = {}
    saturated = []
    tmpdir = tempfile.mkdtemp(prefix="chat-cluster-bench-")
    gen_worst, gen_where = 0.0, ""

    def each(scenario, func, describe):
        """func(setup) for every set-up, each started afresh and stopped
        after; describe(result) as each one ends."""
        nonlocal gen_worst, gen_where
        out = {}
        stopping = []       # the previous set-up, stopping while the next one starts

        def finish():
            for thread, setup, label in stopping:
                thread.join()
                for node, lines in setup.problems().items():
                    if lines:
                        problems.setdefault("%s, %s, %s" % (scenario, label, node), lines)
            del stopping[:]

        for label, nodes, use_redis in setups:
            setup = None
            try:
                setup = Setup(label, nodes, use_redis, tmpdir)
                commands.setdefault(label, setup.commands())
                finish()    # a server leaving a cluster takes ~0.7 s: not during a run
                res = func(setup)
                res["target"] = label
                died = setup.died()
                if died:
                    res["died"] = died
            except Exception as exc:
                res = {"target": label, "error": "%s: %s" % (type(exc).__name__, exc)}
                echo("  [%s] %s FAILED: %s" % (label, scenario, res["error"]))
            finally:
                finish()
                if setup is not None:
                    thread = threading.Thread(target=setup.stop, daemon=True)
                    thread.start()
                    stopping.append((thread, setup, label))
            out[label] = res
            if "error" not in res:
                describe(res)
                if res.get("died"):
                    echo("  [%s] DIED: %s" % (label, res["died"]))
            if res.get("gen_cpu"):
                hot = max(res["gen_cpu"])
                if hot > gen_worst and not res.get("died"):
                    gen_worst, gen_where = hot, "%s, %s" % (scenario, label)
        finish()
        return out

    def describe_flat(r):
        describe_fanout(r, echo)
        if cpu_line(r, echo):
            saturated.append("flat, " + r["target"])

    def describe_paced(r):
        describe_fanout(r, echo)
        cpu_line(r, echo)

    def describe_many(r):
        echo("  [%s] registered %d of %d in %.2f s (%d connect retries); final line "
             "reached %d of %d: p50 %.1f ms p99 %.1f ms max %.1f ms" % (
                 r["target"], r["registered"], r["clients"], r["register_s"], r["connect_errors"],
                 r["final_got"], r["final_want"], r["p50_ms"], r["p99_ms"], r["max_ms"]))
        echo("  [%s] servers' peak RSS %.1f MiB (sum) = %.1f KiB per client (%.1f KiB "
             "above the idle servers); %s" % (
                 r["target"], r["hwm_mib"], r["kib_per_client"], r["net_kib_per_client"],
                 gen_note(r["gen_cpu"])[0]))

    def values(out, key):
        return [out[label].get(key) for label in labels]

    try:
        if "flat" in scenarios:
            echo("\n== flat-out: %d clients, %d sending as fast as they can for %.1f s ==" %
                 (clients, senders, flat_duration))
            out = each("flat", lambda s: run_fanout(s, "flat", clients, senders, flat_duration,
                                                    check=args.check, procs=procs,
                                                    ports=s.ports, settle=settle),
                       describe_flat)
            results["flat"] = out
            table.row("flat-out", "delivered lines/s", values(out, "rate"), "%.0f")
            table.row("flat-out", "lines not delivered intact", [spoiled(out[l]) for l in labels], "%d", "low")
            table.row("flat-out", "lost / duplicated / out of order",
                      ["%d / %d / %d" % (out[l]["lost_total"], out[l]["dup_total"], out[l]["ooo"])
                       if "lost_total" in out[l] else None for l in labels])
            table.row("flat-out", "servers' CPU us/line", values(out, "cpu_us_per_line"), "%.4f", "low")
            table.row("flat-out", "redis-server CPU us/line",
                      [1e6 * out[l]["cpu_parts"]["redis"] / out[l]["delivered"]
                       if "redis" in out[l].get("cpu_parts", {}) and out[l].get("delivered") else None
                       for l in labels], "%.4f", "low")
            table.row("flat-out", "servers' peak RSS MiB (sum)", values(out, "hwm_mib"), "%.1f", "low")
        if "paced" in scenarios:
            echo("\n== paced: %d clients, %d senders at %g lines/s each for %.1f s ==" %
                 (clients, senders, args.rate, duration))
            out = each("paced", lambda s: run_fanout(s, "paced", clients, senders, duration,
                                                     rate=args.rate, procs=procs,
                                                     ports=s.ports, settle=settle),
                       describe_paced)
            results["paced"] = out
            table.row("paced", "latency p50 ms", values(out, "p50_ms"), "%.2f", "low")
            table.row("paced", "latency p99 ms", values(out, "p99_ms"), "%.2f", "low")
            table.row("paced", "latency max ms", values(out, "max_ms"), "%.2f", "low")
            p99 = values(out, "p99_ms")
            table.row("paced", "p99 added over 1 server ms (Redis hop target < 2)",
                      [None] + [v - p99[0] if v is not None and p99[0] is not None else None
                                for v in p99[1:]], "%+.2f", "low")
            table.row("paced", "delivery %", values(out, "delivery_pct"), "%.2f")
            table.row("paced", "lost / duplicated / out of order",
                      ["%d / %d / %d" % (out[l]["lost_total"], out[l]["dup_total"], out[l]["ooo"])
                       if "lost_total" in out[l] else None for l in labels])
            a, b = out[labels[0]].get("p99_ms"), out[labels[1]].get("p99_ms")
            if a is not None and b is not None:
                hop = b - a
                echo("  Redis hop on paced p99: %+.2f ms (%s minus %s; target under 2 ms): %s"
                     % (hop, labels[1], labels[0], "MET" if hop < 2.0 else "NOT MET"))
                results["paced"]["redis_hop_p99_ms"] = hop
        if "many" in scenarios:
            total = per_node * n
            echo("\n== many: %d clients (%d on each of %d servers; the single server gets all), "
                 "each /nick and announced, then one line to all ==" % (total, per_node, n))
            out = each("many", lambda s: run_many(s, total, procs, ports=s.ports), describe_many)
            results["many"] = out
            name = "many (%d)" % total
            table.row(name, "all registered s", values(out, "register_s"), "%.2f", "low")
            table.row(name, "final line reached", ["%d of %d" % (out[l]["final_got"], out[l]["final_want"])
                                                   if "final_got" in out[l] else None for l in labels])
            table.row(name, "one line to all p99 ms", values(out, "p99_ms"), "%.1f", "low")
            table.row(name, "peak KiB per client", values(out, "kib_per_client"), "%.1f", "low")
    finally:
        stop_processes(STARTED)
        shutil.rmtree(tmpdir, ignore_errors=True)
    echo("\n== commands (ports and folders differ from run to run) ==")
    for label in labels:
        for cmd in commands.get(label, []):
            echo("  [%s] %s" % (label, cmd))
    echo("\n== server logs: lines at error / refuse level, tracebacks, stderr ==")
    if not problems:
        echo("  none")
    for where, lines in problems.items():
        echo("  [%s] %d lines%s" % (where, len(lines), ", the first 5:" if len(lines) > 5 else ":"))
        for line in lines[:5]:
            echo("    " + line)
    show_summary(echo, table, gen_worst, gen_where)
    if saturated:
        echo("a server or redis-server saturated a core in: %s (expected flat out: the "
             "servers are the bottleneck there)" % "; ".join(saturated))
    if args.json:
        results["problems"] = problems
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: everything started was stopped", file=sys.stderr)
        sys.exit(130)
