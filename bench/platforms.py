#!/usr/bin/env python3
"""Three figures that run the same on Linux and on Windows (or under Wine),
to set the two side by side:

    python3 bench/platforms.py                 # every scenario
    .ci/windows-python bench/platforms.py      # the same with Windows CPython
    python3 bench/platforms.py --scenario stuck --clients 500

  stuck    one member that never reads beside healthy ones, a sender at a
           steady rate: the healthy members' delivery and latency, and
           whether the stuck one was dropped.
  slow     600 members that stop reading (more than Windows' select() takes)
           beside 3 healthy ones: delivery, and every slow one dropped.
  many     N members (default 1,000) named one after another, then one line
           to all: time to register, the line's latency p50 / p99 / max.
  holder   clients.json while a reader keeps opening it and holding it for
           a while (on Windows this blocks its replacement): how stale the
           file gets after a join, and whether any read saw a broken file.

It starts server.py itself with this Python (or --server-python), on 127.0.0.1. The load runs
in this process (one thread reading every socket), so on a machine with
few cores it competes with the server: the figures are an upper bound of
the server's own latency. Standard library only.
"""

import argparse
import json
import os
import re
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from broadcast_chat.tuning import many_socket_selector   # noqa: E402

DATA = re.compile(rb"<[^ >]+> D(\d+) (\d+)")


class Server:
    python = sys.executable     # --server-python

    def __init__(self, *args: str) -> None:
        self.folder = tempfile.TemporaryDirectory(prefix="chat-bench-")
        self.clients_file = os.path.join(self.folder.name, "clients.json")
        self.proc = subprocess.Popen(
            [self.python, os.path.join(ROOT, "server.py"), "--port", "0",
             "--clients-file", self.clients_file] + list(args),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            cwd=self.folder.name)
        self.log = []
        first = self.proc.stdout.readline().decode("utf-8", "replace")
        match = re.search(r"Server running on \S+:(\d+)", first)
        if not match:
            raise SystemExit("the server did not start: %r" % first)
        self.port = int(match.group(1))
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for raw in iter(self.proc.stdout.readline, b""):
            self.log.append(raw.decode("utf-8", "replace").rstrip("\r\n"))

    def connect(self, name: str, rcvbuf: int = 0) -> socket.socket:
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect(("127.0.0.1", self.port))
        sock.sendall(("/nick %s\n" % name).encode())
        return sock

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.folder.cleanup()


def wait_for(sock: socket.socket, text: bytes, timeout: float = 30.0) -> None:
    """Read sock until text has come (blocking, with a deadline)."""
    sock.settimeout(timeout)
    seen = b""
    while text not in seen:
        data = sock.recv(65536)
        if not data:
            raise SystemExit("connection closed while waiting for %r" % text)
        seen = seen[-len(text):] + data


class Receivers(threading.Thread):
    """Reads every socket given; records when each data line arrived."""

    def __init__(self, socks) -> None:
        super().__init__(daemon=True)
        self.selector = many_socket_selector()
        self.rest = {}
        self.arrivals = {}      # seq -> [latency seconds, ...]
        self.lock = threading.Lock()
        self.stopping = False
        for sock in socks:
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, sock)
            self.rest[sock] = b""

    def run(self) -> None:
        while not self.stopping:
            for key, _ in self.selector.select(0.1):
                sock = key.data
                try:
                    data = sock.recv(262144)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                now = time.perf_counter()
                if not data:
                    self.selector.unregister(sock)
                    continue
                *lines, self.rest[sock] = (self.rest[sock] + data).split(b"\n")
                with self.lock:
                    for line in lines:
                        match = DATA.search(line)
                        if match:
                            sent = int(match.group(2)) / 1e6
                            self.arrivals.setdefault(int(match.group(1)), []).append(now - sent)

    def latencies(self):
        with self.lock:
            return [x for values in self.arrivals.values() for x in values]


def percentile(values, share):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(share * len(values)))]


def send_paced(sock: socket.socket, count: int, rate: float, pad: int) -> None:
    started = time.perf_counter()
    for seq in range(count):
        due = started + seq / rate
        while time.perf_counter() < due:
            time.sleep(min(0.002, max(0.0, due - time.perf_counter())))   # pacing
        line = "D%d %d %s\n" % (seq, time.perf_counter() * 1e6, "." * pad)
        sock.sendall(line.encode())


def stuck(args) -> dict:
    server = Server("--rate-limit", "0", "--queue-limit", str(args.queue_limit))
    try:
        stuck_sock = server.connect("stuck", rcvbuf=4096)
        healthy = [server.connect("h%d" % i) for i in range(args.healthy)]
        for sock in healthy:
            wait_for(sock, b"welcome")
        sender = server.connect("sender")
        wait_for(sender, b"welcome")
        receivers = Receivers(healthy)
        receivers.start()
        count = int(args.rate * args.seconds)
        send_paced(sender, count, args.rate, args.pad)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(receivers.latencies()) < count * len(healthy):
            time.sleep(0.05)    # waiting for the last lines, with a deadline
        receivers.stopping = True
        receivers.join()
        latencies = receivers.latencies()
        dropped = any("stuck" in line and "too slow" in line for line in server.log)
        stuck_sock.close()
        return {"scenario": "stuck", "healthy": len(healthy), "lines": count,
                "rate": args.rate, "bytes_per_line": args.pad + 20, "mb_sent": round(count * (args.pad + 20) / 1e6, 1),
                "delivery_pct": round(100.0 * len(latencies) / (count * len(healthy)), 2),
                "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
                "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
                "max_ms": round(max(latencies) * 1000, 2) if latencies else None,
                "stuck_dropped": dropped}
    finally:
        server.close()


def slow(args) -> dict:
    """More readers that stop reading than Windows' select() takes (512):
    the Writer watches them all until each is dropped past its queue limit."""
    server = Server("--rate-limit", "0", "--max-clients", "0", "--max-per-address", "0",
                    "--queue-limit", str(args.queue_limit))
    stuck_socks = []
    try:
        for i in range(args.slow):
            stuck_socks.append(server.connect("s%d" % i, rcvbuf=4096))
            wait_for(stuck_socks[-1], b"welcome")
        healthy = [server.connect("h%d" % i) for i in range(3)]
        for sock in healthy:
            wait_for(sock, b"welcome")
        sender = server.connect("sender")
        wait_for(sender, b"welcome")
        receivers = Receivers(healthy)
        receivers.start()
        count = int(args.rate * args.seconds)
        send_paced(sender, count, args.rate, args.pad)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(receivers.latencies()) < count * len(healthy):
            time.sleep(0.05)    # waiting for the last lines, with a deadline
        receivers.stopping = True
        receivers.join()
        latencies = receivers.latencies()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sum(
                "too slow" in line for line in server.log) < args.slow:
            time.sleep(0.1)     # the drops are logged in batches
        return {"scenario": "slow", "slow": args.slow, "lines": count,
                "delivery_pct": round(100.0 * len(latencies) / (count * len(healthy)), 2),
                "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
                "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
                "dropped_too_slow": sum("too slow" in line for line in server.log),
                "server_errors": [line for line in server.log if " error " in line][:3]}
    finally:
        for sock in stuck_socks:
            sock.close()
        server.close()


def many(args) -> dict:
    server = Server("--rate-limit", "0", "--max-clients", "0", "--max-per-address", "0")
    socks = []
    try:
        started = time.perf_counter()
        for i in range(args.clients):
            socks.append(server.connect("m%d" % i))
            wait_for(socks[-1], b"welcome")
            if (i + 1) % 100 == 0:
                print("  %d registered after %.1f s" % (i + 1, time.perf_counter() - started),
                      file=sys.stderr, flush=True)
        registered = time.perf_counter() - started
        receivers = Receivers(socks[1:])
        receivers.start()
        time.sleep(1.5)     # let the join notices go out before the measured line
        sent = time.perf_counter()
        socks[0].sendall(("D0 %d\n" % (sent * 1e6)).encode())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(receivers.latencies()) < len(socks) - 1:
            time.sleep(0.01)    # waiting for the line, with a deadline
        receivers.stopping = True
        receivers.join()
        latencies = receivers.latencies()
        return {"scenario": "many", "clients": args.clients,
                "registered_s": round(registered, 2),
                "received": len(latencies),
                "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
                "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
                "max_ms": round(max(latencies) * 1000, 1) if latencies else None,
                "server_errors": [line for line in server.log if " error " in line][:3]}
    finally:
        for sock in socks:
            sock.close()
        server.close()


def holder(args) -> dict:
    server = Server("--clients-file-interval", "0.5")
    path = server.clients_file
    stop = threading.Event()
    holds = [0]

    def hold() -> None:
        while not stop.is_set():
            try:
                with open(path, encoding="utf-8"):
                    holds[0] += 1
                    time.sleep(args.hold)       # a slow reader keeping the file open
            except OSError:
                pass
            time.sleep(0.01)

    def read():
        while True:
            try:
                with open(path, encoding="utf-8") as handle:
                    return json.load(handle)
            except PermissionError:     # Windows: opened while being replaced
                time.sleep(0.001)

    holding = threading.Thread(target=hold, daemon=True)
    holding.start()
    stale, broken, socks = [], 0, []
    try:
        for i in range(args.joins):
            name = "j%d" % i
            socks.append(server.connect(name))
            wait_for(socks[-1], b"welcome")
            joined = time.perf_counter()
            while True:
                try:
                    names = [record["name"] for record in read()]
                except ValueError:
                    broken += 1
                    continue
                if name in names:
                    break
                time.sleep(0.005)   # polling the file, as a reader would
            stale.append(time.perf_counter() - joined)
        stop.set()
        return {"scenario": "holder", "joins": args.joins, "hold_s": args.hold,
                "holds": holds[0], "broken_reads": broken,
                "stale_p50_s": round(percentile(stale, 0.5), 3),
                "stale_max_s": round(max(stale), 3),
                "server_log_errors": [line for line in server.log if " error " in line][:3]}
    finally:
        stop.set()
        holding.join()
        for sock in socks:
            sock.close()
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="stuck,many,holder")
    parser.add_argument("--healthy", type=int, default=20)
    parser.add_argument("--rate", type=float, default=1000.0, help="stuck: lines/s sent")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--pad", type=int, default=1000)
    parser.add_argument("--queue-limit", type=int, default=1 << 18)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--slow", type=int, default=600, help="slow: readers that stop reading")
    parser.add_argument("--joins", type=int, default=20)
    parser.add_argument("--hold", type=float, default=0.2,
                        help="holder: seconds the reader keeps the file open each time")
    parser.add_argument("--server-python", default=sys.executable,
                        help="the Python that runs server.py (default: this one), e.g. "
                             "the Wine wrapper that `.ci/windows-python --path` prints")
    args = parser.parse_args()
    Server.python = args.server_python
    print("load: Python %s on %s; server: %s" % (sys.version.split()[0], sys.platform,
                                                 args.server_python), flush=True)
    for name in args.scenario.split(","):
        result = {"stuck": stuck, "slow": slow, "many": many, "holder": holder}[name](args)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
