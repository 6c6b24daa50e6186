"""The ``xlxmert`` command line.

Each command group lives in its own module with a ``register(subparsers)`` function that adds its
sub-parser(s) and sets ``func`` (taking the parsed namespace, returning an exit code or None).
Argument namespaces stop here: command functions turn them into configs and call the library.
Flags that mirror a config dataclass are generated from it (:func:`xlxmert.cli.options.add_config_flags`);
every command has ``-q/--quiet`` and ``-v/--verbose``, which set the level of the ``xlxmert`` logger.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from xlxmert.cli.options import OneLineParser, add_verbosity, check_numbers, configure_logging
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
    _add_verbosity(sub)
    return parser


def _add_verbosity(subparsers: argparse._SubParsersAction) -> None:
    """``-q``/``-v`` on every command (each parser without sub-commands of its own)."""
    for parser in set(subparsers.choices.values()):
        inner = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if inner:
            _add_verbosity(inner[0])
        else:
            add_verbosity(parser)


def _one_line_warnings(show):
    """``warnings.showwarning`` printing UserWarnings (the library's: a damaged checkpoint skipped,
    a caption cut) as one stderr line each; other categories go to ``show``."""

    def one_line(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, UserWarning):
            print(f"xlxmert: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return one_line


def _bars_with_logging(args: argparse.Namespace):
    """Log lines printed above the progress bars instead of through them."""
    if getattr(args, "quiet", False):
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm(loggers=[logging.getLogger("xlxmert")])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``xlxmert`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    configure_logging(args)
    try:
        with warnings.catch_warnings(), _bars_with_logging(args):
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
