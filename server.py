#!/usr/bin/env python3
"""Broadcast Chat server: every line one client sends reaches all the others.

    python3 server.py [--host 127.0.0.1] [--port 5000] ...   (--help lists them)

The code is in the broadcast_chat package; broadcast_chat/server.py is the
place to start reading.
"""

import sys

from broadcast_chat.startup import main

if __name__ == "__main__":
    sys.exit(main())
