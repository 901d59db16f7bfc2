"""`broadcast-server start|connect`: both sides behind one command."""

import argparse
from typing import List, Optional

from . import __version__
from .clientoptions import add_client_options
from .config import ServerConfig, add_server_options


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Broadcast Chat: a chat room over TCP.")
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    commands = parser.add_subparsers(dest="command", metavar="{start,connect}")
    commands.required = True
    start = commands.add_parser("start", help="run the chat server",
                                description="Run the chat server.")
    add_server_options(start)
    connect = commands.add_parser("connect", help="join a chat as a client",
                                  description="Join a chat as a client.")
    add_client_options(connect)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    options = parse_args(argv)
    if options.command == "start":
        from . import startup
        return startup.run(ServerConfig.from_args(options))
    from . import client
    return client.run(options)
