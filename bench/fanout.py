#!/usr/bin/env python3
"""Fan-out benchmark for Broadcast Chat, against `ncat --chat` when installed.

    python3 bench/fanout.py                  # every scenario, ours and ncat
    python3 bench/fanout.py --quick          # a smoke run of a second or so each
    python3 bench/fanout.py --scenario flat,paced --no-ncat

It starts server.py itself (and `ncat --chat -l`), on 127.0.0.1 only, and
drives it from worker processes that use selectors; each worker measures its
own CPU and the report says if one saturated a core. So that the load
generator is not the bottleneck, in the flat run a few "checking" clients
keep what they receive and parse every line once the run is over (order,
loss, duplicates, mangling, latency), and the other receivers only add up
the bytes they read into one reused buffer: the server sends every receiver
the same stream, so each must end with exactly the checking clients' byte
count (counting newlines in every byte took more CPU than the server).

Scenarios:
  flat    N clients, M of them sending as fast as they can: delivered lines/s,
          lost / duplicated / out-of-order / mangled lines, server CPU and
          peak memory. Protection is off (--rate-limit 0 --queue-limit 64 MiB).
  paced   N clients, M senders at R lines/s each: latency p50 / p99 / max.
  stuck   a client that never reads beside healthy ones: delivery and p99.
  many    ten thousand named clients: time to register all, then one line to
          all: p99 latency; server memory per client.
  churn   connect, /nick, close, as fast as possible: connections/s; then
          clients.json must be [] again.

With --ws, flat and many run a second time with WebSocket receivers (GET /ws
on the same port; the senders and the checking clients stay line clients,
and one WebSocket receiver parses every frame and line it got).

Every data line is "D<sender> <seq> <send time in us>" so receivers can check
each sender's order and measure latency (time.monotonic: one machine).
Standard library only.
"""

import argparse
import errno
import json
import multiprocessing
import os
import re
import selectors
import shutil
import socket
import shlex
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from broadcast_chat.tuning import raise_file_limit   # noqa: E402  (the bench holds many sockets too)

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(os.path.dirname(HERE), "server.py")
HOST = "127.0.0.1"
QUEUE_LIMIT = 67108864
RECV = 262144

def load_average() -> str:
    if not hasattr(os, "getloadavg"):   # Windows
        return "not known on this platform"
    return "%.2f %.2f %.2f" % os.getloadavg()


# A data line as received: our prefix "HH:MM <name> ", ncat's "<userN> " (ncat
# puts it only at the start of each chunk it read, so it is optional).
DATA = re.compile(rb"(?:\d\d:\d\d <[^ >]+> |<user\d+> )?D(\d+) (\d+) (\d+)(?: \.+)?")
SENDER_ID = re.compile(rb"D(\d+) ")


def ws_upgrade(port):
    """A browser's opening handshake, without an Origin."""
    return (b"GET /ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (HOST.encode(), port))


def ws_text(payload):
    """A client's text frame (short payload), masked with a zero key: valid, and free."""
    return bytes((0x81, 0x80 | len(payload))) + b"\0\0\0\0" + payload


def ws_frames(data):
    """The payloads of the text frames in data (server frames, unmasked)."""
    out = []
    pos, end = 0, len(data)
    while pos + 2 <= end:
        length = data[pos + 1] & 0x7F
        head = 2
        if length == 126:
            length, head = int.from_bytes(data[pos + 2:pos + 4], "big"), 4
        elif length == 127:
            length, head = int.from_bytes(data[pos + 2:pos + 10], "big"), 10
        if pos + head + length > end:
            break
        if data[pos] & 0x0F == 1:
            out.append(data[pos + head:pos + head + length])
        pos += head + length
    return out


def now_us():
    return int(time.monotonic() * 1e6)


def cpu_self():
    t = os.times()
    return t.user + t.system


# --------------------------------------------------------------------------
# Process statistics from /proc


def proc_cpu(pid):
    """utime + stime of a process, in seconds."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def proc_mem(pid, field="VmHWM"):
    """A memory figure of /proc/PID/status, in bytes."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100.0 * (len(values) - 1)))))
    return values[k]


# --------------------------------------------------------------------------
# The servers under test


NCAT = ["ncat", "--chat", "-l"]


class Target:
    """A running chat server: ours or ncat."""

    server = SERVER     # --server PATH: measure another copy (before/after)
    server_cpus = None  # --pin: the CPUs the server runs on
    server_args = []    # --server-args: options added to ours (e.g. --history 0)
    peer_command = NCAT     # --peer: what runs in ncat's place

    @classmethod
    def ours_command(cls, clients_file, port=0):
        """The command line of our server, protection off (bench/cluster.py adds to it)."""
        return [sys.executable, cls.server, "--host", HOST, "--port", str(port),
                "--rate-limit", "0", "--queue-limit", str(QUEUE_LIMIT),
                "--max-clients", "0", "--max-per-address", "0",
                "--clients-file", clients_file] + cls.server_args

    def __init__(self, kind, tmpdir):
        self.kind = kind
        self.clients_file = os.path.join(tmpdir, "clients-%s.json" % kind)
        if kind == "ours":
            cmd = self.ours_command(self.clients_file)
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, cwd=tmpdir)
            first = self.proc.stdout.readline().decode("utf-8", "replace")
            match = re.search(r"Server running on \[?([^\]]*)\]?:(\d+)", first)
            if not match:
                err = self.proc.stderr.read().decode("utf-8", "replace")
                self.proc.kill()
                raise RuntimeError("server did not start: %r %s" % (first, err))
            self.port = int(match.group(2))
            # Drain the log so the server never blocks on a full pipe.
            for stream in (self.proc.stdout, self.proc.stderr):
                threading.Thread(target=self._drain, args=(stream,), daemon=True).start()
        elif self.peer_command != NCAT:
            # --peer (bench/floor.py): it takes a free port itself and says
            # which, so that no other process can take it in between.
            self.errfile = os.path.join(tmpdir, "peer.err")
            with open(self.errfile, "wb") as err:
                self.proc = subprocess.Popen(self.peer_command + [HOST, "0"],
                                             stdin=subprocess.DEVNULL,
                                             stdout=subprocess.PIPE, stderr=err)
            match = re.search(rb":(\d+)\s*$", self.proc.stdout.readline())
            if not match:
                self.proc.kill()
                raise RuntimeError("%s did not say its port" % " ".join(self.peer_command))
            self.port = int(match.group(1))
            threading.Thread(target=self._drain, args=(self.proc.stdout,), daemon=True).start()
        else:
            self.port = free_port()
            self.errfile = os.path.join(tmpdir, "ncat-%d.err" % self.port)
            with open(self.errfile, "wb") as err:
                self.proc = subprocess.Popen(self.peer_command + [HOST, str(self.port)],
                                             stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=err)
            deadline = time.monotonic() + 5
            while True:
                try:
                    socket.create_connection((HOST, self.port), 1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise RuntimeError("ncat did not start")
                    time.sleep(0.02)
        self.pid = self.proc.pid
        if self.server_cpus:
            os.sched_setaffinity(self.pid, self.server_cpus)     # --pin
        self.base_rss = proc_mem(self.pid, "VmRSS")

    @staticmethod
    def _drain(stream):
        try:
            while stream.read(65536):
                pass
        except (OSError, ValueError):
            pass

    def died(self):
        """None while running, else how it ended."""
        code = self.proc.poll()
        if code is None:
            return None
        text = ""
        if self.kind == "ncat":
            try:
                with open(self.errfile, "rb") as f:
                    text = f.read()[-300:].decode("utf-8", "replace").strip()
            except OSError:
                pass
        return "exited with status %s%s" % (code, (": " + text) if text else "")

    def cpu(self):
        return proc_cpu(self.pid)

    def hwm(self):
        return proc_mem(self.pid, "VmHWM")

    def rss(self):
        return proc_mem(self.pid, "VmRSS")

    def alive(self):
        return self.proc.poll() is None

    def cpu_parts(self):
        """CPU seconds of each process behind the target (one here; bench/cluster.py has more)."""
        return {self.kind: self.cpu()}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_port():
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ncat_available():
    return shutil.which("ncat") is not None


# --------------------------------------------------------------------------
# Worker processes (spawned: they hold their own sockets)


def connect_nb(port, rcvbuf=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.setblocking(False)
    err = s.connect_ex((HOST, port))
    if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
        s.close()
        raise OSError(err, os.strerror(err))
    return s


class Peer:
    """One client connection inside a worker."""

    def __init__(self, sock, role, ident, name):
        self.sock = sock
        self.role = role            # recv, check, send, stuck
        self.ident = ident          # sender id for senders
        self.name = name            # our /nick, or None
        self.buf = b""
        self.admitted = False
        self.syncs = 0
        self.counting = False
        self.lines = 0
        self.nbytes = 0             # bytes received while counting
        self.last = 0
        # sending
        self.out = b""
        self.off = 0
        self.seq = 0
        # checking, per sender
        self.nxt = {}
        self.missing = {}
        self.dup = {}
        self.ooo = {}
        self.mangled = 0
        self.chunks = []            # (receipt time, bytes) of a checking client
        self.lat = []


def fanout_worker(conn, spec):
    """Clients of the flat, paced and stuck scenarios; spec is a dict."""
    port, ours = spec["port"], spec["ours"]
    nsenders = spec["nsenders"]
    sel = selectors.DefaultSelector()
    sel.register(conn, selectors.EVENT_READ, None)
    peers = []
    # One connection at a time, each once the previous one is admitted:
    # ncat --chat quits ("getpeername ... failed") on a burst of connects.
    todo = list(spec["clients"])
    todo.reverse()

    def connect_next():
        item = todo.pop()
        role, ident = item[0], item[1]
        cport = item[2] if len(item) > 2 else port     # (role, ident[, port])
        name = None
        if ours and role == "send":
            name = "s%d" % ident
        elif ours:
            # Ours relays the room only to members with a name.
            name = "%s%d-%d" % (role[0], os.getpid(), len(peers))
        sock = connect_nb(cport, rcvbuf=4096 if role == "stuck" else 0)
        peer = Peer(sock, role, ident, name)
        peer.port = cport
        peer.ws = role.startswith("ws")
        peers.append(peer)
        if role == "stuck":
            peer.admitted = True
            peer.counting = True
            if name:
                sock.setblocking(True)      # waits for the connection, then sends
                sock.sendall(b"/nick " + name.encode() + b"\n")
                sock.setblocking(False)
                name = None
        else:
            sel.register(sock, selectors.EVENT_READ, peer)
            listeners.append(peer)
        if name:
            pending_nick.append(peer)
        if role == "send":
            senders.append(peer)

    by_bytes = spec.get("by_bytes", False)
    ref = None                  # the checking clients' byte total, from the parent
    rbuf = bytearray(RECV)
    rview = memoryview(rbuf)
    pending_nick = []
    senders = []
    listeners = []
    expected = None
    state = "setup"
    ready_sent = synced_sent = False
    go = None
    cpu0 = wall0 = 0.0
    sent_report = None
    sending = False
    deadline = None
    idle = spec.get("idle", 2.0)

    def need_sync(p):
        return nsenders - (1 if p.role == "send" else 0)

    def feed(p, data, t):
        """Data received in counting mode. A checking client keeps each chunk
        with its time of receipt and parses them all once the run is over,
        so it reads as fast as a count-only one (parsing as it went, it fell
        behind by more than --queue-limit and was dropped as too slow)."""
        if p.role in ("check", "wscheck"):
            p.chunks.append((t, data))
        p.lines += data.count(b"\n")
        p.nbytes += len(data)
        p.last = t

    def count(p, n, t):
        """Counting mode of a count-only client. A receiver, in a run with
        checking clients, only adds up bytes: the server sends every receiver
        the same stream, so each must end with exactly the bytes of a checking
        client (the parent compares); counting newlines in every byte took
        more CPU than the server under test. Senders (their stream lacks their
        own lines) and runs without checking clients count newlines."""
        if not (by_bytes and p.role in ("recv", "wsrecv")):
            p.lines += rbuf.count(b"\n", 0, n)
        p.nbytes += n
        p.last = t

    def pre(p, data, t):
        """Setup mode: look for admission and the SYNC lines."""
        buf = p.buf + data
        lines = buf.split(b"\n")
        p.buf = lines.pop()
        for i, line in enumerate(lines):
            if not p.admitted:
                if p.name is None or (b"welcome, " + p.name.encode() + b"!") in line:
                    p.admitted = True
            if line.endswith(b"SYNC") or line.endswith(b'"SYNC"}'):
                p.syncs += 1
                if p.syncs >= need_sync(p):
                    p.counting = True
                    rest = b"\n".join(lines[i + 1:] + [p.buf])
                    p.buf = b""
                    if rest:
                        feed(p, rest, t)
                    return

    def pump(p):
        """Write what p has pending, without blocking."""
        while p.off < len(p.out):
            try:
                n = p.sock.send(memoryview(p.out)[p.off:p.off + 1048576])
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                p.off = len(p.out)
                break
            p.off += n
        if p.off >= len(p.out) and p.out:
            p.out, p.off = b"", 0
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if p.out else 0)
        sel.modify(p.sock, want, p)

    while True:
        if go is not None and sending:
            t = time.monotonic()
            mode = go["mode"]
            end = go["t0"] + go["duration"]
            if t < end:
                if mode == "flat":
                    for p in senders:
                        if not p.out:
                            ts = now_us()
                            sid = p.ident
                            p.out = b"".join([b"D%d %d %d\n" % (sid, s, ts)
                                              for s in range(p.seq, p.seq + 500)])
                            p.seq += 500
                            p.off = 0
                            pump(p)
                else:
                    due = int((t - go["t0"]) * go["rate"]) + 1
                    pad = go.get("pad", b"")
                    for p in senders:
                        if due > p.seq:
                            ts = now_us()
                            sid = p.ident
                            p.out = p.out[p.off:] + b"".join(
                                [b"D%d %d %d%s\n" % (sid, s, ts, pad) for s in range(p.seq, due)])
                            p.off = 0
                            p.seq = due
                            pump(p)
            flushing = any(p.out for p in senders)
            if t >= end and (not flushing or t >= end + 2.0):
                sending = False
                counts = {}
                unsent = 0
                for p in senders:
                    left = p.out[p.off:].count(b"\n")
                    unsent += left
                    counts[p.ident] = p.seq - left
                    p.out, p.off = b"", 0
                    sel.modify(p.sock, selectors.EVENT_READ, p)
                sent_report = ("sent", counts, unsent)
                conn.send(sent_report)
            if sending:
                if mode == "flat":
                    timeout = 0 if not all(p.out for p in senders) else max(0, end - t)
                else:
                    timeout = min(0.0005, max(0, end - t))
            else:
                timeout = 0.05
        else:
            timeout = 0.05
        events = sel.select(timeout)
        t = now_us()
        for key, mask in events:
            p = key.data
            if p is None:
                msg = conn.recv()
                if msg[0] == "sync":
                    for s in senders:
                        s.out = b"SYNC\n"
                        s.off = 0
                        pump(s)
                elif msg[0] == "go":
                    go = msg[1]
                    sending = bool(senders)
                    cpu0, wall0 = cpu_self(), time.monotonic()
                elif msg[0] == "expect":
                    expected = msg[1]
                    deadline = time.monotonic() + msg[2]
                elif msg[0] == "ref":
                    ref = msg[1]
                elif msg[0] == "stop":
                    return
                continue
            if mask & selectors.EVENT_WRITE:
                pump(p)
            if mask & selectors.EVENT_READ:
                try:
                    n = p.sock.recv_into(rbuf)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    n = 0
                if not n:
                    sel.unregister(p.sock)
                    p.closed = True
                    continue
                if p.counting and p.role not in ("check", "wscheck"):
                    count(p, n, t)
                    continue
                data = bytes(rview[:n])
                if p.counting:
                    feed(p, data, t)
                else:
                    pre(p, data, t)
                    if p.admitted and p.name and p in pending_nick:
                        pending_nick.remove(p)
        # Nicks go out as soon as the connection is up (ours only).
        if state == "setup":
            while todo and all(p.admitted for p in peers):
                connect_next()
            for p in list(pending_nick):
                if not p.out and not getattr(p, "nicked", False):
                    p.nicked = True
                    p.out = b"/nick " + p.name.encode() + b"\n"
                    if p.ws:
                        p.out = ws_upgrade(p.port) + ws_text(p.out[:-1])
                    pump(p)
            if not todo and all(p.admitted for p in peers) and not ready_sent:
                ready_sent = True
                conn.send(("ready",))
                state = "sync"
        if state == "sync":
            for p in listeners:
                if not p.counting and need_sync(p) <= 0:
                    p.counting = True
                    p.buf = b""
        if state == "sync" and all(p.counting for p in listeners) and not synced_sent:
            synced_sent = True
            conn.send(("synced",))
            state = "run"
        if expected is not None:
            total = sum(expected.values())
            done = True
            tnow = time.monotonic()
            for p in listeners:
                if getattr(p, "closed", False):
                    continue
                if by_bytes and p.role in ("recv", "wsrecv"):
                    if ref is None or p.nbytes < ref[p.role]:
                        done = False
                        break
                    continue
                want = total - (expected.get(p.ident, 0) if p.role == "send" else 0)
                if p.lines < want:
                    done = False
                    break
            last = max([p.last for p in listeners] or [0]) / 1e6
            if not done and (tnow > deadline or tnow - max(last, go["t0"] + go["duration"]) > idle):
                done = True
            if done:
                cpu = cpu_self() - cpu0
                wall = time.monotonic() - wall0
                checks = [p for p in listeners if p.role in ("check", "wscheck")]
                if checks and by_bytes:
                    # The references for the count-only clients, before parsing.
                    conn.send(("ref", {
                        "recv": max([p.nbytes for p in checks if p.role == "check"] or [0]),
                        "wsrecv": max([p.nbytes for p in checks if p.role == "wscheck"] or [0])}))
                for p in checks:
                    if p.role == "wscheck":
                        ws_to_lines(p)
                    check_lines(p)
                conn.send(("done", summarize(peers, expected, nsenders, by_bytes), cpu, wall))
                expected = None


def ws_to_lines(p):
    """A WebSocket checking client's chunks as the data lines they carry
    (JSON events back to "D<sender> <seq> <time>"), with the receipt time
    of the chunk each frame ended in."""
    out = []
    buf = b""
    for t, data in p.chunks:
        buf += data
        frames = ws_frames(buf)
        used = 0
        pos, end = 0, len(buf)
        # advance over the complete frames ws_frames found
        while pos + 2 <= end:
            length = buf[pos + 1] & 0x7F
            head = 2
            if length == 126:
                length, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                length, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if pos + head + length > end:
                break
            pos += head + length
        used = pos
        lines = []
        for payload in frames:
            for line in payload.split(b"\n"):
                if line:
                    try:
                        got = json.loads(line)
                        texts = got["lines"] if "lines" in got else [got["text"]]
                        lines.extend(text.encode() for text in texts)
                    except (ValueError, KeyError):
                        lines.append(b"?")
        if lines:
            out.append((t, b"\n".join(lines) + b"\n"))
        buf = buf[used:]
    p.chunks = out


def check_lines(p):
    """Parse what a checking client received: each sender's order, loss,
    duplicates, mangled lines, and latency (receipt time of the chunk a line
    ended in minus the send time written in the line)."""
    buf = p.buf
    p.buf = b""
    p.lines = 0
    nxt, missing, dup, ooo, lat = p.nxt, p.missing, p.dup, p.ooo, p.lat
    fullmatch = DATA.fullmatch
    for t, data in p.chunks:
        lines = (buf + data).split(b"\n")
        buf = lines.pop()
        for line in lines:
            m = fullmatch(line)
            if m is None:
                p.mangled += 1
                continue
            sid, seq = int(m.group(1)), int(m.group(2))
            p.lines += 1
            lat.append(t - int(m.group(3)))
            want = nxt.get(sid, 0)
            if seq == want:
                nxt[sid] = want + 1
            elif seq > want:
                miss = missing.setdefault(sid, set())
                if seq - want < 1000000:
                    miss.update(range(want, seq))
                nxt[sid] = seq + 1
            else:
                miss = missing.get(sid)
                if miss and seq in miss:
                    miss.discard(seq)
                    ooo[sid] = ooo.get(sid, 0) + 1
                else:
                    dup[sid] = dup.get(sid, 0) + 1
    p.chunks = []


def summarize(peers, expected, nsenders, by_bytes=False):
    """Totals of a worker's clients, small enough to pickle cheaply."""
    total = sum(expected.values())
    out = {"delivered": 0, "expected": 0, "last": 0, "lat": [], "bytes": 0,
           "checked": 0, "lost": {}, "dup": {}, "ooo": {}, "mangled": 0,
           "count_missing": 0, "count_extra": 0,
           "check_bytes": [], "check_lines": [], "recv_bytes": []}
    for p in peers:
        if p.role == "stuck":
            continue
        want = total - (expected.get(p.ident, 0) if p.role == "send" else 0)
        out["delivered"] += p.lines
        out["expected"] += want
        out["last"] = max(out["last"], p.last)
        if p.role in ("recv", "wsrecv") and by_bytes:
            # lines and loss follow from the byte total: the parent decides
            out["recv_bytes"].append((p.role, p.nbytes))
            out["bytes"] += p.nbytes
            continue
        if p.role in ("check", "wscheck"):
            kind = "recv" if p.role == "check" else "wsrecv"
            out["check_bytes"].append((kind, p.nbytes))
            out["check_lines"].append((kind, p.lines))
            out["checked"] += 1
            out["lat"].extend(p.lat)
            out["mangled"] += p.mangled
            for sid, n in expected.items():
                lost = len(p.missing.get(sid, ())) + max(0, n - p.nxt.get(sid, 0))
                out["lost"][sid] = out["lost"].get(sid, 0) + lost
                out["dup"][sid] = out["dup"].get(sid, 0) + p.dup.get(sid, 0)
                out["ooo"][sid] = out["ooo"].get(sid, 0) + p.ooo.get(sid, 0)
        else:
            out["bytes"] += p.nbytes
            if p.lines < want:
                out["count_missing"] += want - p.lines
            else:
                out["count_extra"] += p.lines - want
    return out


def many_worker(conn, spec):
    """Named clients of the 'many' scenario: register, then wait for one line."""
    port, lo, hi, inflight = spec["port"], spec["lo"], spec["hi"], spec["inflight"]
    ports = spec.get("ports") or [port]     # client i connects to ports[i % len(ports)]
    sel = selectors.DefaultSelector()
    sel.register(conn, selectors.EVENT_READ, None)
    todo = list(range(lo, hi))
    todo.reverse()
    waiting = 0
    registered = 0
    errors = 0
    t_last_welcome = 0
    got_final = {}
    final_sender = None
    info = {}       # index -> [sock, buf, welcomed]
    reported = False
    deadline = time.monotonic() + spec["timeout"]
    final_deadline = None
    cpu0 = cpu_self()
    wall0 = time.monotonic()
    while True:
        while todo and waiting < inflight:
            i = todo.pop()
            try:
                s = connect_nb(ports[i % len(ports)])
            except OSError:
                errors += 1
                todo.insert(0, i)
                break
            info[i] = [s, b"", False, False]
            sel.register(s, selectors.EVENT_WRITE, i)
            waiting += 1
        for key, mask in sel.select(0.05):
            i = key.data
            if i is None:
                msg = conn.recv()
                if msg[0] == "final" and not msg[2]:
                    final_deadline = time.monotonic() + msg[1]
                elif msg[0] == "final":
                    final_sender = lo
                    s = info[lo][0]
                    t = now_us()
                    s.setblocking(True)
                    s.sendall(ws_text(b"ZFINAL") if spec.get("ws") else b"ZFINAL\n")
                    s.setblocking(False)
                    conn.send(("final-sent", t))
                    final_deadline = time.monotonic() + msg[1]
                elif msg[0] == "stop":
                    return
                continue
            rec = info[i]
            s = rec[0]
            if not rec[3]:      # connecting
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    errors += 1
                    sel.unregister(s)
                    s.close()
                    waiting -= 1
                    todo.insert(0, i)
                    continue
                rec[3] = True
                if spec.get("ws"):
                    s.send(ws_upgrade(ports[i % len(ports)]) + ws_text(b"/nick c%d" % i))
                else:
                    s.send(b"/nick c%d\n" % i)
                sel.modify(s, selectors.EVENT_READ, i)
                continue
            try:
                data = s.recv(RECV)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(s)
                errors += 1
                if not rec[2]:
                    waiting -= 1
                continue
            t = now_us()
            buf = rec[1][-64:] + data
            if not rec[2]:
                buf = rec[1] + data
                if (b"welcome, c%d!" % i) in buf:
                    rec[2] = True
                    registered += 1
                    waiting -= 1
                    t_last_welcome = t
                    buf = buf[-64:]
                else:
                    rec[1] = buf
                    continue
            if b"ZFINAL" in buf and i not in got_final and i != final_sender:
                got_final[i] = t
            rec[1] = buf[-64:]
        tn = time.monotonic()
        if not reported and (registered == hi - lo or tn > deadline):
            reported = True
            conn.send(("registered", registered, t_last_welcome, errors))
        if final_deadline is not None:
            want = hi - lo - (1 if final_sender is not None else 0)
            if len(got_final) >= want or tn > final_deadline:
                conn.send(("done", list(got_final.values()), want,
                           cpu_self() - cpu0, tn - wall0))
                final_deadline = None


def churn_worker(conn, spec):
    """Connect, /nick, wait for the welcome (ncat: first line), close; repeat."""
    port, ours, slots, duration = spec["port"], spec["ours"], spec["slots"], spec["duration"]
    tag = spec["tag"]
    sel = selectors.DefaultSelector()
    serial = 0
    done = 0
    errors = 0
    conn.recv()     # go
    cpu0 = cpu_self()
    t0 = time.monotonic()
    end = t0 + duration
    active = 0

    def start():
        nonlocal serial, errors
        serial += 1
        try:
            s = connect_nb(port)
        except OSError:
            errors += 1
            return 0
        name = b"w%d-%d" % (tag, serial)
        sel.register(s, selectors.EVENT_WRITE, [s, name, b""])
        return 1

    while True:
        tn = time.monotonic()
        while tn < end and active < slots:
            active += start()
            if active < slots and errors > 1000:
                break
        if active == 0 and tn >= end:
            break
        if tn > end + 5 or (errors > 10000 and errors > 10 * done):
            break       # the server is gone: ncat quits under churn
        for key, mask in sel.select(0.05):
            rec = key.data
            s = rec[0]
            if mask & selectors.EVENT_WRITE:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    errors += 1
                    sel.unregister(s)
                    s.close()
                    active -= 1
                    continue
                if ours:
                    s.send(b"/nick " + rec[1] + b"\n")
                sel.modify(s, selectors.EVENT_READ, rec)
                continue
            try:
                data = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            finished = False
            if not data:
                errors += 1
                finished = True
            else:
                rec[2] = rec[2][-64:] + data
                if not ours or (b"welcome, " + rec[1] + b"!") in rec[2]:
                    done += 1
                    finished = True
            if finished:
                sel.unregister(s)
                s.close()
                active -= 1
    conn.send(("done", done, errors, time.monotonic() - t0, cpu_self() - cpu0))


# --------------------------------------------------------------------------
# Scenario drivers (parent side)


def worker_context():
    """Worker processes: forked from a server process that has imported this
    module once (a spawned worker imports it anew, most of a short run's
    CPU), or spawned where there is no fork (Windows)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["__main__"])
    return ctx


CTX = worker_context()


class Worker:
    def __init__(self, func, spec):
        self.conn, child = CTX.Pipe()
        self.proc = CTX.Process(target=func, args=(child, spec), daemon=True)
        self.proc.start()
        child.close()

    def expect(self, kind, timeout):
        if not self.conn.poll(timeout):
            raise TimeoutError("worker did not answer %r in %.0f s" % (kind, timeout))
        msg = self.conn.recv()
        if msg[0] != kind:
            raise RuntimeError("worker said %r, expected %r" % (msg, kind))
        return msg

    def send(self, *msg):
        self.conn.send(msg)

    def close(self):
        try:
            self.conn.send(("stop",))
        except OSError:
            pass
        self.proc.join(3)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(2)


def gen_note(cpus):
    """The generator's CPU over the run, per process, and a warning if hot."""
    worst = max(cpus) if cpus else 0
    text = "generator CPU " + " + ".join("%.0f%%" % (c * 100) for c in cpus)
    if worst > 0.9:
        text += "  (a generator process SATURATED a core: treat rates as a lower bound)"
    return text, worst


def run_fanout(target, mode, nclients, nsenders, duration, rate=0, stuck=0,
               check=None, procs=2, pad=0, echo=print, ws=False, ports=None, settle=0.0):
    """flat / paced / stuck scenarios against one target; ws: the receivers
    (but the checking ones) are WebSocket clients, and one of them checks.
    ports: the receivers, and apart from them the senders, alternate
    between these ports (several servers of a cluster); default target.port.
    settle: seconds to wait once every client is admitted, before the SYNC
    lines (join announcements that come late then arrive before counting)."""
    ours = target.kind == "ours"
    receivers = nclients - nsenders if mode != "stuck" else nclients
    check = receivers if check is None else min(check, receivers)
    by_bytes = 0 < check < receivers
    if by_bytes:
        # The few clients that parse every line get a process of their own;
        # the rest only add up bytes, so they are cheap.
        if ws:
            rest = [("wsrecv", -1)] * (receivers - check - 1)
            groups = [[("check", -1)] * check + [("wscheck", -1)]]
        else:
            rest = [("recv", -1)] * (receivers - check)
            groups = [[("check", -1)] * check]
        groups += [rest[i::procs] for i in range(procs)]
    else:
        roles = [("check" if check else "recv", -1)] * receivers
        groups = [roles[i::procs] for i in range(procs)]
    groups = [g for g in groups if g] or [[]]
    if stuck:
        groups[-1] = groups[-1] + [("stuck", -1)] * stuck
    sender_clients = [("send", i) for i in range(nsenders)]
    if ports:
        k = 0
        for g in groups:
            for j, (role, ident) in enumerate(g):
                g[j] = (role, ident, ports[k % len(ports)])
                k += 1
        sender_clients = [("send", i, ports[i % len(ports)]) for i in range(nsenders)]
    spec = {"port": target.port, "ours": ours, "nsenders": nsenders, "by_bytes": by_bytes}
    workers = []
    try:
        # Workers connect one after the other (ncat quits on a burst).
        for g in groups:
            workers.append(Worker(fanout_worker, dict(spec, clients=g)))
            workers[-1].expect("ready", 30)
        sender = Worker(fanout_worker, dict(spec, clients=sender_clients))
        workers.append(sender)
        sender.expect("ready", 30)
        if settle:
            time.sleep(settle)
        sender.send("sync")
        for w in workers:
            w.expect("synced", 30)
        cpu0 = target.cpu()
        parts0 = target.cpu_parts()
        t0 = time.monotonic()
        go = {"mode": mode, "t0": t0, "duration": duration, "rate": rate,
              "pad": (b" " + b"." * (pad - 1)) if pad > 0 else b""}
        for w in workers:
            w.send("go", go)
        msg = sender.expect("sent", duration + 30)
        counts, unsent = msg[1], msg[2]
        for w in workers:
            w.send("expect", counts, duration + 20)
        ref = None
        if by_bytes:
            ref = workers[0].expect("ref", duration + 60)[1]
            for w in workers[1:]:
                w.send("ref", ref)
        results = [w.expect("done", duration + 120) for w in workers]
        cpu = target.cpu() - cpu0
        parts = target.cpu_parts()
        wall = time.monotonic() - t0
        hwm = target.hwm()
        alive = target.alive()
    finally:
        for w in workers:
            w.close()
    agg = {"delivered": 0, "expected": 0, "last": 0, "lat": [], "lost": 0, "dup": 0,
           "ooo": 0, "mangled": 0, "count_missing": 0, "count_extra": 0,
           "checked": 0, "bytes": 0}
    per_sender = {}
    for _, r, _, _ in results:
        for k in ("delivered", "expected", "mangled", "count_missing", "count_extra",
                  "checked", "bytes"):
            agg[k] += r[k]
        agg["last"] = max(agg["last"], r["last"])
        agg["lat"].extend(r["lat"])
        for k in ("lost", "dup", "ooo"):
            for sid, n in r[k].items():
                agg[k] += n
                per_sender.setdefault(sid, {"lost": 0, "dup": 0, "ooo": 0})[k] += n
    # A count-only client that received exactly the checking clients' bytes
    # got their lines; one that got fewer or more bytes is reported as such.
    recv_bytes = [b for _, r, _, _ in results for b in r["recv_bytes"]]
    check_bytes = [b for _, r, _, _ in results for b in r["check_bytes"]]
    check_lines = [n for _, r, _, _ in results for n in r["check_lines"]]
    short = over = exact = 0
    for kind, b in recv_bytes:
        # the lines of the checking client whose bytes are the reference
        kind_ref = ref[kind]
        kind_bytes = [n for k, n in check_bytes if k == kind]
        kind_lines = [n for k, n in check_lines if k == kind]
        ref_lines = (kind_lines[kind_bytes.index(kind_ref)] if kind_ref in kind_bytes
                     else min(kind_lines))
        if b == kind_ref:
            agg["delivered"] += ref_lines
            exact += 1
        else:
            short += max(0, kind_ref - b)
            over += max(0, b - kind_ref)
            agg["delivered"] += ref_lines * b // kind_ref if b < kind_ref else ref_lines
    check_bytes = [n for k, n in check_bytes if k == "recv"]
    span = max(agg["last"] / 1e6 - t0, 1e-9) if agg["last"] else float("nan")
    lat = agg["lat"]
    sent = sum(counts.values())
    res = {
        "target": target.kind, "mode": mode, "clients": nclients, "senders": nsenders,
        "sent": sent, "unsent": unsent, "delivered": agg["delivered"], "expected": agg["expected"],
        "span": span, "rate": agg["delivered"] / span if agg["last"] else 0.0,
        "bytes_rate": agg["bytes"] / span if agg["last"] else 0.0,
        "lost": agg["lost"], "dup": agg["dup"], "ooo": agg["ooo"], "mangled": agg["mangled"],
        "count_missing": agg["count_missing"], "count_extra": agg["count_extra"],
        "checked": agg["checked"], "per_sender": per_sender,
        "by_bytes": len(recv_bytes), "ref_bytes": ref and ref["wsrecv" if ws else "recv"], "bytes_short": short, "bytes_over": over,
        "bytes_exact": exact,
        "check_disagree": len(set(check_bytes)) > 1,
        "delivery_pct": 100.0 * agg["delivered"] / agg["expected"] if agg["expected"] else 0.0,
        "p50_ms": percentile(lat, 50) / 1000, "p99_ms": percentile(lat, 99) / 1000,
        "max_ms": (max(lat) / 1000 if lat else float("nan")),
        "cpu_s": cpu, "cpu_us_per_line": 1e6 * cpu / agg["delivered"] if agg["delivered"] else float("nan"),
        "hwm_mib": hwm / 1048576.0, "alive": alive,
        "gen_cpu": [r[2] / r[3] if r[3] else 0 for r in results],
        "cpu_parts": {k: parts[k] - parts0.get(k, 0) for k in parts}, "wall_s": wall,
    }
    # Loss that the unchecked (count-only) clients saw counts too.
    res["lost_total"] = res["lost"] + res["count_missing"]
    res["dup_total"] = res["dup"] + res["count_extra"]
    res["mangled_total"] = res["mangled"]
    res["clean"] = (res["lost_total"] == 0 and res["dup_total"] == 0 and res["ooo"] == 0
                    and res["mangled_total"] == 0 and res["delivered"] == res["expected"]
                    and not short and not over and not res["check_disagree"])
    return res


def run_many(target, nclients, procs, echo=print, ws=False, ports=None):
    """ports: client i connects to ports[i % len(ports)] (default target.port)."""
    workers = []
    per = (nclients + procs - 1) // procs
    base_rss = target.rss()
    cpu0 = target.cpu()
    t0 = time.monotonic()
    try:
        for k in range(procs):
            lo, hi = k * per, min(nclients, (k + 1) * per)
            workers.append(Worker(many_worker, {"port": target.port, "lo": lo, "hi": hi,
                                                "inflight": 400, "timeout": 60, "ws": ws,
                                                "ports": ports}))
        regs = [w.expect("registered", 90) for w in workers]
        register_cpu = target.cpu() - cpu0
        registered = sum(r[1] for r in regs)
        t_reg = max(r[2] for r in regs) / 1e6 - t0
        errors = sum(r[3] for r in regs)
        workers[0].send("final", 30, True)
        t_send = workers[0].expect("final-sent", 30)[1]
        for w in workers[1:]:
            w.send("final", 30, False)
        dones = [w.expect("done", 60) for w in workers]
        hwm = target.hwm()
    finally:
        for w in workers:
            w.close()
    times = [t for d in dones for t in d[1]]
    want = sum(d[2] for d in dones)
    lat = [(t - t_send) / 1000.0 for t in times]
    return {"target": target.kind, "clients": nclients, "registered": registered,
            "register_s": t_reg, "register_cpu_s": register_cpu, "connect_errors": errors,
            "final_got": len(times), "final_want": want, "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
            "max_ms": max(lat) if lat else float("nan"),
            "hwm_mib": hwm / 1048576.0, "kib_per_client": hwm / 1024.0 / nclients,
            "net_kib_per_client": (hwm - base_rss) / 1024.0 / nclients,
            "gen_cpu": [d[3] / d[4] if d[4] else 0 for d in dones]}


def run_churn(target, duration, procs, slots):
    ours = target.kind == "ours"
    workers = [Worker(churn_worker, {"port": target.port, "ours": ours, "slots": slots,
                                     "duration": duration, "tag": k})
               for k in range(procs)]
    try:
        cpu0 = target.cpu()
        for w in workers:
            w.send("go")
        dones = [w.expect("done", duration + 30) for w in workers]
        cpu = target.cpu() - cpu0
    finally:
        for w in workers:
            w.close()
    done = sum(d[1] for d in dones)
    errors = sum(d[2] for d in dones)
    wall = max(d[3] for d in dones)
    res = {"target": target.kind, "connections": done, "errors": errors,
           "per_s": done / wall, "gen_cpu": [d[4] / d[3] for d in dones],
           "server_cpu": cpu / wall,
           "died": target.died()}
    if ours:
        # clients.json is written at most every 0.5 s: wait for [] with a deadline.
        t0 = time.monotonic()
        content = None
        while time.monotonic() - t0 < 10:
            try:
                with open(target.clients_file) as f:
                    content = json.load(f)
            except (OSError, ValueError):
                content = None
            if content == []:
                break
            time.sleep(0.05)
        res["clients_json_empty"] = content == []
        res["clients_json_s"] = time.monotonic() - t0
        res["clients_json_left"] = len(content) if isinstance(content, list) else None
    return res


# --------------------------------------------------------------------------
# Reporting


def ratio(a, b):
    try:
        if b == 0 or b != b or a != a:
            return "-"
        return "%.2fx" % (a / b)
    except TypeError:
        return "-"


def fmt(v, spec="%.1f"):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, float) and v != v:
        return "-"
    return spec % v


class Report:
    def __init__(self, echo):
        self.rows = []
        self.echo = echo

    def row(self, scenario, metric, ours, ncat=None, spec="%.1f", better="high"):
        r = ratio(ours, ncat) if isinstance(ours, (int, float)) and isinstance(ncat, (int, float)) else "-"
        self.rows.append((scenario, metric, fmt(ours, spec), fmt(ncat, spec) if ncat is not None else "-",
                          r + ("" if r == "-" else (" (higher better)" if better == "high" else " (lower better)"))))

    def show(self):
        widths = [max(len(str(r[i])) for r in self.rows + [("scenario", "metric", "ours", "ncat", "ours/ncat")])
                  for i in range(5)]
        line = "  ".join("%-*s" % (w, h) for w, h in zip(widths, ("scenario", "metric", "ours", "ncat", "ours/ncat")))
        self.echo(line)
        self.echo("-" * len(line))
        for r in self.rows:
            self.echo("  ".join("%-*s" % (w, c) for w, c in zip(widths, r)))


def spoiled(res):
    """Lines lost, mangled, duplicated or out of order over every client."""
    if not res.get("sent"):
        return None
    return max(0, res["expected"] - res["delivered"]) + res["dup_total"] + res["ooo"]


def describe_fanout(res, echo):
    echo("  [%s] sent %d lines (%d unsent at the end), delivered %d of %d in %.2f s = %.0f lines/s"
         % (res["target"], res["sent"], res["unsent"], res["delivered"], res["expected"],
            res["span"], res["rate"]))
    echo("  [%s] checked clients %d: lost %d, duplicated %d, out of order %d, mangled %d; "
         "newline-counting clients: missing %d, extra %d"
         % (res["target"], res["checked"], res["lost"], res["dup"], res["ooo"], res["mangled"],
            res["count_missing"], res["count_extra"]))
    if res["by_bytes"]:
        echo("  [%s] count-only clients (bytes): %d of %d received exactly the checked clients' "
             "%d bytes; short %d bytes, over %d%s"
             % (res["target"], res["bytes_exact"], res["by_bytes"], res["ref_bytes"] or 0,
                res["bytes_short"], res["bytes_over"],
                "; THE CHECKED CLIENTS DISAGREE" if res["check_disagree"] else ""))
    if res["lost"] or res["dup"] or res["ooo"]:
        for sid in sorted(res["per_sender"]):
            s = res["per_sender"][sid]
            echo("      sender %d: lost %d dup %d out-of-order %d" % (sid, s["lost"], s["dup"], s["ooo"]))
    echo("  [%s] latency p50 %.2f ms p99 %.2f ms max %.2f ms; server CPU %.2f s (%.4f us/line), "
         "peak RSS %.1f MiB%s" % (res["target"], res["p50_ms"], res["p99_ms"], res["max_ms"],
                                  res["cpu_s"], res["cpu_us_per_line"], res["hwm_mib"],
                                  "" if res["alive"] else ", SERVER DIED"))
    echo("  [%s] %s" % (res["target"], gen_note(res["gen_cpu"])[0]))


def show_summary(echo, table, gen_worst: float, gen_where: str) -> None:
    """The summary table, the load, and how busy the busiest generator process was."""
    echo("\n== summary ==")
    table.show()
    echo("load average at end: %s" % load_average())
    echo("\nbusiest generator process: %.0f%% of a core (%s)%s" % (
        gen_worst * 100, gen_where or "-",
        "  -- SATURATED, that run's figures are a lower bound" if gen_worst > 0.9 else ""))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="fanout.py", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: few clients, about a second each")
    ap.add_argument("--scenario", default="flat,paced,stuck,many,churn",
                    help="comma-separated: flat,paced,stuck,many,churn (default all)")
    ap.add_argument("--no-ncat", action="store_true", help="do not run ncat --chat")
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--senders", type=int, default=10)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds of sending (default 3)")
    ap.add_argument("--rate", type=float, default=100.0, help="paced lines/s per sender (default 100)")
    ap.add_argument("--check", type=int, default=2,
                    help="receivers that parse every line in the flat run (the others add up bytes)")
    ap.add_argument("--stuck-pad", type=int, default=200,
                    help="bytes of padding on each line of the stuck-reader run (default 200)")
    ap.add_argument("--many", type=int, default=10000, help="clients in the many scenario")
    ap.add_argument("--procs", type=int, default=2, help="receiver worker processes")
    ap.add_argument("--server", default=SERVER, metavar="PATH",
                    help="the server.py to measure (default: the one beside bench/)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--server-args", default="", metavar="'OPTIONS'",
                    help="more options for our server, e.g. '--history 0' or "
                         "'--history-file /tmp/h.db'")
    ap.add_argument("--ws", action="store_true",
                    help="also run flat and many with WebSocket receivers (ours only)")
    ap.add_argument("--pin", action="store_true",
                    help="the server (ours or ncat) on CPU 0, this load generator and its "
                         "workers on the others: no core shared (Linux, 2 CPUs or more)")
    ap.add_argument("--peer", metavar="'COMMAND'",
                    help="run this in ncat's place: given HOST 0, it listens on a free port "
                         "and prints HOST:PORT first, as 'python3 bench/floor.py threads' "
                         "(the floor of a Python relay) does")
    args = ap.parse_args(argv)
    if args.peer:
        Target.peer_command = shlex.split(args.peer)
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if len(cpus) < 2:
            ap.error("--pin needs os.sched_setaffinity and two CPUs or more")
        Target.server_cpus = {cpus[0]}
        os.sched_setaffinity(0, set(cpus[1:]))     # inherited by the workers it starts
    echo = lambda s="": print(s, flush=True)
    scenarios = [s.strip() for s in args.scenario.split(",") if s.strip()]
    for s in scenarios:
        if s not in ("flat", "paced", "stuck", "many", "churn"):
            ap.error("unknown scenario %s" % s)
    q = args.quick
    clients, senders = (6, 2) if q else (args.clients, args.senders)
    duration = 0.5 if q else args.duration
    flat_duration = 0.1 if q else args.duration
    many = 50 if q else args.many
    Target.server = os.path.abspath(args.server)
    Target.server_args = shlex.split(args.server_args)
    nofile = raise_file_limit()
    use_ncat = (ncat_available() or bool(args.peer)) and not args.no_ncat
    targets = ["ours"] + (["ncat"] if use_ncat else [])
    echo("Broadcast Chat fan-out benchmark: %d CPUs, Python %s, RLIMIT_NOFILE %d, ncat %s"
         % (os.cpu_count() or 0, sys.version.split()[0], nofile,
            "yes" if use_ncat else ("not run" if ncat_available() else "not installed")))
    if args.peer:
        echo("in the ncat column: %s" % args.peer)
    echo("load average at start: %s (other work on the machine skews every figure)"
         % load_average())
    echo("PROTECTION IS OFF: our server runs with --rate-limit 0 --queue-limit %d "
         "--max-clients 0 --max-per-address 0, so the runs measure fan-out." % QUEUE_LIMIT)
    report = Report(echo)
    results = {}
    tmpdir = tempfile.mkdtemp(prefix="chat-bench-")
    gen_worst = 0.0
    gen_where = ""

    def ours_only(func, label):
        saved = list(targets)
        targets[:] = ["ours"]
        try:
            return each(func, label)
        finally:
            targets[:] = saved

    def each(func, label):
        nonlocal gen_worst, gen_where
        out = {}
        for kind in targets:
            target = Target(kind, tmpdir)
            try:
                out[kind] = func(target)
            except Exception as exc:   # report and go on: ncat may not cope
                out[kind] = {"error": "%s: %s" % (type(exc).__name__, exc)}
                echo("  [%s] %s FAILED: %s" % (kind, label, out[kind]["error"]))
            finally:
                target.stop()
            if "gen_cpu" in out[kind]:
                # A generator spinning on a server that died measured nothing.
                hot = max(out[kind]["gen_cpu"] or [0])
                dead = out[kind].get("died") or out[kind].get("alive") is False
                if hot > gen_worst and not dead:
                    gen_worst, gen_where = hot, "%s, %s" % (label, kind)
        return out

    try:
        if "flat" in scenarios:
            echo("\n== flat-out: %d clients, %d sending as fast as they can for %.1f s "
                 "(protection off) ==" % (clients, senders, flat_duration))
            out = each(lambda t: run_fanout(t, "flat", clients, senders, flat_duration,
                                            check=args.check, procs=args.procs), "flat")
            for r in out.values():
                if "error" not in r:
                    describe_fanout(r, echo)
            results["flat"] = out
            o, n = out.get("ours", {}), out.get("ncat", {})
            report.row("flat-out", "delivered lines/s", o.get("rate"), n.get("rate"), "%.0f")
            mb = lambda r: r["bytes_rate"] / 1e6 if r.get("bytes_rate") is not None else None
            report.row("flat-out", "delivered MB/s (count-only clients)", mb(o), mb(n), "%.0f")
            report.row("flat-out", "lines not delivered intact (all clients)", spoiled(o), spoiled(n), "%d", "low")
            report.row("flat-out", "server CPU us/line", o.get("cpu_us_per_line"), n.get("cpu_us_per_line"), "%.4f", "low")
            report.row("flat-out", "server peak RSS MiB", o.get("hwm_mib"), n.get("hwm_mib"), "%.1f", "low")
            if args.ws:
                echo("\n== flat-out, WebSocket receivers: %d clients, %d sending (line clients) "
                     "for %.1f s ==" % (clients, senders, flat_duration))
                out = ours_only(lambda t: run_fanout(t, "flat", clients, senders, flat_duration,
                                                     check=args.check, procs=args.procs, ws=True),
                                "flat-ws")
                w = out.get("ours", {})
                if "error" not in w:
                    describe_fanout(w, echo)
                    if o.get("rate"):
                        echo("  [ours] WebSocket / TCP delivered lines/s: %.2fx" % (w["rate"] / o["rate"]))
                results["flat-ws"] = out
                report.row("flat-out, WebSocket", "delivered lines/s", w.get("rate"), None, "%.0f")
                report.row("flat-out, WebSocket", "lines not delivered intact", spoiled(w), None, "%d", "low")
                report.row("flat-out, WebSocket", "server CPU us/line", w.get("cpu_us_per_line"), None, "%.4f", "low")
        if "paced" in scenarios:
            rate = args.rate
            echo("\n== paced: %d clients, %d senders at %g lines/s each for %.1f s ==" %
                 (clients, senders, rate, duration))
            out = each(lambda t: run_fanout(t, "paced", clients, senders, duration, rate=rate,
                                            procs=args.procs), "paced")
            for r in out.values():
                if "error" not in r:
                    describe_fanout(r, echo)
            results["paced"] = out
            o, n = out.get("ours", {}), out.get("ncat", {})
            report.row("paced", "latency p50 ms", o.get("p50_ms"), n.get("p50_ms"), "%.2f", "low")
            report.row("paced", "latency p99 ms", o.get("p99_ms"), n.get("p99_ms"), "%.2f", "low")
            report.row("paced", "latency max ms", o.get("max_ms"), n.get("max_ms"), "%.2f", "low")
            report.row("paced", "delivery %", o.get("delivery_pct"), n.get("delivery_pct"), "%.2f")
        if "stuck" in scenarios:
            healthy, ssend, srate = (4, 2, 200.0) if q else (20, 4, 1000.0)
            sdur = duration if q else max(duration, 5.0)
            echo("\n== stuck reader: 1 client never reads, %d healthy receive %d senders x %g lines/s "
                 "of %d bytes for %.1f s ==" % (healthy, ssend, srate, args.stuck_pad + 20, sdur))
            echo("  (%.1f MB in all: more than the kernel buffers a stuck reader's socket can hold)"
                 % (ssend * srate * sdur * (args.stuck_pad + 20) / 1e6))
            out = each(lambda t: run_fanout(t, "stuck", healthy, ssend, sdur, rate=srate,
                                            stuck=1, procs=1, pad=args.stuck_pad), "stuck")
            for r in out.values():
                if "error" not in r:
                    describe_fanout(r, echo)
                    if r["delivery_pct"] < 100:
                        echo("  [%s] FROZE: healthy clients got %.1f %% of the lines; %d lines could "
                             "not even be sent" % (r["target"], r["delivery_pct"], r["unsent"]))
            results["stuck"] = out
            o, n = out.get("ours", {}), out.get("ncat", {})
            report.row("stuck reader", "healthy delivery %", o.get("delivery_pct"), n.get("delivery_pct"), "%.1f")
            report.row("stuck reader", "healthy p99 ms", o.get("p99_ms"), n.get("p99_ms"), "%.2f", "low")
        if "many" in scenarios:
            echo("\n== many: %d clients, each /nick and announced, then one line to all ==" % many)
            saved = list(targets)
            if "ncat" in targets:
                echo("  [ncat] skipped: ncat --chat is select()-based and stops near 1,024 sockets")
                targets[:] = ["ours"]
            try:
                out = each(lambda t: run_many(t, many, args.procs), "many")
            finally:
                targets[:] = saved
            r = out.get("ours", {})
            if "error" not in r:
                echo("  [ours] registered %d of %d in %.2f s (server CPU %.2f s, %d connect retries); "
                     "final line reached %d of %d: p50 %.1f ms p99 %.1f ms max %.1f ms" % (
                         r["registered"], many, r["register_s"], r["register_cpu_s"],
                         r["connect_errors"], r["final_got"],
                         r["final_want"], r["p50_ms"], r["p99_ms"], r["max_ms"]))
                echo("  [ours] peak RSS %.1f MiB = %.1f KiB per client (%.1f KiB above the idle server); %s"
                     % (r["hwm_mib"], r["kib_per_client"], r["net_kib_per_client"], gen_note(r["gen_cpu"])[0]))
            results["many"] = out
            report.row("many (%d)" % many, "all registered s", r.get("register_s"), None, "%.2f", "low")
            report.row("many (%d)" % many, "server CPU to register s", r.get("register_cpu_s"), None,
                       "%.2f", "low")
            report.row("many (%d)" % many, "one line to all p99 ms", r.get("p99_ms"), None, "%.1f", "low")
            report.row("many (%d)" % many, "peak KiB per client", r.get("kib_per_client"), None, "%.1f", "low")
            if args.ws:
                echo("\n== many, WebSocket: %d WebSocket clients, each /nick, then one line to all ==" % many)
                out = ours_only(lambda t: run_many(t, many, args.procs, ws=True), "many-ws")
                r = out.get("ours", {})
                if "error" not in r:
                    echo("  [ours] registered %d of %d in %.2f s (%d connect retries); final line reached "
                         "%d of %d: p50 %.1f ms p99 %.1f ms max %.1f ms; peak %.1f KiB per client" % (
                             r["registered"], many, r["register_s"], r["connect_errors"], r["final_got"],
                             r["final_want"], r["p50_ms"], r["p99_ms"], r["max_ms"], r["kib_per_client"]))
                results["many-ws"] = out
                report.row("many WebSocket (%d)" % many, "all registered s", r.get("register_s"), None, "%.2f", "low")
                report.row("many WebSocket (%d)" % many, "one line to all p99 ms", r.get("p99_ms"), None, "%.1f", "low")
                report.row("many WebSocket (%d)" % many, "peak KiB per client", r.get("kib_per_client"), None, "%.1f", "low")
        if "churn" in scenarios:
            cd = 0.5 if q else args.duration
            echo("\n== churn: connect, /nick, wait for the welcome, close, for %.1f s ==" % cd)
            echo("  (ncat has no /nick: for it a connection counts once its first line arrives)")
            out = each(lambda t: run_churn(t, cd, args.procs, 4 if q else 32), "churn")
            for r in out.values():
                if "error" not in r:
                    echo("  [%s] %d connections in %.1f s = %.0f/s, %d errors; server CPU %.0f%%; %s" % (
                        r["target"], r["connections"], cd, r["per_s"], r["errors"],
                        100 * r["server_cpu"], gen_note(r["gen_cpu"])[0]))
                    if r["died"]:
                        echo("  [%s] THE SERVER DIED during the run: %s" % (r["target"], r["died"]))
            r = out.get("ours", {})
            if "clients_json_empty" in r:
                echo("  [ours] clients.json %s after %.2f s" % (
                    "is []" if r["clients_json_empty"] else "still lists %s clients" % r["clients_json_left"],
                    r["clients_json_s"]))
            results["churn"] = out
            o, n = out.get("ours", {}), out.get("ncat", {})
            report.row("churn", "connections/s", o.get("per_s"), n.get("per_s"), "%.0f")
            report.row("churn", "clients.json [] after", ("yes" if o.get("clients_json_empty") else "NO") if o else None)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    show_summary(echo, report, gen_worst, gen_where)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
