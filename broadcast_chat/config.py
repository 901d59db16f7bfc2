"""The server's configuration: one object, built from the command line and
handed to each component. Tuning constants that nobody sets live with their
owners as class attributes."""

import argparse
import os
import re
import socket
from typing import List, Optional

from . import __version__, resp
from .tls import PASSWORD_ENV

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
ORIGIN = re.compile(r"(?:https?://[^/?#\s]+/?|null)\Z")
NODE = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")


class ServerConfig:
    """Every option of the server, with its default.

    host, port: where to listen (port 0: any free one).
    clients_file: the JSON list of connected clients; written at most every
        clients_file_interval seconds.
    max_clients, max_per_address: most members at once, and from one IPv4
        address or IPv6 /64 (0: no limit).
    queue_limit: bytes that may wait for one member before it is dropped.
    rate_limit, burst: lines a second per member, and how many may come at
        once above the rate (rate 0: no limit).
    max_line: longest line accepted, in bytes.
    idle_timeout: seconds of silence before a member is dropped (0: never).
    tls_cert, tls_key: serve TLS only, with these PEM files.
    password_file: the room password is its first line (or BROADCAST_PASSWORD).
    history: events a newcomer is shown before the live ones (0: no history:
        no backlog, no /history, no resume).
    history_keep: events kept for resumes and /history (at most
        Room.history_bytes of text in memory).
    history_max_age: seconds an event is kept and replayed (0: any age).
    history_file: keep the history in this SQLite file across restarts.
    name_grace: seconds after a disconnect within which a reconnect with the
        name's token gets the name back (0: tokens off).
    allow_origins: web pages (scheme://host[:port]) besides the server's own
        whose scripts may open a WebSocket to the chat.
    redis: redis://HOST:PORT/DB (rediss:// for TLS): one room with every
        other server given the same; redis_password_file: Redis's password
        is its first line (or REDIS_PASSWORD); node: this server's name
        among them (default: host, process and a random part);
        presence_ttl: seconds after which a server not heard of is gone;
        processes: servers started on this port by this command (0: one per CPU).
    """

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 clients_file: str = "clients.json", clients_file_interval: float = 0.5,
                 max_clients: int = 10000, max_per_address: int = 100,
                 queue_limit: int = 1 << 20, rate_limit: float = 20.0, burst: int = 100,
                 max_line: int = 4096, idle_timeout: float = 0.0,
                 tls_cert: Optional[str] = None, tls_key: Optional[str] = None,
                 password_file: Optional[str] = None, history: int = 50,
                 history_keep: int = 1000, history_max_age: float = 0.0,
                 history_file: Optional[str] = None, name_grace: float = 120.0,
                 allow_origins: Optional[List[str]] = None, redis: Optional[str] = None,
                 redis_password_file: Optional[str] = None,
                 node: Optional[str] = None, presence_ttl: float = 5.0,
                 processes: int = 1) -> None:
        self.host = host
        self.port = port
        self.clients_file = clients_file
        self.clients_file_interval = clients_file_interval
        self.max_clients = max_clients
        self.max_per_address = max_per_address
        self.queue_limit = queue_limit
        self.rate_limit = rate_limit
        self.burst = burst
        self.max_line = max_line
        self.idle_timeout = idle_timeout
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.password_file = password_file
        self.history = history
        self.history_keep = max(history_keep, history)
        self.history_max_age = history_max_age
        self.history_file = history_file
        self.name_grace = name_grace

        self.allow_origins = list(allow_origins or [])
        self.redis = redis
        self.redis_password_file = redis_password_file
        self.node = node
        self.presence_ttl = presence_ttl
        self.processes = processes if processes else (os.cpu_count() or 1)

    OPTIONS = ("host", "port", "clients_file", "clients_file_interval", "max_clients",
               "max_per_address", "queue_limit", "rate_limit", "burst", "max_line",
               "idle_timeout", "tls_cert", "tls_key", "password_file", "history",
               "history_keep", "history_max_age", "history_file", "name_grace", "allow_origins",
               "redis", "redis_password_file", "node", "presence_ttl", "processes")

    @classmethod
    def from_args(cls, options: argparse.Namespace) -> "ServerConfig":
        return cls(**{name: getattr(options, name) for name in cls.OPTIONS})

    def problem(self) -> Optional[str]:
        """What is wrong with these options, in one line, or None."""
        if not 0 <= self.port <= 65535:
            return "bad port %d: use a number from 1 to 65535 (0 picks a free one)" % self.port
        for name in ("max_clients", "max_per_address", "rate_limit", "idle_timeout", "burst",
                     "history", "history_keep", "history_max_age", "name_grace"):
            if getattr(self, name) < 0:
                return "--%s cannot be negative" % name.replace("_", "-")
        if self.queue_limit < 1024 or self.max_line < 16:
            return "--queue-limit must be at least 1024 and --max-line at least 16"
        if self.clients_file_interval <= 0:
            return "--clients-file-interval must be positive"
        path = self.clients_file
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            return "cannot write the clients file %s: it is a directory" % path
        if not os.path.isdir(folder):
            return "cannot write the clients file %s: the folder %s does not exist" % (path, folder)
        if not os.access(folder, os.W_OK):
            return "cannot write the clients file %s: no permission in %s" % (path, folder)
        if bool(self.tls_cert) != bool(self.tls_key):
            return "--tls-cert and --tls-key go together"
        if self.history_file and not self.history:
            return "--history-file needs history: drop --history 0"
        if self.history_file and os.path.isdir(self.history_file):
            return "cannot use the history file %s: it is a directory" % self.history_file
        history_folder = os.path.dirname(os.path.abspath(self.history_file or "."))
        if self.history_file and not os.path.isdir(history_folder):
            return "cannot use the history file %s: the folder %s does not exist" % (
                self.history_file, history_folder)
        if self.redis:
            try:
                resp.parse_url(self.redis)
            except ValueError as exc:
                return "--redis: %s" % exc
            if self.history_file:
                return ("--history-file and --redis do not go together: with Redis the "
                        "history is kept there, for every server")
        elif self.redis_password_file or self.node or self.processes != 1:
            return "--redis-password-file, --node and --processes need --redis"
        if not 1 <= self.processes <= 64:
            return "--processes must be from 0 (one per CPU) to 64"
        if self.processes > 1 and not hasattr(socket, "SO_REUSEPORT"):
            return ("--processes needs SO_REUSEPORT (Linux, macOS, BSD), which this platform "
                    "lacks: start each server by itself, on a port of its own")
        if not 0.5 <= self.presence_ttl <= 600:
            return "--presence-ttl must be from 0.5 to 600 seconds"
        if self.node is not None and not NODE.match(self.node):
            return "--node %s: use letters, digits, '.', '-' and '_' (at most 64)" % self.node
        for origin in self.allow_origins:
            if not ORIGIN.match(origin):
                return ("--allow-origin %s: give a page's origin, scheme://host[:port], "
                        "e.g. https://chat.example.org" % origin)
        return None


def add_server_options(parser: argparse.ArgumentParser) -> None:
    default = ServerConfig()
    parser.add_argument("--host", default=default.host,
                        help="address to listen on (default %(default)s; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=default.port,
                        help="TCP port, 0 for any free one (default %(default)s)")
    parser.add_argument("--clients-file", default=default.clients_file, metavar="PATH",
                        help="JSON list of the connected clients (default %(default)s)")
    # Hidden: how often clients.json may be rewritten; tests shorten it.
    parser.add_argument("--clients-file-interval", type=float,
                        default=default.clients_file_interval, help=argparse.SUPPRESS)
    parser.add_argument("--max-clients", type=int, default=default.max_clients, metavar="N",
                        help="most clients at once; 0 for no limit (default %(default)s)")
    parser.add_argument("--max-per-address", type=int, default=default.max_per_address,
                        metavar="N", help="most clients from one IP address; 0 for no limit "
                                          "(default %(default)s)")
    parser.add_argument("--queue-limit", type=int, default=default.queue_limit,
                        metavar="BYTES", help="bytes waiting for one client before it is "
                                              "dropped as too slow (default %(default)s)")
    parser.add_argument("--rate-limit", type=float, default=default.rate_limit,
                        metavar="LINES_PER_S", help="lines a second per client, 0 for no limit "
                                                    "(default %(default)s)")
    parser.add_argument("--burst", type=int, default=default.burst, metavar="LINES",
                        help="lines a client may send at once above the rate (default %(default)s)")
    parser.add_argument("--idle-timeout", type=float, default=default.idle_timeout,
                        metavar="SECONDS",
                        help="disconnect a client silent this long; 0 for never (default %(default)s)")
    parser.add_argument("--max-line", type=int, default=default.max_line, metavar="BYTES",
                        help="longest line accepted (default %(default)s)")
    parser.add_argument("--tls-cert", metavar="FILE",
                        help="serve TLS only, with this certificate (PEM); needs --tls-key")
    parser.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    parser.add_argument("--password-file", metavar="FILE",
                        help="room password: the first line of FILE (or set %s); "
                             "clients must send /pass SECRET first" % PASSWORD_ENV)
    parser.add_argument("--history", type=int, default=default.history, metavar="N",
                        help="events a newcomer sees before the live ones; 0 for no history "
                             "(default %(default)s)")
    parser.add_argument("--history-keep", type=int, default=default.history_keep, metavar="N",
                        help="events kept for reconnecting clients and /history "
                             "(default %(default)s)")
    parser.add_argument("--history-max-age", type=float, default=default.history_max_age,
                        metavar="SECONDS", help="forget events older than this; 0 for never "
                                                "(default %(default)s)")
    parser.add_argument("--history-file", metavar="FILE",
                        help="keep the history in this SQLite file across restarts")
    parser.add_argument("--name-grace", type=float, default=default.name_grace,
                        metavar="SECONDS", help="a client reconnecting within this time gets "
                                                "its name back (default %(default)s)")
    parser.add_argument("--allow-origin", action="append", dest="allow_origins", default=[],
                        metavar="URL", help="also let pages from this origin (https://host:port) "
                                            "open a WebSocket to the chat; repeatable")
    parser.add_argument("--redis", metavar="URL",
                        help="share one room with every server given the same Redis: "
                             "redis://HOST:PORT/DB, rediss:// for TLS")
    parser.add_argument("--redis-password-file", metavar="FILE",
                        help="Redis's password: the first line of FILE (or set REDIS_PASSWORD)")
    parser.add_argument("--node", metavar="NAME",
                        help="this server's name among the others (default: host and process)")
    parser.add_argument("--processes", type=int, default=default.processes, metavar="N",
                        help="with --redis: start N servers on this port, one per core "
                             "(0: one per CPU; default %(default)s)")
    # Hidden: how soon a server killed outright is taken for gone; tests shorten it.
    parser.add_argument("--presence-ttl", type=float, default=default.presence_ttl,
                        help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)


def parse_server_args(argv: Optional[List[str]] = None,
                      prog: Optional[str] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog, description="Broadcast Chat server: every line a client sends "
                               "reaches all the other clients.")
    add_server_options(parser)
    return parser.parse_args(argv)
