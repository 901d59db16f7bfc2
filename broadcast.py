#!/usr/bin/env python3
"""One command for both sides: `broadcast.py start` runs the server,
`broadcast.py connect` the client. Installed, it is `broadcast-server`."""

import sys

from broadcast_chat.cli import main

if __name__ == "__main__":
    sys.exit(main())
