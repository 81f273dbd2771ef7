"""A stand-in for the Hugging Face Hub on loopback that counts the connections it gets (tests of what
must never contact the Hub, and of how an unreachable Hub is reported)."""

from __future__ import annotations

import socket
import threading


class HubListener:
    """A loopback TCP listener standing in for the Hugging Face Hub: counts the connections it gets."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


def closed_port_url() -> str:
    """An http URL on loopback where nobody listens (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"
