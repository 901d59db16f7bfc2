"""The floor for a chat relay in Python: what the interpreter and the
threads cost before any of the chat's own work.

    python3 bench/floor.py threads HOST PORT
    python3 bench/floor.py select HOST PORT

It prints `listening on HOST:PORT` first (PORT 0: a free one).

Each relays every line a client sends to every other client, prefixed
like ncat's "<userN> ", and nothing else: no names, no ids, no times, no
flood limit, no queues. "threads" has a reader thread per client, as the
chat server has, on blocking sockets (a slow reader holds up the
sender); "select" one thread for all, as ncat has, on non-blocking ones
(a send that would block is dropped). bench/fanout.py measures either in ncat's
place: `--peer "python3 bench/floor.py threads"`. Not a server to use.
"""

import selectors
import socket
import sys
import threading


def relay(clients, lock, sender, data):
    with lock:
        for sock in clients:
            if sock is not sender:
                try:
                    sock.sendall(data)
                except OSError:
                    pass


def serve_threads(server):
    clients = []
    lock = threading.Lock()

    def read(sock, prefix):
        rest = b""
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            rest += data
            end = rest.rfind(b"\n") + 1
            if end:
                lines, rest = rest[:end], rest[end:]
                relay(clients, lock, sock, prefix + lines.replace(b"\n", b"\n" + prefix)[
                    :-len(prefix)])
        with lock:
            clients.remove(sock)
        sock.close()

    serial = 0
    while True:
        sock = accept(server, True)     # its reader blocks in recv()
        serial += 1
        with lock:
            clients.append(sock)
        greet(sock)     # once it is among those relayed to: it may take part now
        threading.Thread(target=read, args=(sock, b"<user%d> " % serial), daemon=True).start()


def serve_select(server):
    clients = {}    # socket -> [prefix, what came after its last newline]
    sel = selectors.DefaultSelector()
    sel.register(server, selectors.EVENT_READ)
    serial = 0
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            if sock is server:
                sock = accept(server, False)
                serial += 1
                clients[sock] = [b"<user%d> " % serial, b""]
                sel.register(sock, selectors.EVENT_READ)
                greet(sock)
                continue
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                sel.unregister(sock)
                del clients[sock]
                sock.close()
                continue
            state = clients[sock]
            prefix, rest = state
            rest += data
            end = rest.rfind(b"\n") + 1
            state[1] = rest[end:]
            if end:
                out = prefix + rest[:end].replace(b"\n", b"\n" + prefix)[:-len(prefix)]
                for other in clients:
                    if other is not sock:
                        try:
                            other.send(out)
                        except OSError:
                            pass


def accept(server, blocking):
    sock, _ = server.accept()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(blocking)
    return sock


def greet(sock):
    """What the benchmark waits for before it takes a client for admitted."""
    try:
        sock.send(b"<announce> connected\n")
    except OSError:
        pass


def main(argv):
    if len(argv) != 3 or argv[0] not in ("threads", "select"):
        sys.exit("usage: floor.py threads|select HOST PORT")
    mode, host, port = argv[0], argv[1], int(argv[2])
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, port))
    server.listen(128)
    print("listening on %s:%d" % server.getsockname()[:2], flush=True)    # port 0: a free one
    (serve_threads if mode == "threads" else serve_select)(server)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        pass
