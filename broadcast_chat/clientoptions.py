"""The client's command line: its options, the server's address however it
is spelled, and the TLS context they ask for."""

import argparse
import re
import ssl
import sys
from typing import List, Optional

from . import __version__
from .config import DEFAULT_HOST, DEFAULT_PORT
from .tls import PASSWORD_ENV, modern


def add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("server", nargs="?", metavar="HOST[:PORT]",
                        help="the server, as --host (and --port) say it")
    parser.add_argument("server_port", nargs="?", metavar="PORT", type=int,
                        help="the server's port, as --port says it")
    parser.add_argument("--host", default=None,
                        help="server address (default %s)" % DEFAULT_HOST)
    parser.add_argument("-p", "--port", type=int, default=None,
                        help="server port (default %d)" % DEFAULT_PORT)
    parser.add_argument("-n", "--name", help="your name (default: this machine's host name)")
    parser.add_argument("--no-color", action="store_true",
                        help="no colours (also when NO_COLOR is set or output is not a terminal)")
    parser.add_argument("--no-bell", action="store_true",
                        help="no terminal bell when your name is mentioned or a private "
                             "message arrives")
    parser.add_argument("--no-reconnect", action="store_true",
                        help="exit when the connection is lost instead of reconnecting")
    parser.add_argument("--tls", action="store_true",
                        help="connect with TLS, checking the server's certificate and name")
    parser.add_argument("--cafile", metavar="FILE",
                        help="trust this certificate (PEM), e.g. a self-signed one; implies --tls")
    parser.add_argument("--insecure", action="store_true",
                        help="TLS without checking the certificate (warns); implies --tls")
    parser.add_argument("--password-file", metavar="FILE",
                        help="room password: the first line of FILE (or set %s)" % PASSWORD_ENV)
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)


def parse_client_args(argv: Optional[List[str]] = None,
                      prog: Optional[str] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description="Broadcast Chat client.")
    add_client_options(parser)
    return parser.parse_args(argv)


def client_tls_context(options: argparse.Namespace) -> Optional[ssl.SSLContext]:
    if not (options.tls or options.cafile or options.insecure):
        return None
    context = modern(ssl.create_default_context(cafile=options.cafile))
    if options.insecure:
        print("client.py: warning: --insecure: the server's certificate is not checked, "
              "so anyone in between can read and change the chat", file=sys.stderr)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def settle_address(options: argparse.Namespace) -> Optional[str]:
    """Fill options.host and options.port from however they were given
    (HOST PORT, HOST:PORT, [IPv6]:PORT, --host, --port); a problem, or None."""
    host, port = options.host, options.port
    if options.server is not None:
        if host is not None:
            return "give the server once: as HOST or as --host"
        host = options.server
    if options.server_port is not None:
        if port is not None:
            return "give the port once: as PORT or as --port"
        port = options.server_port
    host = host or DEFAULT_HOST
    spelled = re.match(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?\Z", host) or \
        re.match(r"([^:\[\]]+):(\d+)\Z", host)
    if spelled:
        host = spelled.group(1)
        if spelled.group(2):
            if port is not None and port != int(spelled.group(2)):
                return "two ports given: %s and %d" % (spelled.group(2), port)
            port = int(spelled.group(2))
    port = DEFAULT_PORT if port is None else port
    if not 1 <= port <= 65535:
        return "bad port %d: a port is a number from 1 to 65535" % port
    options.host, options.port = host, port
    return None
