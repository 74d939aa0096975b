"""What the fake APIs share: a JSON request handler and a server running in a thread."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class JsonHandler(BaseHTTPRequestHandler):
    """Routes every method to `_dispatch(method)`; quiet; HTTP/1.1 keep-alive."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _dispatch(self, method: str) -> None:
        raise NotImplementedError

    def _reply(self, method: str, status: int, data: bytes, headers: dict[str, str] | None = None,
               content_type: str = "application/json") -> None:  # fmt: skip
        """Record the request in `state.requests`, then answer; a client gone away is fine."""
        with self.state.lock:  # type: ignore[attr-defined]
            self.state.requests.append((time.monotonic(), method, self.path, status))  # type: ignore[attr-defined]
        try:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")


class ThreadedServer:
    """Serves `handler` (a JsonHandler subclass given `state`) on 127.0.0.1 in a daemon thread."""

    prefix = ""  # the API's path prefix, e.g. /v1

    def __init__(self, handler: type[JsonHandler], state: Any, port: int = 0) -> None:
        self.state = state
        bound = type("Handler", (handler,), {"state": state})
        self.server = ThreadingHTTPServer(("127.0.0.1", port), bound)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{self.prefix}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
