"""``xlxmert serve``: the web demo and HTTP API (FastAPI + uvicorn; ``pip install 'xlxmert[serve]'``).

    xlxmert serve [--model DIR] [--host 127.0.0.1] [--port 8000] [--max-concurrent N]

Then open http://127.0.0.1:8000 (the page) or http://127.0.0.1:8000/docs (the API).
"""

from __future__ import annotations

import argparse
import sys

from xlxmert.errors import XLXMERTError
from xlxmert.server.limits import ServerConfig

DEFAULTS = ServerConfig()


def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from xlxmert.server.app import create_app
    except ImportError as exc:
        raise XLXMERTError(
            f"the web demo needs the serve extra ({exc.name} is missing): pip install 'xlxmert[serve]'"
        ) from None
    from xlxmert.cli.paint import _model_dir

    if not 0 <= args.port <= 65535:
        raise XLXMERTError(f"--port must be between 0 and 65535, got {args.port}")
    config = ServerConfig(
        max_concurrent=args.max_concurrent,
        max_waiting=args.max_waiting,
        wait_timeout_s=args.wait_timeout,
        max_caption_chars=args.max_caption_chars,
        max_upload_bytes=args.max_upload_mb * 1024 * 1024,
    )
    model_dir = _model_dir(args)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"xlxmert: warning: --host {args.host} lets other machines reach this server; "
            "it has no authentication",
            file=sys.stderr,
        )
    app = create_app(model_dir, config)
    print(
        f"xlxmert: serving {model_dir} on http://{args.host}:{args.port} "
        f"(API at /docs; {config.max_concurrent} at work at once; Ctrl+C stops)",
        file=sys.stderr,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="web demo and HTTP API: paint step by step, caption, answer")
    p.add_argument("--model", help="model folder (default: $XLXMERT_MODEL, else models/shapes-64)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--max-concurrent",
        type=int,
        default=DEFAULTS.max_concurrent,
        help=f"requests whose model work runs at once (default {DEFAULTS.max_concurrent})",
    )
    p.add_argument(
        "--max-waiting",
        type=int,
        default=DEFAULTS.max_waiting,
        help=f"requests that may wait for a slot; more get 503 (default {DEFAULTS.max_waiting})",
    )
    p.add_argument(
        "--wait-timeout",
        type=float,
        default=DEFAULTS.wait_timeout_s,
        help=f"seconds a request waits before its 503 (default {DEFAULTS.wait_timeout_s:g})",
    )
    p.add_argument(
        "--max-caption-chars",
        type=int,
        default=DEFAULTS.max_caption_chars,
        help=f"longest caption or question (default {DEFAULTS.max_caption_chars})",
    )
    p.add_argument(
        "--max-upload-mb",
        type=int,
        default=DEFAULTS.max_upload_bytes // 2**20,
        help=f"largest image upload in MiB (default {DEFAULTS.max_upload_bytes // 2**20})",
    )
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=_serve)
