"""Many clients reconnecting at once, each with a resume: does the room
stall, and what does it cost the server's memory?

    python3 bench/resume.py [--clients 10000] [--history 1000] [--spread]

Starts server.py, fills the history with --history events, then connects
--clients sockets that each send `/hello json resume=ID epoch=E` and a
/nick at once: ID is the first id kept (each replays the whole history), or
with --spread a random id in it (each a different replay). Meanwhile a
probe sends a line every 20 ms and measures how long it takes to reach a
second probe. Prints the time until every client had its replay, the
probe's latency during the storm, and the server's peak memory (VmHWM)
before and after, per client.
"""

import argparse
import json
import os
import random
import re
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(ROOT, "server.py")


def vm_kib(pid, field):
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def read_until(sock, marker, timeout=10.0):
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("closed; got %r" % data[-300:])
        data += chunk
    return data


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=2000)
    ap.add_argument("--history", type=int, default=1000, help="events in the history")
    ap.add_argument("--spread", action="store_true", help="each client resumes from "
                                                           "its own random point")
    ap.add_argument("--none", action="store_true", help="resume from the last id: "
                                                         "nothing to replay (the baseline)")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    folder = tempfile.mkdtemp(prefix="bench-resume-")
    proc = subprocess.Popen([sys.executable, SERVER, "--port", "0", "--rate-limit", "0",
                             "--max-clients", "0", "--max-per-address", "0",
                             "--history-keep", str(args.history),
                             "--clients-file", os.path.join(folder, "clients.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=folder)
    port = int(re.search(rb":(\d+)$", proc.stdout.readline().strip()).group(1))
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    try:
        run(args, proc, port)
    finally:
        proc.terminate()
        proc.wait()


def run(args, proc, port):
    filler = socket.create_connection(("127.0.0.1", port))
    filler.sendall(b"/hello json\n/nick filler\n")
    got = read_until(filler, b'"type":"hello"')
    got += read_until(filler, b"\n") if not got.endswith(b"\n") else b""
    hello = json.loads([line for line in got.split(b"\n") if b'"hello"' in line][0].decode())
    epoch = hello["epoch"]
    for number in range(args.history):
        filler.sendall(b"history line %d with some text to make it look like chat\n" % number)
    time.sleep(1.0)     # the filler's lines are ordered (no way to ask)
    probe_in = socket.create_connection(("127.0.0.1", port))
    probe_in.sendall(b"/hello json\n/nick probein\n")
    got = read_until(probe_in, b"history_end")
    got += read_until(probe_in, b"\n") if not got.endswith(b"\n") else b""
    end = [line for line in got.split(b"\n") if b'"history_end"' in line][0]
    last_id = json.loads(end.decode())["last"]
    probe_out = socket.create_connection(("127.0.0.1", port))
    probe_out.sendall(b"/nick probeout\n")
    first_id = 1
    before = vm_kib(proc.pid, "VmHWM")
    rss_before = vm_kib(proc.pid, "VmRSS")
    rng = random.Random(1)

    latencies = []
    stop = threading.Event()

    def probe():
        probe_in.settimeout(0.5)
        buffer = b""
        while not stop.is_set():
            sent = time.monotonic()
            probe_out.sendall(b"probe %r\n" % sent)
            while b"probe %r" % sent not in buffer and not stop.is_set():
                try:
                    buffer += probe_in.recv(65536)
                except socket.timeout:
                    continue
            latencies.append(time.monotonic() - sent)
            buffer = buffer[-200:]
            time.sleep(0.02)    # pacing the probe
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    time.sleep(0.3)
    base = list(latencies)

    selector = selectors.DefaultSelector()
    started = time.monotonic()
    socks = []
    for number in range(args.clients):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        after = (last_id if args.none else rng.randrange(1, last_id) if args.spread
                 else first_id)
        selector.register(sock, selectors.EVENT_WRITE, [number, b"", (
            "/hello json resume=%d epoch=%s\n/nick c%d\n" % (after, epoch, number)).encode()])
        socks.append(sock)
    done = 0
    received = 0
    while done < args.clients and time.monotonic() - started < 120:
        for key, mask in selector.select(1.0):
            state = key.data
            sock = key.fileobj
            if mask & selectors.EVENT_WRITE:
                try:
                    sock.send(state[2])
                except (BlockingIOError, OSError):
                    continue
                selector.modify(sock, selectors.EVENT_READ, state)
                continue
            try:
                chunk = sock.recv(262144)
            except BlockingIOError:
                continue
            if not chunk:
                selector.unregister(sock)
                done += 1
                continue
            received += len(chunk)
            window = state[1] + chunk
            state[1] = window[-64:]
            if b"history_end" in window or (args.none and b'"resumed"' in window):
                done += 1
                selector.unregister(sock)
    elapsed = time.monotonic() - started
    time.sleep(0.3)
    stop.set()
    thread.join(2)
    peak = vm_kib(proc.pid, "VmHWM")
    storm = latencies[len(base):]
    storm.sort()
    print("%d clients resuming (%s) from a history of %d events: all replayed in %.2f s, "
          "%.1f MB received" % (args.clients, "nothing to replay" if args.none else
                                "each its own point" if args.spread else "the same point",
                                args.history, elapsed, received / 1e6))
    if storm:
        print("probe latency during the storm: p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d probes)"
              % (storm[len(storm) // 2] * 1000, storm[int(len(storm) * 0.99)] * 1000,
                 storm[-1] * 1000, len(storm)))
    print("server memory: VmRSS before %.1f MiB, peak (VmHWM) after %.1f MiB: %.1f KiB per "
          "client" % (rss_before / 1024, peak / 1024, (peak - before) / args.clients))
    for sock in socks:
        sock.close()


if __name__ == "__main__":
    main()
