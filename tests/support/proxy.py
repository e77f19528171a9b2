"""A TCP proxy that can refuse requests on cue: a tracking server going away, made
deterministic. Every request gets a connection of its own (`Connection: close` upstream),
so the proxy sees each request line and decides, by counting, which ones fail: no sleeps
race the code under test."""

from __future__ import annotations

import socket
import threading

__all__ = ["RefusingProxy"]

_FOREVER = 10**9


class RefusingProxy:
    """Forwards HTTP requests to 127.0.0.1:`upstream_port`; once armed with `refuse_from`,
    the first request whose line contains the marker and the next ones, `count` in all,
    are cut off without an answer, as by a server that went away."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._marker: str | None = None
        self._left = 0  # requests still to refuse once triggered (0: not triggered)
        self._count = 0
        self.refused: list[str] = []  # the request lines cut off, in order
        self._closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def refuse_from(self, marker: str, count: int = _FOREVER) -> None:
        """Cut off the first request containing `marker` and the `count - 1` after it."""
        with self._lock:
            self._marker, self._count, self._left = marker, count, 0

    def stop_refusing(self) -> None:
        with self._lock:
            self._marker, self._left = None, 0

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _refuse(self, line: str) -> bool:
        with self._lock:
            if self._left == 0 and self._marker is not None and self._marker in line:
                self._left, self._marker = self._count, None
            if self._left == 0:
                return False
            self._left -= 1
            self.refused.append(line)
            return True

    def _serve(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            request = _read_request(conn)
            if request is None:
                return
            head, body = request
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            if self._refuse(line):
                return  # closed without an answer: the client sees the server gone
            with socket.create_connection(self.upstream) as upstream:
                upstream.sendall(_close_after(head, self.upstream) + body)
                while chunk := upstream.recv(65536):
                    conn.sendall(chunk)


def _read_request(conn: socket.socket) -> tuple[bytes, bytes] | None:
    """(head, body) of one HTTP request; None when the client sent nothing."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    headers = {
        k.strip().lower(): v.strip()
        for k, _, v in (h.partition(b":") for h in head.split(b"\r\n")[1:])
    }
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while not body.endswith(b"0\r\n\r\n"):
            body += conn.recv(65536)
    else:
        length = int(headers.get(b"content-length", b"0"))
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
    return head, body


def _close_after(head: bytes, upstream: tuple[str, int]) -> bytes:
    """The request head with `Connection: close`, so one connection carries one request,
    and the upstream's `Host` (the server's security middleware checks it)."""
    dropped = (b"connection:", b"host:")
    lines = [h for h in head.split(b"\r\n") if not h.lower().startswith(dropped)]
    host = f"Host: {upstream[0]}:{upstream[1]}".encode()
    return b"\r\n".join([*lines, host, b"Connection: close"]) + b"\r\n\r\n"
