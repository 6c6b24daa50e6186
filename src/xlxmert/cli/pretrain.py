"""``xlxmert pretrain``: pretrain X-LXMERT (or the LXMERT+Grid baseline) into a model folder."""

from __future__ import annotations

import argparse

from xlxmert.cli.options import add_bf16_alias, add_config_flags, config_values, log_config
from xlxmert.cli.output import check_output_dir

TRANSFORMER_FLAGS = (
    "hidden_size",
    "num_attention_heads",
    "intermediate_size",
    "dropout",
    "visual_target",
    "standardize_features",
    "standardize_ccc_output",
    "position_frequencies",
)


def _pretrain(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out")  # before any work
    from xlxmert.models.families import transformer_config
    from xlxmert.models.transformer import XLxmertConfig
    from xlxmert.training.pretrain import PretrainConfig, pretrain

    # +Grid regresses its features (MVFR) unless --visual-target says otherwise.
    model_config = transformer_config(
        args.architecture, args.preset, args.variant, **config_values(args, XLxmertConfig)
    )
    overrides = config_values(args, PretrainConfig)
    if args.variant == "grid":
        overrides.setdefault("visual_masking", "bernoulli")  # the +Grid baselines mask like LXMERT
    train_config = PretrainConfig.from_preset(args.preset, **overrides)
    log_config(model_config)
    log_config(train_config)
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
    p.add_argument("--data", required=True, help="data root holding SPLIT/captions_SPLIT.json")
    p.add_argument("--vocab", required=True, help="visual vocabulary folder (xlxmert vocab build + assign)")
    p.add_argument("--tokenizer", required=True, help="tokenizer folder (TextTokenizer.save_pretrained)")
    p.add_argument("--out", required=True, help="run folder; becomes a model folder")
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
        "--init", default=None, metavar="MODEL_DIR", help="start from this model folder's transformer weights"
    )
    add_bf16_alias(p)
    add_config_flags(p, "xlxmert.training.pretrain.PretrainConfig", title="pretraining (PretrainConfig)")
    add_config_flags(
        p,
        "xlxmert.models.transformer.XLxmertConfig",
        only=TRANSFORMER_FLAGS,
        title="transformer (XLxmertConfig, XUniterConfig)",
    )
    p.epilog = "Defaults shown are --preset's: `xlxmert pretrain --preset paper --help` shows the paper's."
    p.set_defaults(func=_pretrain)
