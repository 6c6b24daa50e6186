"""``xlxmert train-all``: every stage from ShapeScenes data to an evaluated, documented model folder."""

from __future__ import annotations

import argparse

from xlxmert.cli.options import add_config_flags, config_values, log_config


def _train_all(args: argparse.Namespace) -> int:
    from xlxmert.training.train_all import TrainAllConfig, train_all

    config = TrainAllConfig.from_preset(args.preset, **config_values(args, TrainAllConfig))
    log_config(config)
    summary = train_all(args.out, config, work=args.work, progress=not args.quiet, stop_after=args.stop_after)
    if summary is None:
        return 0
    print(
        f"wrote {args.out} (model card: {args.out}/README.md); "
        f"training took {summary['training_seconds']:.0f} s"
    )
    work = args.work or f"{args.out}.work"
    for split in summary["stages"]["evaluation"]["report"]:
        print(f"  {split}: {work}/eval/{split}/table.md")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train-all",
        help="run a whole recipe (shapes-64: the shipped model) from data to an evaluated model folder",
        description=(
            "Run the whole pipeline (data, tokenizer, backbone, features, vocabulary, generator, "
            "pretraining, evaluation, model card). Completed stages are skipped; an interrupted run "
            "resumes when the same command is run again."
        ),
    )
    p.add_argument(
        "--preset",
        default="shapes-64",
        choices=("shapes-64", "tiny"),
        help="the recipe: shapes-64 rebuilds the shipped model; tiny is the same at test sizes",
    )
    p.add_argument("--out", required=True, help="model folder to write (e.g. models/shapes-64)")
    p.add_argument("--work", default=None, help="folder for intermediate outputs (default OUT.work)")
    p.add_argument(
        "--stop-after",
        default=None,
        metavar="STAGE",
        help="stop once this stage is complete (data, tokenizer, backbone, features, vocabulary, "
        "generator, pretraining, pretraining-2, ...)",
    )
    add_config_flags(
        p, "xlxmert.training.train_all.TrainAllConfig", skip=("preset",), title="the recipe (TrainAllConfig)"
    )
    p.epilog = (
        "Unset options take the recipe's values (TrainAllConfig.PRESETS); the defaults shown are "
        "--preset's (`xlxmert train-all --preset tiny --help`)."
    )
    p.set_defaults(func=_train_all)
