"""``xlxmert serve``: the web demo and HTTP API (needs the ``serve`` extra: FastAPI, uvicorn).

    from xlxmert.server import create_app, ServerConfig
    app = create_app("models/shapes-64", ServerConfig(max_concurrent=2))

:mod:`xlxmert.server.app` holds the endpoints, :mod:`xlxmert.server.limits` the limits and the
work queue, :mod:`xlxmert.server.background` a server on a loopback port in a background thread
(tests and the benchmark); ``static/index.html`` is the one page.
"""

from __future__ import annotations


def __getattr__(name: str):
    # Lazy: `import xlxmert.server` must not need FastAPI until the app is made.
    if name == "create_app":
        from xlxmert.server.app import create_app

        return create_app
    if name == "ServerConfig":
        from xlxmert.server.limits import ServerConfig

        return ServerConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ServerConfig", "create_app"]
