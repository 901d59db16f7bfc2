#!/usr/bin/env python3
"""One command for both sides: `broadcast.py start` runs the server,
`broadcast.py connect` the client. Installed, it is `broadcast-server`."""

import argparse
import sys
from typing import List, Optional

import client
import helpers
import server


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="broadcast-server",
        description="Broadcast Chat: a chat room over TCP.")
    parser.add_argument("--version", action="version", version="%(prog)s " + helpers.__version__)
    commands = parser.add_subparsers(dest="command", metavar="{start,connect}")
    commands.required = True
    start = commands.add_parser("start", help="run the chat server",
                                description="Run the chat server.")
    server.add_server_options(start)
    connect = commands.add_parser("connect", help="join a chat as a client",
                                  description="Join a chat as a client.")
    client.add_client_options(connect)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    options = parse_args(argv)
    if options.command == "start":
        return server.run(options)
    return client.run(options)


if __name__ == "__main__":
    sys.exit(main())
