"""The lifecycle every local fake shares: a stdlib HTTP server on 127.0.0.1 in a daemon thread."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Self


class LocalServer:
    """Start on a free port, stop, use as a context manager; subclasses build the server."""

    thread_name = "local-server"

    def __init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _make_server(self) -> ThreadingHTTPServer:
        raise NotImplementedError

    def start(self) -> Self:
        """Bind a free port on 127.0.0.1 and serve from a daemon thread."""
        if self._server is None:
            self._server = self._make_server()
            # A short poll interval keeps shutdown fast: tests start and stop many fakes.
            self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                            name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        """`http://127.0.0.1:PORT`, without a trailing slash."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        """The root URL with a trailing slash."""
        return self.origin + "/"
