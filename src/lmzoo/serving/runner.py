"""Starting uvicorn: bound here first, so a port in use is a one-line error, not a log and an exit."""
from __future__ import annotations

import errno
import socket
import threading

import uvicorn

from lmzoo.errors import LmzooError

BACKLOG = 2048  # uvicorn's default


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise LmzooError(f"port {port} on {host} is in use; pick another with --port") from None
        raise LmzooError(f"cannot listen on {host}:{port} ({err.strerror}); check --host and --port") from None
    sock.listen(BACKLOG)  # clients that connect while the model loads wait in the backlog
    return sock


def make_server(app, log_level: str = "info") -> uvicorn.Server:
    # timeout_graceful_shutdown: streams still open at Ctrl-C are closed after a second.
    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=1))


class ServerThread:
    """The app served on a free loopback port from a background thread (tests and benchmarks)."""

    def __init__(self, app, host: str = "127.0.0.1"):
        self.sock = bind(host, 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.server = make_server(app, log_level="warning")
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server thread stopped before it started")
            self.thread.join(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
