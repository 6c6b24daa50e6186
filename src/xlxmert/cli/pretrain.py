"""``xlxmert pretrain``: pretrain X-LXMERT (or the LXMERT+Grid baseline) into a model folder."""

from __future__ import annotations

import argparse

from xlxmert.cli.options import add_quiet
from xlxmert.cli.output import check_output_dir


def task_ratio(value: str) -> tuple[int, int, int]:
    """``"2,1,1"`` → ``(2, 1, 1)``: visual-masking, word-masking and matching batches per cycle."""
    parts = value.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts) or sum(map(int, parts)) == 0:
        raise argparse.ArgumentTypeError(
            f"must be three whole numbers V,T,M with a positive sum, got {value!r}"
        )
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def _pretrain(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out")  # before any work
    from xlxmert.models.families import transformer_config
    from xlxmert.training.pretrain import PretrainConfig, pretrain

    model_overrides = {}
    if args.standardize_features is not None:
        model_overrides["standardize_features"] = args.standardize_features
    if args.position_frequencies is not None:
        model_overrides["position_frequencies"] = args.position_frequencies
    if args.standardize_ccc_output is not None:
        model_overrides["standardize_ccc_output"] = args.standardize_ccc_output
    if args.visual_target is not None:
        model_overrides["visual_target"] = args.visual_target
    # +Grid regresses its features (MVFR) unless --visual-target says otherwise.
    model_config = transformer_config(args.architecture, args.preset, args.variant, **model_overrides)

    overrides = {
        name: getattr(args, name)
        for name in (
            "steps",
            "batch_size",
            "lr",
            "mask_prob",
            "text_masking",
            "ccc_data",
            "caption_dropout",
            "full_mask_prob",
            "ccc_class_balance",
            "task_choice",
            "seed",
            "checkpoint_every",
            "eval_every",
            "eval_samples",
            "split",
        )
        if getattr(args, name) is not None
    }
    if args.visual_masking is not None:
        overrides["visual_masking"] = args.visual_masking
    elif args.variant == "grid":
        overrides["visual_masking"] = "bernoulli"  # the +Grid baselines mask like LXMERT
    if args.task_ratio is not None:
        overrides["task_ratio"] = args.task_ratio
    if args.bf16:
        overrides["mixed_precision"] = "bf16"
    if args.no_qa:
        overrides["qa"] = False
    train_config = PretrainConfig.from_preset(args.preset, **overrides)
    model = pretrain(
        args.data,
        args.vocab,
        args.tokenizer,
        args.out,
        model_config,
        train_config,
        features_dir=args.features,
        progress=not args.quiet,
        init_from=args.init,
    )
    print(
        f"wrote {args.out} ({model.config.variant}, "
        f"{model.num_parameters() / 1e6:.1f}M trainable parameters, "
        f"{train_config.steps} steps; metrics in {args.out}/metrics.csv)"
    )
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain",
        help="pretrain the transformer (X-LXMERT, LXMERT+Grid, X-UNITER or UNITER+Grid)",
        description=(
            "Pretrain on DATA/SPLIT with the visual words of VOCAB and write the model folder RUN "
            "(transformer/, tokenizer/, vocabulary/, backbone/, checkpoints/, metrics.csv). "
            "Rerun the same command to resume after an interruption."
        ),
    )
    p.add_argument(
        "--preset",
        default="shapes-64",
        choices=("shapes-64", "shapes-64-large", "paper"),
        help="sizes and optimisation (default shapes-64; shapes-64-large is its GPU version)",
    )
    p.add_argument(
        "--standardize-features",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="standardize visual features by the centroids' statistics (default: the preset's)",
    )
    p.add_argument(
        "--standardize-ccc-output",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="CCC's output weights: the standardized centroids, not the raw ones (default: off, the paper)",
    )
    p.add_argument(
        "--position-frequencies",
        type=int,
        default=None,
        metavar="F",
        help="add sin/cos of each cell's centre at F octaves to its box position (default 0, the paper)",
    )
    p.add_argument("--data", required=True, help="data root holding SPLIT/captions_SPLIT.json")
    p.add_argument("--vocab", required=True, help="visual vocabulary folder (xlxmert vocab build + assign)")
    p.add_argument("--tokenizer", required=True, help="tokenizer folder (TextTokenizer.save_pretrained)")
    p.add_argument("--out", required=True, help="run folder; becomes a model folder")
    p.add_argument("--split", default=None, help="training split (default train)")
    p.add_argument(
        "--architecture",
        default="lxmert",
        choices=("lxmert", "uniter"),
        help="model family: LXMERT's two streams (default) or UNITER's single stream (paper §7.2)",
    )
    p.add_argument(
        "--variant",
        default="x",
        choices=("x", "grid"),
        help="x: visual words and CCC (X-LXMERT, X-UNITER; default); grid: exact grid features and "
        "regression (LXMERT+Grid, UNITER+Grid, the paper's baselines)",
    )
    p.add_argument(
        "--features", default=None, help="feature store of the split (required for --variant grid)"
    )
    p.add_argument(
        "--visual-target",
        default=None,
        choices=("clusters", "regression"),
        help="CCC or MVFR (default: clusters for --variant x, regression for grid)",
    )
    p.add_argument(
        "--visual-masking",
        default=None,
        choices=("uniform", "bernoulli"),
        help="default: uniform for --variant x, bernoulli for grid",
    )
    p.add_argument(
        "--mask-prob", type=float, default=None, help="Bernoulli and BERT masking rate (default 0.15)"
    )
    p.add_argument(
        "--text-masking",
        default=None,
        choices=("bernoulli", "uniform"),
        help="word masking: BERT's at --mask-prob (default) or a uniform share of the words, up to all",
    )
    p.add_argument("--ccc-data", default=None, choices=("captions", "all"), help="texts for visual masking")
    p.add_argument(
        "--caption-dropout",
        type=float,
        default=None,
        help="visual masking: probability of the empty caption (for classifier-free guidance; default 0)",
    )
    p.add_argument(
        "--full-mask-prob",
        type=float,
        default=None,
        help="visual masking: probability that every cell is masked, as when painting starts (default 0)",
    )
    p.add_argument(
        "--ccc-class-balance",
        type=float,
        default=None,
        metavar="BETA",
        help="weight CCC by (word frequency)^-BETA, in [0, 1] (default 0, the paper's plain loss)",
    )
    p.add_argument(
        "--init", default=None, metavar="MODEL_DIR", help="start from this model folder's transformer weights"
    )
    p.add_argument("--task-choice", default=None, choices=("cycle", "random"), help="task per batch")
    p.add_argument(
        "--task-ratio",
        type=task_ratio,
        default=None,
        metavar="V,T,M",
        help="visual-masking, word-masking and matching batches per cycle (default 1,1,1, the paper's)",
    )
    p.add_argument("--no-qa", action="store_true", help="do not use VQA questions (no QA loss)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="per process")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--bf16", action="store_true", help="bf16 mixed precision")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--eval-samples", type=int, default=None, help="validation captions (default 256)")
    add_quiet(p)
    p.set_defaults(func=_pretrain)
