"""``xlxmert train-all``: every stage from ShapeScenes data to an evaluated, documented model folder."""

from __future__ import annotations

import argparse

from xlxmert.cli.options import add_quiet
from xlxmert.cli.pretrain import task_ratio


def _train_all(args: argparse.Namespace) -> int:
    from xlxmert.training.train_all import CLI_FLAGS, TrainAllConfig, train_all

    overrides = {name: getattr(args, name) for name in CLI_FLAGS if getattr(args, name) is not None}
    config = TrainAllConfig.from_preset(args.preset, **overrides)
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
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--num-train", type=int, default=None, help="training scenes")
    p.add_argument("--generator-steps", type=int, default=None)
    p.add_argument(
        "--pretrain-steps",
        type=int,
        default=None,
        help="the first pretraining run's (continuations set their own)",
    )
    p.add_argument("--eval-n", type=int, default=None, help="images per evaluated split")
    p.add_argument(
        "--backbone-output",
        choices=("features", "predictions"),
        default=None,
        help="grid features: the backbone's feature map or its per-cell predictions",
    )
    p.add_argument("--grid-size", type=int, default=None, help="cells per side of the visual grid")
    p.add_argument("--vocab-clusters", type=int, default=None, help="K visual words")
    p.add_argument("--pretrain-batch-size", type=int, default=None)
    p.add_argument("--pretrain-lr", type=float, default=None)
    p.add_argument(
        "--standardize-features",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="standardize the transformer's visual features by the centroids' statistics",
    )
    p.add_argument(
        "--standardize-ccc-output",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="CCC's output weights are the standardized centroids (not in the paper; the first "
        "pretraining run's setting, continuation runs set their own)",
    )
    p.add_argument("--caption-dropout", type=float, default=None, help="pretraining: empty-caption share")
    p.add_argument(
        "--full-mask-prob", type=float, default=None, help="pretraining: share of fully masked images"
    )
    p.add_argument(
        "--ccc-class-balance", type=float, default=None, help="pretraining: CCC weight (frequency)^-BETA"
    )
    p.add_argument(
        "--task-ratio",
        type=task_ratio,
        default=None,
        metavar="V,T,M",
        help="pretraining: visual-masking, word-masking and matching batches per cycle (default 1,1,1)",
    )
    p.add_argument(
        "--architecture",
        choices=("lxmert", "uniter"),
        default=None,
        help="transformer family: LXMERT's two streams or UNITER's single stream",
    )
    p.add_argument(
        "--position-frequencies", type=int, default=None, help="transformer: Fourier octaves of positions"
    )
    p.add_argument(
        "--eval-sampler",
        choices=("mask-predict", "tl-br", "random", "easy-first"),
        default=None,
        help="sampler of the evaluation, saved as the model's sampler/ default",
    )
    p.add_argument("--eval-steps", type=int, default=None, help="its steps")
    p.add_argument(
        "--eval-temperature",
        type=float,
        default=None,
        help="sampling temperature of the evaluation, saved as the model's sampler/ default",
    )
    p.add_argument(
        "--eval-anneal",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="anneal that temperature to 0",
    )
    p.add_argument(
        "--eval-guidance-scale",
        type=float,
        default=None,
        help="its classifier-free guidance (1: none)",
    )
    p.add_argument("--data-workers", type=int, default=None, help="processes rendering scenes")
    p.add_argument(
        "--stop-after",
        default=None,
        metavar="STAGE",
        help="stop once this stage is complete (data, tokenizer, backbone, features, vocabulary, "
        "generator, pretraining, pretraining-2, ...)",
    )
    add_quiet(p)
    p.epilog = "Unset options take the recipe's values (TrainAllConfig.PRESETS)."
    p.set_defaults(func=_train_all)
