"""Broadcast Chat: a real-time chat room over TCP, server and client,
standard library only. The top-level scripts (server.py, client.py,
helpers.py, broadcast.py) are thin entry points into this package."""

__version__ = "1.1.0"
