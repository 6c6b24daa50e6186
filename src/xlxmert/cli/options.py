"""The options every command shares: flags generated from config dataclasses, ``--config FILE.json``,
``-q/-v`` (Python ``logging``), and numbers checked when the command line is parsed.

**Config flags.** :func:`add_config_flags` gives each field of a config dataclass a flag,
``--field-name`` (bools ``--x/--no-x``, tuples ``nargs`` that also take ``1,1,1``), its help from
``field(metadata={"help": ..., "choices": ..., "metavar": ...})`` and the effective default in the
help: the preset's value (of ``--preset X`` when it comes before ``--help``), else the field's. A
flag the user does not give sets nothing, so a config is built as preset → ``--config`` file →
explicit flags (:func:`config_values`).

**Numbers.** Every int/float option is parsed by :func:`checked_number`: a float must be finite
(``nan``, ``inf`` are refused everywhere) and an option named in :data:`RANGES` must lie in its
range. A bad value is argparse's one-line usage error, exit 2: ``argument --temperature: must be a
number in [0, 100], got 'nan'``. Limits that depend on the model (e.g. sampling steps against its
grid) are checked by the library, also before work starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import math
import sys
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

COUNT_MAX = 2**31 - 1  # counts (steps, sizes, batch sizes): what fits every index type
SEED_MAX = 2**63 - 1  # torch.Generator.manual_seed and numpy's SeedSequence both take it
LOGGER = "xlxmert"  # the library's loggers are its children (logging.getLogger(__name__))

# Options counted from 1 (steps, sizes, batch sizes, counts).
_COUNTS = """steps batch_size checkpoint_every eval_every sample_every eval_samples k n niter vocab_size
chunk_size top_k num_captions sweeps num_train generator_steps eval_n grid_size vocab_clusters
pretrain_batch_size workers data_workers eval_steps evaluator_steps matcher_steps image_size
feature_dim size keep_checkpoints max_length sample_size epochs max_train max_eval answer_min_count
stop_after pretrain_steps max_concurrent max_caption_chars max_upload_mb output_size num_eval
tokenizer_vocab_size backbone_steps vocab_sample_size generator_batch_size n_boot set_boot num_clusters nredo
timing_images finetune_epochs finetune_batch_size finetune_max_train num_samples hidden_size
num_attention_heads intermediate_size l_layers r_layers x_layers max_text_length""".split()

# option dest -> (low, high, low excluded); ints not named here must be >= 0, floats just finite.
RANGES: dict[str, tuple[float, float, bool]] = {
    **{name: (1, COUNT_MAX, False) for name in _COUNTS},
    "seed": (0, SEED_MAX, False),
    "port": (0, 65535, False),
    "lr": (0.0, 10.0, True),
    "pretrain_lr": (0.0, 10.0, True),
    "head_lr": (0.0, 10.0, True),
    "lr_generator": (0.0, 10.0, True),
    "lr_discriminator": (0.0, 10.0, True),
    "temperature": (0.0, 100.0, False),
    "eval_temperature": (0.0, 100.0, False),
    "guidance_scale": (0.0, 100.0, False),
    "eval_guidance_scale": (0.0, 100.0, False),
    "caption_dropout": (0.0, 1.0, False),
    "full_mask_prob": (0.0, 1.0, False),
    "mask_prob": (0.0, 1.0, True),
    "ccc_class_balance": (0.0, 1.0, False),
    "warmup_ratio": (0.0, 1.0, False),
    "weight_decay": (0.0, 10.0, False),
    "dropout": (0.0, 1.0, False),
    "confidence": (0.0, 1.0, True),
    "wait_timeout": (0.0, 86400.0, True),
}

# tuple option dest -> (check of the whole value, what it must be)
SEQUENCE_CHECKS: dict[str, tuple[Callable[[tuple], bool], str]] = {
    "task_ratio": (lambda ratio: sum(ratio) > 0, "three whole numbers V,T,M with a positive sum"),
}


def checked_number(kind: type, dest: str) -> Callable[[str], float | int]:
    """An argparse ``type`` parsing ``kind`` (int or float) in the range :data:`RANGES` gives ``dest``."""
    low, high, low_open = RANGES.get(dest, (0, None, False) if kind is int else (None, None, False))

    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            value = None
        bad = value is None or (kind is float and not math.isfinite(value))
        bad = bad or (low is not None and (value < low or (low_open and value == low)))
        if bad or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {_what(kind, low, high, low_open)}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _what(kind: type, low, high, low_open: bool) -> str:
    noun = "a whole number" if kind is int else "a finite number"
    if low is None and high is None:
        return noun
    if high is None:
        return f"{noun} {'>' if low_open else '≥'} {low}"
    return f"{noun} in {'(' if low_open else '['}{low}, {high}]"


def check_numbers(parser: argparse.ArgumentParser) -> None:
    """Give every int/float option of ``parser`` and its sub-parsers a checked type (in place)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                check_numbers(sub)
        elif action.type in (int, float):
            action.type = checked_number(action.type, action.dest)


# -- the parser ------------------------------------------------------------------------------------
class _EffectiveHelp(argparse._HelpAction):
    """``-h/--help`` that first shows the defaults of the ``--preset`` given before it."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        for action in parser._actions:
            render = getattr(action, "render_help", None)
            if render is not None:
                action.help = render(namespace)
        super().__call__(parser, namespace, values, option_string)


class _Formatter(argparse.HelpFormatter):
    """Shows a tuple flag as ``--task-ratio V,T,M`` (it also takes ``V T M``)."""

    def _format_args(self, action, default_metavar):
        if isinstance(action, _Sequence):
            return self._metavar_formatter(action, default_metavar)(1)[0]
        return super()._format_args(action, default_metavar)


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error on a single stderr line (exit 2) and whose help shows
    the effective default of every generated config flag. Config flags are added when the parser
    is first used (:func:`add_config_flags`), so ``xlxmert --help`` imports no config module."""

    def __init__(self, *args: Any, add_help: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, add_help=False, **kwargs)
        self.deferred: list[Callable[[], None]] = []
        self.register("action", "help", _EffectiveHelp)
        if add_help:
            self.add_argument(
                "-h",
                "--help",
                action="help",
                default=argparse.SUPPRESS,
                help="show this help message and exit",
            )

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        self.add_deferred()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self.add_deferred()
        return super().format_help()

    def add_deferred(self) -> None:
        """Add the options whose adding was deferred (see :func:`add_config_flags`)."""
        while self.deferred:
            self.deferred.pop(0)()

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_bf16_alias(parser: argparse.ArgumentParser) -> None:
    """``--bf16``: the same as ``--mixed-precision bf16`` (a training config's field)."""
    parser.add_argument(
        "--bf16",
        dest="mixed_precision",
        action="store_const",
        const="bf16",
        default=argparse.SUPPRESS,
        help="same as --mixed-precision bf16",
    )


# -- flags from config dataclasses -----------------------------------------------------------------
_SCALARS = (bool, int, float, str)


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """``(hint without None, whether None is allowed)``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        return (rest[0] if len(rest) == 1 else hint), True
    return hint, False


def _shape(hint: Any) -> tuple[type, int | None] | None:
    """``(element type, length)`` of a tuple field (length None: any), None for other types."""
    if typing.get_origin(hint) not in (tuple, list):
        return None
    args = typing.get_args(hint)
    if len(args) == 2 and args[1] is Ellipsis or typing.get_origin(hint) is list:
        return (args[0], None) if args and args[0] in _SCALARS else None
    return (args[0], len(args)) if args and all(a is args[0] for a in args) and args[0] in _SCALARS else None


def _parse_scalar(kind: type, dest: str) -> Callable[[str], Any]:
    return checked_number(kind, dest) if kind in (int, float) else kind


def _or_none(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse``, or None for ``none`` (a field that may be None)."""

    def parse_or_none(text: str) -> Any:
        return None if text.lower() == "none" else parse(text)

    parse_or_none.__name__ = parse.__name__
    return parse_or_none


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


class _Sequence(argparse.Action):
    """A tuple field: ``--x 1 1 1`` or ``--x 1,1,1``, each element checked."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        items = [part.strip() for value in values for part in value.split(",") if part.strip()]
        kind, length = self.shape
        if length is not None and len(items) != length:
            raise argparse.ArgumentError(
                self, f"needs {length} values, got {len(items)}: {' '.join(values)!r}"
            )
        try:
            value = tuple(_parse_scalar(kind, self.dest)(item) for item in items)
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentError(self, str(exc)) from None
        check, what = SEQUENCE_CHECKS.get(self.dest, (None, ""))
        if check is not None and not check(value):
            raise argparse.ArgumentError(self, f"must be {what}, got {' '.join(values)!r}")
        setattr(namespace, self.dest, value)


@dataclasses.dataclass(frozen=True)
class _Field:
    """One generated flag: the field it sets and how its values are read."""

    name: str
    hint: Any
    optional: bool
    choices: tuple | None

    def from_json(self, value: Any) -> Any:
        """``value`` (from a --config file) as the field's type; ValueError says what is wrong."""
        if value is None:
            if self.optional:
                return None
            raise ValueError("must not be null")
        shape = _shape(self.hint)
        if shape is not None:
            if not isinstance(value, list) or (shape[1] is not None and len(value) != shape[1]):
                raise ValueError(f"must be a list of {shape[1] or 'any number of'} {shape[0].__name__}s")
            value = tuple(self._scalar(shape[0], v) for v in value)
            check, what = SEQUENCE_CHECKS.get(self.name, (None, ""))
            if check is not None and not check(value):
                raise ValueError(f"must be {what}, got {list(value)}")
            return value
        return self._scalar(self.hint, value)

    def _scalar(self, kind: type, value: Any) -> Any:
        ok = {
            bool: isinstance(value, bool),
            int: isinstance(value, int) and not isinstance(value, bool),
            float: isinstance(value, (int, float)) and not isinstance(value, bool),
            str: isinstance(value, str),
        }[kind]
        if not ok:
            raise ValueError(f"must be a {kind.__name__}, got {json.dumps(value)}")
        if kind in (int, float):
            try:
                value = checked_number(kind, self.name)(repr(value))
            except argparse.ArgumentTypeError as exc:
                raise ValueError(str(exc)) from None
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        return value


def _default(cls: type, field: dataclasses.Field, preset: str | None) -> Any:
    presets = getattr(cls, "PRESETS", {})
    if preset in presets and field.name in presets[preset]:
        return presets[preset][field.name]
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def add_config_flags(
    parser: argparse.ArgumentParser,
    cls: type | str,
    *,
    only: Iterable[str] | None = None,
    skip: Iterable[str] = (),
    flags: dict[str, str] | None = None,
    preset: str | None = "preset",
    title: str | None = None,
) -> None:
    """One flag per field of the dataclass ``cls`` (``only`` those, in that order; not ``skip``;
    ``flags`` renames some), shown in the help group ``title``. ``preset`` is the option whose
    value picks ``cls.PRESETS`` for the help's effective defaults (None: the field defaults only).
    Fields of types a flag cannot hold (nested configs), and those whose flag the command writes
    itself, are left out. Adds ``--config FILE.json``
    once per parser. Read the values with :func:`config_values`. ``cls`` may be named
    (``"module.Class"``): the flags are then added when the parser is first used."""
    if isinstance(cls, str):
        module, _, name = cls.rpartition(".")
        kwargs = dict(only=only, skip=skip, flags=flags, preset=preset, title=title)
        parser.deferred.append(
            lambda: add_config_flags(parser, getattr(importlib.import_module(module), name), **kwargs)
        )
        return
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    names = list(only) if only is not None else [n for n in by_name if n not in set(skip)]
    group = parser.add_argument_group(title or f"{cls.__name__} (also in --config FILE.json)")
    known: dict[str, _Field] = parser.get_default("config_fields") or {}
    added = []
    for name in names:
        field = by_name[name]
        hint, optional = _unwrap(hints[name])
        shape = _shape(hint)
        if hint not in _SCALARS and shape is None:
            continue
        flag = (flags or {}).get(name, "--" + name.replace("_", "-"))
        if flag in parser._option_string_actions:  # written by hand: that flag is the field's
            continue
        meta = field.metadata
        spec = _Field(name, hint, optional, tuple(meta["choices"]) if "choices" in meta else None)
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS}
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif shape is not None:
            kwargs.update(action=_Sequence, nargs="+", metavar=meta.get("metavar", name.upper()))
        else:
            parse = _parse_scalar(hint, name)
            kwargs.update(type=_or_none(parse) if optional else parse, metavar=meta.get("metavar"))
            if spec.choices is not None:
                kwargs.update(choices=spec.choices + ((None,) if optional else ()))
                kwargs["metavar"] = kwargs["metavar"] or "{" + ",".join(map(str, spec.choices)) + "}"
        action = group.add_argument(flag, **kwargs)
        if shape is not None:
            action.shape = shape
        action.render_help = _help_renderer(
            cls, field, meta.get("help", ""), preset, parser.get_default(preset)
        )
        action.help = action.render_help(argparse.Namespace())
        known[name] = spec
        added.append(name)
    owners = dict(parser.get_default("config_owners") or {})
    owners[cls.__name__] = tuple(added)
    parser.set_defaults(config_fields=known, config_owners=owners)
    if not any("--config" in a.option_strings for a in parser._actions):
        parser.add_argument(
            "--config",
            metavar="FILE.json",
            type=_config_file(parser),
            help="a JSON object of field values (the names of the flags below, with _); "
            "applied over the preset, under the flags given",
        )


def _help_renderer(cls: type, field: dataclasses.Field, text: str, preset: str | None, fallback: Any):
    def render(namespace: argparse.Namespace) -> str:
        name = getattr(namespace, preset, fallback) if preset else None
        value = _default(cls, field, name)
        shown = "required" if value is dataclasses.MISSING else _fmt(value)
        where = f"; --{preset} {name}" if name and name in getattr(cls, "PRESETS", {}) else ""
        return f"{text} (default: {shown}{where})".lstrip().replace("%", "%%")

    return render


def _config_file(parser: argparse.ArgumentParser) -> Callable[[str], dict[str, Any]]:
    """The ``--config`` type: the file's fields, each checked like its flag (else a one-line error)."""

    def load(path: str) -> dict[str, Any]:
        try:
            data = json.loads(Path(path).read_text())
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {path}: {exc.strerror or exc}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise argparse.ArgumentTypeError(f"{path} is not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise argparse.ArgumentTypeError(f"{path} must hold a JSON object of field values")
        known: dict[str, _Field] = parser.get_default("config_fields")
        values = {}
        for key, value in data.items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise argparse.ArgumentTypeError(
                    f"{path}: unknown field {key!r}; known: {', '.join(sorted(known))}"
                )
            try:
                values[name] = known[name].from_json(value)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(f"{path}: {key} {exc}") from None
        return values

    load.__name__ = "config file"
    return load


def config_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` the user set: the ``--config`` file's, then the flags given."""
    names = args.config_owners[cls.__name__]
    values = {k: v for k, v in (getattr(args, "config", None) or {}).items() if k in names}
    values.update({name: getattr(args, name) for name in names if hasattr(args, name)})
    return values


# -- logging ---------------------------------------------------------------------------------------
def add_verbosity(parser: argparse.ArgumentParser) -> None:
    """``-q/--quiet`` (warnings only, no progress bars) and ``-v/--verbose`` (debug lines too)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-q", "--quiet", action="store_true", help="only warnings and errors; no progress bars"
    )
    group.add_argument("-v", "--verbose", action="store_true", help="also debug lines (e.g. the config used)")


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (tests capture it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(args: argparse.Namespace) -> logging.Logger:
    """The ``xlxmert`` logger at the level ``-q``/``-v`` ask for (INFO by default), one stderr
    handler; called once per command line by :func:`xlxmert.cli.main`."""
    logger = logging.getLogger(LOGGER)
    for handler in [h for h in logger.handlers if isinstance(h, _Stderr)]:
        logger.removeHandler(handler)
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    quiet, verbose = getattr(args, "quiet", False), getattr(args, "verbose", False)
    logger.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    return logger


def log_config(config: Any) -> None:
    """A debug line (``-v``) with the config a command built."""
    logging.getLogger(LOGGER).debug("%s: %s", type(config).__name__, json.dumps(dataclasses.asdict(config)))
