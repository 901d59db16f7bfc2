"""Between accept and the room: how many connections may wait, and how
fast passwords may be guessed. Counters and clocks only: no sockets."""

import collections
import threading
import time
from typing import Callable, Dict, Optional, Tuple


class Gate:
    """Counts of connections not yet in the room, and the password throttle.

    pending: reader threads started and not yet admitted. Threads start
    without waiting for them to run; at most max_pending may be started and
    not yet admitted, so a storm of connections closed at once cannot fill
    --max-per-address with connections nobody has looked at yet.

    handshaking: connections in their TLS handshake or password check, by
    address. They are not members yet, so the room does not count them;
    without this one host could hold a thread per silent connection, past
    --max-per-address and --max-clients, for handshake_timeout each.

    failures: wrong passwords by address. After one, each check from that
    address waits failure_delay, doubling with each wrong one up to
    failure_delay_max, and at most max_checks checks from one address may
    wait at once: one more is refused outright. So guessing stays slow (at
    most max_checks guesses per failure_delay_max), and a guesser cannot
    lock out the right password from the same address (a NAT): it waits at
    most failure_delay_max, or is refused at once while the places are
    taken. A count is forgotten after failure_memory quiet seconds; the
    table keeps the failure_table_max addresses that failed last.
    """

    max_pending = 32
    handshake_timeout = 10.0
    failure_delay = 0.25
    failure_delay_max = 2.0
    max_checks = 4
    failure_memory = 900.0
    failure_table_max = 10000

    def __init__(self, counts_handshakes: bool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.counts_handshakes = counts_handshakes   # with TLS or a password
        self.clock = clock
        self.pending = 0
        self.pending_changed = threading.Condition()
        self.handshaking = collections.Counter()     # type: collections.Counter
        self.handshake_lock = threading.Lock()
        self.failures = collections.OrderedDict()   # type: Dict[str, Tuple[int, float]]
        self.checking = collections.Counter()       # type: collections.Counter
        self.failure_lock = threading.Lock()

    # -- pending threads -------------------------------------------------------

    def wait_for_slot(self) -> None:
        with self.pending_changed:
            while self.pending >= self.max_pending:
                self.pending_changed.wait()
            self.pending += 1

    def free_slot(self) -> None:
        with self.pending_changed:
            self.pending -= 1
            if self.pending == self.max_pending - 1:
                self.pending_changed.notify()

    # -- handshakes --------------------------------------------------------------

    def begin_handshake(self, host: str, members: int, from_host: int,
                        max_clients: int, max_per_address: int) -> str:
        """Count a connection about to handshake, or say why it is refused.
        members and from_host: the room's counts, all and from this host."""
        if not self.counts_handshakes:
            return ""       # nothing to wait for: admitted (and counted) at once
        with self.handshake_lock:
            waiting = sum(self.handshaking.values())
            if max_clients and waiting + members >= max_clients:
                return "server full"
            if max_per_address and self.handshaking[host] + from_host >= max_per_address:
                return "too many connections from your address"
            self.handshaking[host] += 1
        return ""

    def end_handshake(self, host: str) -> None:
        with self.handshake_lock:
            self.handshaking[host] -= 1
            if self.handshaking[host] <= 0:
                del self.handshaking[host]

    # -- wrong passwords ---------------------------------------------------------

    def begin_check(self, host: str) -> Optional[float]:
        """A place to check a password from host: the seconds to wait first,
        or None when max_checks from host are waiting already (refuse it).
        Give the place back with end_check()."""
        now = self.clock()
        with self.failure_lock:
            if self.checking[host] >= self.max_checks:
                return None
            self.checking[host] += 1
            entry = self.failures.get(host)
            if entry is None:
                return 0.0
            count, last = entry
            if now - last > self.failure_memory:
                del self.failures[host]
                return 0.0
            return self.delay(count)

    def end_check(self, host: str) -> None:
        with self.failure_lock:
            self.checking[host] -= 1
            if self.checking[host] <= 0:
                del self.checking[host]

    def record_failure(self, host: str) -> None:
        now = self.clock()
        with self.failure_lock:
            count, _ = self.failures.pop(host, (0, now))
            self.failures[host] = (count + 1, now)  # newest last
            if len(self.failures) > self.failure_table_max:
                self.failures.popitem(last=False)

    def record_success(self, host: str) -> None:
        with self.failure_lock:
            self.failures.pop(host, None)

    def delay(self, count: int) -> float:
        """The wait before checking a password after count wrong ones in a row."""
        return min(self.failure_delay * 2 ** (count - 1), self.failure_delay_max)


class Arrival:
    """A connection between accept and admission, and the counts it holds
    in the Gate: a pending slot, and (with TLS or a password) a place among
    the connections in their handshake. Each is given back once, by
    whichever thread gets there first."""

    def __init__(self, gate: Gate, host: str, refusal: str) -> None:
        self.gate = gate
        self.host = host
        self.refusal = refusal          # from begin_handshake: why it is turned away
        self.pending = False            # holds a pending slot
        self.handshaking = not refusal and gate.counts_handshakes
        self.admitted = False           # a member: the writer closes its socket
        self.lock = threading.Lock()

    def hold_slot(self) -> None:
        self.gate.wait_for_slot()
        self.pending = True

    def settle(self) -> None:
        """Past admission (or turned away): free the pending slot."""
        with self.lock:
            pending, self.pending = self.pending, False
        if pending:
            self.gate.free_slot()

    def end_handshake(self) -> None:
        with self.lock:
            handshaking, self.handshaking = self.handshaking, False
        if handshaking:
            self.gate.end_handshake(self.host)

    def release(self) -> None:
        self.settle()
        self.end_handshake()
