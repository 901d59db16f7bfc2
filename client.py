#!/usr/bin/env python3
"""Broadcast Chat client: a prompt to type at, with a reader thread beside it
that prints what the others say above the line being typed.

    python3 client.py [--host 127.0.0.1] [--port 5000] [--name NAME] ...

The code is in broadcast_chat/client.py.
"""

import sys

from broadcast_chat.client import main

if __name__ == "__main__":
    sys.exit(main())
