"""``xlxmert backbone train``, ``xlxmert features extract``, ``xlxmert vocab build|assign``.

The visual side's pipeline, left to right::

    xlxmert backbone train   --data DATA --out BACKBONE
    xlxmert features extract --data DATA --split train --backbone shapes --backbone-dir BACKBONE --out FEATS
    xlxmert vocab build      --features FEATS --out VOCAB
    xlxmert vocab assign     --features FEATS --vocab VOCAB
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from xlxmert.cli.options import add_config_flags, config_values, log_config
from xlxmert.cli.output import check_output_dir
from xlxmert.errors import XLXMERTError


def register(subparsers: argparse._SubParsersAction) -> None:
    backbone = subparsers.add_parser("backbone", help="train the shapes grid-feature backbone")
    bsub = backbone.add_subparsers(dest="backbone_command", metavar="ACTION", parser_class=type(backbone))
    train = bsub.add_parser("train", help="train the shapes backbone, supervised per grid cell")
    train.add_argument("--data", required=True, type=Path, help="data root holding train/ (and val/)")
    train.add_argument("--out", required=True, type=Path, help="backbone folder to write")
    train.add_argument(
        "--preset", default="shapes-64", choices=("shapes-64", "paper"), help="ShapesBackboneConfig preset"
    )
    train.add_argument("--steps", type=int, default=1500)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--lr", type=float, default=2e-3)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--val-split", default="val", help="split for the per-cell accuracy report ('' = none)"
    )
    add_config_flags(
        train,
        "xlxmert.visual.backbones.ShapesBackboneConfig",
        only=("feature_dim", "widths"),
        title="ShapesBackboneConfig",
    )
    train.set_defaults(func=_backbone_train)

    features = subparsers.add_parser("features", help="extract grid features into a feature store")
    fsub = features.add_subparsers(dest="features_command", metavar="ACTION", parser_class=type(features))
    ext = fsub.add_parser("extract", help="grid features of a split → FEATS (fp16 memmap, resumable)")
    ext.add_argument("--data", required=True, type=Path, help="data root")
    ext.add_argument("--split", default="train")
    ext.add_argument(
        "--backbone",
        default="shapes",
        help="shapes (a trained folder given by --backbone-dir), resnet50, or a backbone folder",
    )
    ext.add_argument(
        "--backbone-dir",
        type=Path,
        help="for shapes: the trained backbone folder; for resnet50: a local transformers ResNet "
        "folder (default: microsoft/resnet-50 from the hub, needs internet)",
    )
    ext.add_argument("--out", required=True, type=Path, help="feature store folder (resumes if it exists)")
    ext.add_argument(
        "--grid-size",
        type=int,
        help="N of the N×N grid (default: shapes-64 vocabulary preset's "
        "for shapes backbones, 8 for resnet50)",
    )
    ext.add_argument(
        "--backbone-output",
        choices=("features", "predictions"),
        help="shapes backbones: the D-dim feature map, or the per-cell heads' place probabilities "
        "and colour×shape coverages (default: as the backbone folder was saved)",
    )
    ext.add_argument("--image-size", type=int, default=256, help="input side for resnet50 (default 256)")
    ext.add_argument("--chunk-size", type=int, default=1024)
    ext.add_argument("--batch-size", type=int, default=32)
    ext.add_argument("--device", default="cpu")
    ext.set_defaults(func=_features_extract)

    vocab = subparsers.add_parser("vocab", help="build and apply the visual vocabulary (k-means)")
    vsub = vocab.add_subparsers(dest="vocab_command", metavar="ACTION", parser_class=type(vocab))
    build = vsub.add_parser("build", help="k-means (FAISS) on a feature store → VOCAB")
    build.add_argument("--features", required=True, type=Path, help="feature store folder")
    build.add_argument("--out", required=True, type=Path, help="vocabulary folder to write")
    build.add_argument(
        "--preset", default="shapes-64", choices=("shapes-64", "paper"), help="VocabularyConfig preset"
    )
    add_config_flags(
        build,
        "xlxmert.visual.vocabulary.VocabularyConfig",
        only=("num_clusters", "sample_size", "niter", "nredo", "seed", "balance"),
        flags={"num_clusters": "--k"},
        title="VocabularyConfig",
    )
    build.set_defaults(func=_vocab_build)
    assign = vsub.add_parser("assign", help="nearest-centroid ids of a feature store → VOCAB/ids/<split>.npy")
    assign.add_argument("--features", required=True, type=Path, help="feature store folder")
    assign.add_argument("--vocab", required=True, type=Path, help="vocabulary folder")
    assign.set_defaults(func=_vocab_assign)

    for parser, name in ((backbone, "backbone"), (features, "features"), (vocab, "vocab")):
        parser.set_defaults(func=_needs_action(parser, name))


def _needs_action(parser: argparse.ArgumentParser, name: str):
    def run(args: argparse.Namespace) -> int:
        if getattr(args, f"{name}_command", None) is None:
            parser.error("choose an action (see --help)")
        return 0

    return run


def _backbone_train(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out")  # before any work
    from xlxmert.training.backbone import train_backbone
    from xlxmert.visual.backbones import ShapesBackboneConfig

    config = ShapesBackboneConfig.from_preset(args.preset, **config_values(args, ShapesBackboneConfig))
    log_config(config)
    metrics = train_backbone(
        args.data,
        config,
        args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.quiet,
        lr=args.lr,
        val_split=args.val_split or None,
    )
    print(f"loss {metrics['first_loss']:.3f} → {metrics['last_loss']:.3f}; saved {args.out}")
    for m in metrics["val"]:
        print(
            f"val {m['grid_size']}×{m['grid_size']}: place {m['place_acc']:.3f}, objects exact "
            f"{m['objects_exact']:.3f}, dominant {m['dominant_acc']:.3f} (chance {m['dominant_chance']:.3f})"
        )
    return 0


def _features_extract(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out")  # before any work
    from xlxmert.visual.backbones import ResNetBackbone, ShapesBackbone, load_backbone
    from xlxmert.visual.grid import GridFeatureExtractor, saved_grid_size
    from xlxmert.visual.store import extract_features
    from xlxmert.visual.vocabulary import VocabularyConfig

    if args.backbone_output is not None and args.backbone == "resnet50":
        raise XLXMERTError("--backbone-output applies to shapes backbones only")
    if args.backbone == "shapes":
        if args.backbone_dir is None:
            raise XLXMERTError(
                "--backbone shapes needs --backbone-dir BACKBONE (train one with `xlxmert backbone train`)"
            )
        backbone = load_backbone(args.backbone_dir)
        grid = saved_grid_size(args.backbone_dir) or VocabularyConfig.from_preset("shapes-64").grid_size
    elif args.backbone == "resnet50":
        backbone = ResNetBackbone.from_pretrained(
            args.backbone_dir or "microsoft/resnet-50", image_size=args.image_size
        )
        grid = VocabularyConfig.from_preset("paper").grid_size
    else:
        backbone = load_backbone(Path(args.backbone))
        preset = "shapes-64" if backbone.image_size <= 64 else "paper"
        # A model's or vocabulary's backbone/ records the grid it was used with: keep it.
        grid = saved_grid_size(args.backbone) or VocabularyConfig.from_preset(preset).grid_size
    if args.backbone_output is not None:
        if not isinstance(backbone, ShapesBackbone):
            raise XLXMERTError("--backbone-output applies to shapes backbones only")
        backbone = backbone.with_output(args.backbone_output)
    extractor = GridFeatureExtractor(backbone, args.grid_size or grid)
    start = time.perf_counter()
    store = extract_features(
        args.data,
        args.split,
        extractor,
        args.out,
        chunk_size=args.chunk_size,
        batch_size=args.batch_size,
        progress=not args.quiet,
        device=args.device,
    )
    seconds = time.perf_counter() - start
    n = store.grid_size
    print(f"{len(store)} images → {args.out} [{len(store)}, {n}, {n}, {store.dim}] fp16 in {seconds:.1f}s")
    return 0


def _vocab_build(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out")  # before any work
    from xlxmert.visual.store import FeatureStore
    from xlxmert.visual.vocabulary import VocabularyConfig, build_vocabulary

    store = FeatureStore.open(args.features)
    config = VocabularyConfig.from_preset(args.preset, **config_values(args, VocabularyConfig))
    log_config(config)
    _, report = build_vocabulary(store, config, args.out, progress=not args.quiet)
    print(
        f"K={report['num_clusters']} D={report['dim']}: {report['num_dead_clusters']} dead clusters, "
        f"usage perplexity {report['usage_perplexity']:.0f}, "
        f"mean squared error {report['mean_sq_error']:.4g} "
        f"({report['relative_error']:.3f} of the variance); saved {args.out}"
    )
    return 0


def _vocab_assign(args: argparse.Namespace) -> int:
    from xlxmert.visual.store import FeatureStore
    from xlxmert.visual.vocabulary import VisualVocabulary, assign_store

    store = FeatureStore.open(args.features)
    vocab = VisualVocabulary.from_pretrained(args.vocab)
    path = assign_store(store, vocab, args.vocab, progress=not args.quiet)
    print(f"{len(store)} images × {store.grid_size**2} ids → {path}")
    return 0
