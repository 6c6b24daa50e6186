"""``xlxmert data``: make data sets (``data shapes``: the ShapeScenes world)."""

from __future__ import annotations

import argparse

from xlxmert.cli.output import check_output_dir


def _shapes(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out")  # before any work
    from xlxmert.data.shapes.generate import generate_split

    split_dir = generate_split(
        args.out,
        args.split,
        args.n,
        size=args.size,
        seed=args.seed,
        workers=args.workers,
        progress=not args.quiet,
    )
    print(f"wrote {args.n} {args.split} scenes ({args.size}px) to {split_dir}")
    return 0


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="make data sets")
    sub = data.add_subparsers(dest="data_command", metavar="KIND", parser_class=type(data))
    sub.required = True
    shapes = sub.add_parser(
        "shapes",
        help="generate a ShapeScenes split (images, COCO captions, VQA v2, GQA, NLVR2 files)",
        description="Write OUT/SPLIT/ with the files of the ShapeScenes spec (WORLD.md).",
    )
    shapes.add_argument("--out", required=True, help="data root; the split goes to OUT/SPLIT/")
    shapes.add_argument("--split", default="train", help="train, val, test or compositional (default train)")
    shapes.add_argument("--n", type=int, default=20000, help="number of scenes (default 20000)")
    shapes.add_argument(
        "--size", type=int, default=64, help="image side in pixels: 64, 128 or 256 (default 64)"
    )
    shapes.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    shapes.add_argument("--workers", type=int, default=1, help="rendering processes (default 1)")
    shapes.set_defaults(func=_shapes)
