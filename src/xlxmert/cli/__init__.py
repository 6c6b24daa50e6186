"""The ``xlxmert`` command line.

Each command group lives in its own module with a ``register(subparsers)`` function that adds its
sub-parser(s) and sets ``func`` (taking the parsed namespace, returning an exit code or None).
Argument namespaces stop here: command functions turn them into configs and call the library.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

from xlxmert.cli.options import check_numbers
from xlxmert.errors import XLXMERTError

# Order = order in ``xlxmert --help`` (the pipeline's order).
COMMAND_MODULES = (
    "xlxmert.cli.data",
    "xlxmert.cli.tokenizer",
    "xlxmert.cli.visual",
    "xlxmert.cli.pretrain",
    "xlxmert.cli.generator",
    "xlxmert.cli.paint",
    "xlxmert.cli.finetune",
    "xlxmert.cli.verify",
    "xlxmert.cli.evaluate",
    "xlxmert.cli.train_all",
    "xlxmert.cli.study",
    "xlxmert.cli.serve",
)


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error on a single stderr line (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from xlxmert import __version__

    parser = OneLineParser(
        prog="xlxmert",
        description="X-LXMERT: paint images from captions, caption images and answer questions.",
    )
    parser.add_argument("--version", action="version", version=f"xlxmert {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    check_numbers(parser)  # finite numbers, in range, for every command (cli.options)
    return parser


def _one_line_warnings(show):
    """``warnings.showwarning`` printing UserWarnings (the library's: a damaged checkpoint skipped,
    a caption cut) as one stderr line each; other categories go to ``show``."""

    def one_line(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, UserWarning):
            print(f"xlxmert: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return one_line


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``xlxmert`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            code = args.func(args)
    except XLXMERTError as exc:
        print(f"xlxmert: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "xlxmert: interrupted (finished work is kept; rerun the same command to resume)", file=sys.stderr
        )
        return 130
    except (
        FileNotFoundError,
        FileExistsError,
        PermissionError,
        IsADirectoryError,
        NotADirectoryError,
    ) as exc:
        print(f"xlxmert: error: {exc.strerror or exc}: {exc.filename}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the CLI promises no tracebacks
        if os.environ.get("XLXMERT_DEBUG"):
            raise
        print(
            f"xlxmert: internal error: {type(exc).__name__}: {exc} "
            "(rerun with XLXMERT_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 1
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
