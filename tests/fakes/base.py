"""What the fake APIs share: a JSON request handler and a server running in a thread."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class JsonHandler(BaseHTTPRequestHandler):
    """Routes every method to `_dispatch(method)`; quiet; HTTP/1.1 keep-alive."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _dispatch(self, method: str) -> None:
        raise NotImplementedError

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
