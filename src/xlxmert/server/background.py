"""A real uvicorn server for an app on a free loopback port, in a background thread (tests, benchmark).

with BackgroundServer(create_app(model_dir)) as server:
    httpx.get(server.url + "/health")
"""

from __future__ import annotations

import socket
import threading
import time

from xlxmert.errors import XLXMERTError


class BackgroundServer:
    """Serve ``app`` with uvicorn on ``127.0.0.1`` (port chosen by the OS) until the ``with`` ends.

    ``url``: ``http://127.0.0.1:PORT``. Entering waits at most ``start_timeout_s`` for the server to
    listen; leaving asks it to stop and waits for its thread.
    """

    def __init__(self, app, start_timeout_s: float = 30.0, log_level: str = "warning") -> None:
        import uvicorn

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="off"))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._start_timeout_s = start_timeout_s

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._socket.close()
                raise XLXMERTError(f"the test server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._socket.close()
