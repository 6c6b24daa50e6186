"""Every numeric option of every command, checked when the command line is parsed (before any work).

:func:`check_numbers` walks the parser once it is built and replaces each ``type=int`` /
``type=float`` option's type with a checked one: a float must be finite (``nan`` and ``inf`` are
refused everywhere) and every option named in :data:`RANGES` must lie in its range. A bad value is
argparse's one-line usage error, exit 2: ``argument --temperature: must be a number in [0, 100],
got 'nan'``. Limits that depend on the model (e.g. sampling steps against its grid) are checked by
the library, also before work starts.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

COUNT_MAX = 2**31 - 1  # counts (steps, sizes, batch sizes): what fits every index type
SEED_MAX = 2**63 - 1  # torch.Generator.manual_seed and numpy's SeedSequence both take it

# Options counted from 1 (steps, sizes, batch sizes, counts).
_COUNTS = """steps batch_size checkpoint_every eval_every sample_every eval_samples k n niter vocab_size
chunk_size top_k num_captions sweeps num_train generator_steps eval_n grid_size vocab_clusters
pretrain_batch_size workers data_workers eval_steps evaluator_steps matcher_steps image_size
feature_dim size keep_checkpoints max_length sample_size epochs max_train max_eval answer_min_count
stop_after pretrain_steps max_concurrent max_caption_chars max_upload_mb""".split()

# option dest -> (low, high, low excluded); ints not named here must be >= 0, floats just finite.
RANGES: dict[str, tuple[float, float, bool]] = {
    **{name: (1, COUNT_MAX, False) for name in _COUNTS},
    "seed": (0, SEED_MAX, False),
    "port": (0, 65535, False),
    "lr": (0.0, 10.0, True),
    "pretrain_lr": (0.0, 10.0, True),
    "head_lr": (0.0, 10.0, True),
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
    "wait_timeout": (0.0, 86400.0, True),
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


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """The one quiet switch of every long-running command: ``-q/--quiet``, no progress bars."""
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
