"""Starting the server from the command line, and stopping it on a signal."""

import errno
import os
import signal
import socket
import ssl
import subprocess
import sys
from typing import List, Optional

from . import tuning
from .config import ServerConfig, parse_server_args
from .jsonfile import write_json_atomic
from .log import Log
from .net import format_address, is_loopback
from .server import WSAEACCES, ChatServer


def bind_error(host: str, port: int, exc: OSError) -> str:
    if getattr(exc, "winerror", None) == WSAEACCES:
        return ("port %d on %s is in use or reserved by Windows: pick another with --port "
                "(netsh interface ipv4 show excludedportrange protocol=tcp lists the "
                "reserved ones)" % (port, host))
    if exc.errno == errno.EADDRINUSE:
        text = ("port %d on %s is already in use: is another server running? "
                "Pick another with --port" % (port, host))
        if port == 5000:
            text += " (on macOS the AirPlay Receiver often holds port 5000)"
        return text
    if exc.errno == errno.EACCES:
        return "no permission to listen on port %d: ports below 1024 need root; use --port" % port
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return "cannot listen on %s: no such address on this machine" % host
    return "cannot listen on %s:%d: %s" % (host, port, exc.strerror or exc)


def local_addresses() -> List[str]:
    """This machine's addresses that others may reach it by, as far as the
    host name tells (no packet is sent): what to tell people when the
    server listens on every interface."""
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, 0, socket.SOCK_STREAM)
    except OSError:
        return []
    found = []      # type: List[str]
    for info in infos:
        address = info[4][0]
        if not is_loopback(address) and address not in found and "%" not in address:
            found.append(address)
    return found


class Stop(BaseException):
    """Raised in the main thread by SIGTERM, SIGHUP (a closed terminal, a
    dropped ssh session) or SIGBREAK, like KeyboardInterrupt by SIGINT
    (and like it not an Exception, so no `except Exception` swallows it)."""


def say_line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _raise_stop(signum, frame) -> None:
    raise Stop()


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run(ServerConfig.from_args(parse_server_args(argv, prog)), argv)


def start_more(config: ServerConfig, argv: List[str], port: int) -> List[subprocess.Popen]:
    """The other servers of --processes N: the same options on the same
    port (SO_REUSEPORT), each with its own clients file and node name."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    boot = ("import sys; sys.path.insert(0, %r); from broadcast_chat.startup import main; "
            "sys.exit(main(sys.argv[1:]))" % root)
    base, extension = os.path.splitext(config.clients_file)
    children = []
    for number in range(2, config.processes + 1):
        extra = ["--processes", "1", "--port", str(port),
                 "--clients-file", "%s-%d%s" % (base, number, extension)]
        if config.node:
            extra += ["--node", "%s-%d" % (config.node, number)]
        children.append(subprocess.Popen([sys.executable, "-c", boot] + argv + extra,
                                         stdin=subprocess.DEVNULL))
    return children


def stop_all(children: List[subprocess.Popen]) -> None:
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def run(config: ServerConfig, argv: Optional[List[str]] = None) -> int:
    problem = config.problem()
    if problem:
        print("server.py: error: " + problem, file=sys.stderr)
        return 2
    tuning.raise_file_limit()
    tuning.small_thread_stacks()
    log = Log()
    log.start()
    try:
        server = ChatServer(config, log)
    except ssl.SSLError as exc:
        print("server.py: error: cannot use the TLS certificate and key: %s" % (
            exc.reason or exc), file=sys.stderr)
        return 2
    except ValueError as exc:
        print("server.py: error: %s" % exc, file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.filename:
            print("server.py: error: cannot read %s: %s" % (exc.filename, exc.strerror),
                  file=sys.stderr)
            return 2
        print("server.py: error: " + bind_error(config.host, config.port, exc), file=sys.stderr)
        return 1
    server.room.on_size = tuning.size_tuning()
    if not is_loopback(config.host) and server.tls_context is None and server.password is None:
        print("server.py: warning: listening on %s without TLS or a password: anyone who can "
              "reach this port can join and read the chat" % config.host, file=sys.stderr)
    try:
        write_json_atomic(config.clients_file, [])     # reset what a crashed run left
    except OSError as exc:
        # The checks in ServerConfig.problem cannot see everything (root
        # passes os.access; /proc refuses new files): the first write decides.
        print("server.py: error: cannot write the clients file %s: %s" % (
            config.clients_file, exc.strerror or exc), file=sys.stderr)
        server.listener.close()
        return 2
    host, port = server.server_address[:2]
    shown = "[%s]" % host if ":" in host else host
    stop_signals = [signal.SIGTERM] + [getattr(signal, name) for name in ("SIGHUP", "SIGBREAK")
                                       if hasattr(signal, name)]
    for signum in stop_signals:
        signal.signal(signum, _raise_stop)
    children = []   # type: List[subprocess.Popen]
    try:
        server.start()
        # One write a line: the log thread may write between two (a
        # cluster's first log line comes as it starts), as print() does.
        say_line("Server running on %s:%d" % (shown, port))
        if host in ("0.0.0.0", "::"):
            reachable = local_addresses()
            if reachable:
                say_line("Others connect to: %s" % ", ".join(
                    format_address((address, port)) for address in reachable))
        if config.processes > 1:
            children = start_more(config, list(argv or []), port)
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        if sys.stdout.isatty():
            print(flush=True)   # the log goes on below the ^C the terminal echoed
    except Stop:
        pass
    finally:
        for signum in stop_signals + [signal.SIGINT]:
            signal.signal(signum, signal.SIG_IGN)
        stop_all(children)
        server.close()
        log("stop", "server stopped")
        log.close()
    return 0
