#!/usr/bin/env python3
"""WebSocket echo server on 127.0.0.1, for conformance tests: ws_echo.py PORT

Echoes every text and binary message, answers pings, closes as RFC 6455
says. A thread per connection, blocking sockets. Port 0 picks a free port;
the first line on standard output names the port listened on.
"""

import signal
import socket
import socketserver
import sys
from typing import List, Optional

from broadcast_chat import handshake, websocket


class EchoHandler(socketserver.BaseRequestHandler):
    """One connection: the opening handshake, then echo until closed."""

    # Autobahn section 9 sends messages of 16 MiB.
    max_message_size = 64 * 1024 * 1024
    recv_size = 256 * 1024
    # How long a client may take to send its request head, and to close
    # its side once the WebSocket connection is closed.
    handshake_timeout = 10.0
    close_timeout = 5.0

    def handle(self) -> None:
        sock = self.request  # type: socket.socket
        sock.settimeout(self.handshake_timeout)
        try:
            leftover = self.handshake(sock)
            if leftover is None:
                return
            sock.settimeout(None)
            self.echo(sock, leftover)
        except OSError:     # a reset, or a timeout (socket.timeout is one)
            return

    def handshake(self, sock: socket.socket) -> Optional[bytes]:
        """Answer the request head; the bytes read past it when the
        connection is now a WebSocket, else None."""
        buffer = b""
        try:
            while True:
                end = handshake.find_head_end(buffer)
                if end:
                    break
                data = sock.recv(4096)
                if not data:
                    return None
                buffer += data
        except handshake.RequestError as error:
            sock.sendall(error.response().to_bytes())
            return None
        response = handshake.handshake(buffer[:end])
        sock.sendall(response.to_bytes())
        return buffer[end:] if response.status == 101 else None

    def echo(self, sock: socket.socket, data: bytes) -> None:
        connection = websocket.Connection(max_message_size=self.max_message_size)
        while True:
            for event in connection.receive_data(data):
                if isinstance(event, websocket.Text):
                    connection.send_text(event.data)
                elif isinstance(event, websocket.Binary):
                    connection.send_binary(event.data)
            output = connection.data_to_send()
            if output:
                sock.sendall(output)
            if connection.state is websocket.State.CLOSED:
                break
            data = sock.recv(self.recv_size)
            if not data:
                connection.receive_eof()
                return
        self.finish_close(sock)

    def finish_close(self, sock: socket.socket) -> None:
        """Close the TCP connection first (RFC 6455 7.1.1) without losing
        the Close frame: a socket closed with unread data sends a reset,
        which can discard what the client has not read yet. So: send FIN,
        then read until the client's FIN."""
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(self.close_timeout)
        while sock.recv(self.recv_size):
            pass


class EchoServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main(argv: List[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        sys.stderr.write("usage: ws_echo.py PORT\n")
        return 2
    server = EchoServer(("127.0.0.1", int(argv[1])), EchoHandler)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    print("ws_echo listening on 127.0.0.1:%d" % server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
