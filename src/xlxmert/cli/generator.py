"""``xlxmert generator``: train the SPADE image generator, convert the authors' checkpoint.

xlxmert generator train --data DATA --vocab VOCAB --size 64 --out RUN [--steps ... --bf16]
xlxmert generator convert G_60.pth --out DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from xlxmert.cli.options import add_config_flags, config_values, log_config
from xlxmert.cli.output import check_output_dir
from xlxmert.errors import XLXMERTError


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser("generator", help="train the image generator or convert the authors' one")
    sub = group.add_subparsers(dest="generator_command", metavar="COMMAND", parser_class=type(group))
    group.set_defaults(func=lambda args: (group.print_help(), 2)[1])

    train = sub.add_parser(
        "train", help="train G and D on ground-truth visual ids (resumes an existing --out)"
    )
    train.add_argument("--data", required=True, type=Path, help="data root holding <split>/images")
    train.add_argument("--vocab", required=True, type=Path, help="vocabulary folder with ids/<split>.npy")
    train.add_argument(
        "--out", required=True, type=Path, help="run folder (gets generator/, samples/, checkpoints/)"
    )
    add_config_flags(
        train,
        "xlxmert.training.generator.GeneratorTrainConfig",
        flags={"output_size": "--size"},
        preset=None,
        title="GeneratorTrainConfig",
    )
    train.set_defaults(func=_train)

    convert = sub.add_parser("convert", help="convert the authors' G_60.pth into a generator folder")
    convert.add_argument("checkpoint", type=Path, help="G_60.pth")
    convert.add_argument(
        "--out", required=True, type=Path, help="generator folder (config.json + model.safetensors)"
    )
    convert.set_defaults(func=_convert)


def _train(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out")  # before any work
    from xlxmert.training.generator import GeneratorTrainConfig, train_generator

    config = GeneratorTrainConfig(**config_values(args, GeneratorTrainConfig))
    if config.perceptual is not None and not Path(config.perceptual).is_dir():
        raise XLXMERTError(f"--perceptual must be a local folder; {config.perceptual} is not one")
    log_config(config)
    result = train_generator(args.data, args.vocab, args.out, config, progress=not args.quiet)
    speed = f", {result.images_per_second:.1f} training images/s" if result.history else ""
    print(
        f"generator written to {result.generator_dir} after {result.step} steps{speed}; "
        f"samples in {args.out / 'samples'}"
    )
    if result.quality:
        print(
            f"reconstruction on {config.eval_split}: "
            + json.dumps({k: round(v, 4) for k, v in result.quality.items()})
        )
    return 0


def _convert(args: argparse.Namespace) -> int:
    from xlxmert.models.convert import convert_reference_generator

    generator = convert_reference_generator(args.checkpoint)
    generator.save_pretrained(args.out)
    count = sum(p.numel() for p in generator.parameters())
    print(f"converted {args.checkpoint} → {args.out} ({count:,} parameters)")
    return 0
