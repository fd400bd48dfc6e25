"""A small threaded HTTP receiver for what pytest-httpserver cannot do.

pytest-httpserver is one single-threaded server per session: a handler that hangs would block
every later test, and concurrent senders would be served one by one. `LocalReceiver` serves each
request in its own thread, records it, and lets a test decide the answer, including answers that
never come (`hang`) or come too slowly (`trickle`).
"""

import contextlib
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Long enough to outlast any connector timeout used in the tests, short enough that a forgotten
# receiver never keeps the test run alive.
HANG_LIMIT_SECONDS = 30


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    # bytes are sent with a Content-Length; an iterable is streamed chunk by chunk.
    body: bytes | Iterable[bytes] = b"ok"


class LocalReceiver:
    """A threaded HTTP server on a loopback address; use as a context manager."""

    def __init__(
        self,
        answer: Callable[[ReceivedRequest], Answer] | None = None,
        *,
        host: str = "127.0.0.1",
    ) -> None:
        self.answer = answer or (lambda request: Answer())
        self.requests: list[ReceivedRequest] = []
        # Set when the receiver stops: releases handlers that hang or trickle.
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._server = self._make_server(host)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _make_server(self, host: str) -> ThreadingHTTPServer:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                request = ReceivedRequest(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length),
                )
                with receiver._lock:
                    receiver.requests.append(request)
                answer = receiver.answer(request)
                # The client may give up (a timeout): that is the point of some tests.
                with contextlib.suppress(OSError):
                    self._write(answer)

            do_GET = do_POST

            def _write(self, answer: Answer) -> None:
                self.send_response(answer.status)
                for name, value in answer.headers:
                    self.send_header(name, value)
                if isinstance(answer.body, bytes):
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                    return
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.flush()
                for chunk in answer.body:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                self.close_connection = True

            def log_message(self, format: str, *args) -> None:  # noqa: A002
                pass  # keep the receiver out of the captured logs

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            daemon_threads = True
            # Many workers send at once; the default backlog of 5 would refuse connections.
            request_queue_size = 256

        return Server((host, 0), Handler)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url_for(self, path: str) -> str:
        return f"{self.url}{path}"

    def hang(self, request: ReceivedRequest) -> Answer:
        """An answer that never comes while the client waits (released when stopping)."""
        self.stopping.wait(HANG_LIMIT_SECONDS)
        return Answer(status=200, body=b"too late")

    def trickle(self, *, interval_seconds: float) -> Callable[[ReceivedRequest], Answer]:
        """A 200 whose body arrives one byte per interval, forever (until stopping)."""

        def chunks() -> Iterable[bytes]:
            while not self.stopping.wait(interval_seconds):
                yield b"."

        return lambda request: Answer(status=200, body=chunks())

    def __enter__(self) -> "LocalReceiver":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
