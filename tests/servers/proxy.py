"""An HTTP proxy in front of an object-store server: added latency, throttling and dropped connections.

``FaultyProxy(upstream_port, delay=0.02)`` forwards every request to ``127.0.0.1:<upstream_port>``
after ``delay`` seconds, over a kept-alive connection per client connection. ``fault`` (a callable
of ``(number, method, path)``, the number counting requests from 1) may answer a request with a
fault instead of forwarding it:

- ``"throttle"``: S3's ``503 SlowDown`` (Azure reads the same status as "server busy"), nothing forwarded;
- ``"conflict"``: S3's ``409 ConditionalRequestConflict`` ("a conflicting operation is in progress,
  retry"; Azure reads it as a 409 of that code, not ``BlobAlreadyExists``), nothing forwarded;
- ``"no-conditions"``: forwarded without its ``If-None-Match`` and ``If-Match`` headers, as a
  server that ignores conditional writes would treat it;
- ``"drop"``: the connection is closed without an answer, nothing forwarded;
- ``"drop-after"``: the request is forwarded (the server acts on it) and the connection is closed
  before the answer reaches the client: the worst case for a write.

It runs in threads of the process that starts it, or alone:
``python -m tests.servers.proxy --upstream PORT [--delay SECONDS]`` prints ``proxy listening on
127.0.0.1:<port>``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Fault = Callable[[int, str, str], str | None]
_SLOW_DOWN = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
_CONFLICT = (
    b"<Error><Code>ConditionalRequestConflict</Code><Message>A conflicting conditional operation is "
    b"currently in progress against this resource. Please try again.</Message></Error>"
)
#: The faults answered without forwarding: ``action: (status, reason, body)``.
_ANSWERS = {"throttle": (503, "Slow Down", _SLOW_DOWN), "conflict": (409, "Conflict", _CONFLICT)}
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
}


class FaultyProxy:
    """A threaded HTTP proxy on a free port of 127.0.0.1 (``port``); ``close()`` stops it."""

    def __init__(self, upstream_port: int, delay: float = 0.0, fault: Fault | None = None) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self.fault = fault
        self.requests = 0
        #: Every request answered: ``(start, end, method, path)``, times from ``time.monotonic()``.
        self.spans: list[tuple[float, float, str, str]] = []
        self.faults: list[tuple[int, str, str, str]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _forward(self) -> None:
                start = time.monotonic()
                try:
                    self._answer()
                finally:
                    with proxy._lock:
                        proxy.spans.append((start, time.monotonic(), self.command, self.path))

            def _answer(self) -> None:
                body = self._body()
                with proxy._lock:
                    proxy.requests += 1
                    number = proxy.requests
                action = proxy.fault(number, self.command, self.path) if proxy.fault else None
                if action:
                    proxy.faults.append((number, self.command, self.path, action))
                if proxy.delay:
                    time.sleep(proxy.delay)
                if action in _ANSWERS:
                    status, reason, payload = _ANSWERS[action]
                    self.send_response(status, reason)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if action == "drop":
                    self._drop()
                    return
                upstream = getattr(self, "_upstream", None)
                if upstream is None:
                    upstream = self._upstream = http.client.HTTPConnection(
                        "127.0.0.1", proxy.upstream_port, timeout=120
                    )
                dropped = _HOP_BY_HOP | (
                    {"if-none-match", "if-match"} if action == "no-conditions" else set()
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    payload = response.read()
                except (OSError, http.client.HTTPException):
                    self._upstream = None
                    upstream.close()
                    self._drop()
                    return
                if action == "drop-after":
                    self._drop()
                    return
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                # A HEAD answer has no body; its Content-Length is the object's size, kept as it is.
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _drop(self) -> None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="faulty-proxy", daemon=True)
        self._thread.start()

    def most_at_once(self, method: str, path_part: str, since: float = 0.0) -> int:
        """Return the most requests of ``method`` on a path holding ``path_part`` answered at once."""
        with self._lock:
            spans = [(s, e) for s, e, m, p in self.spans if m == method and path_part in p and s >= since]
        edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
        most = now = 0
        for _, step in edges:  # an end sorts before a start at the same instant
            now += step
            most = max(most, now)
        return most

    def sequential(self, since: float = 0.0, until: float = float("inf")) -> int:
        """Return the most requests started in ``[since, until]`` that ran one after another.

        That is the round trips on the critical path of what made them: requests in flight at
        once count once. (The longest chain of requests each starting after the one before it
        ended, found by taking the earliest to end first.)
        """
        with self._lock:
            spans = sorted((e, s) for s, e, _, _ in self.spans if since <= s <= until)
        chain, ended = 0, float("-inf")
        for end, start in spans:
            if start >= ended:
                chain, ended = chain + 1, end
        return chain

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", type=int, required=True, help="the server's port on 127.0.0.1")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds added to every request")
    args = parser.parse_args()
    proxy = FaultyProxy(args.upstream, delay=args.delay)
    print(f"proxy listening on 127.0.0.1:{proxy.port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
