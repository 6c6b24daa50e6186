"""``xlxmert verify LEFT.png RIGHT.png "statement"``: is the statement true of the image pair (NLVR2)?

Needs a model folder fine-tuned with ``xlxmert finetune --task nlvr2`` (``--model``, else
``$XLXMERT_MODEL``, else the repository's ``models/shapes-64``). Prints ``True`` or ``False`` and
the probability of True.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _verify(args: argparse.Namespace) -> int:
    from xlxmert.pipelines import default_model_dir
    from xlxmert.pipelines.verify import NLVR2Pipeline

    model_dir = Path(args.model) if args.model else default_model_dir()
    pipe = NLVR2Pipeline.from_pretrained(model_dir)
    out = pipe([args.left], [args.right], [args.statement])
    print(f"{out.labels[0]}\t{out.probabilities[0]:.3f}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "verify",
        help="judge a statement about an image pair (NLVR2 head)",
        description="Print True or False (and the probability of True) for STATEMENT about the pair "
        "LEFT, RIGHT, with a model folder fine-tuned on NLVR2 (xlxmert finetune --task nlvr2).",
    )
    p.add_argument("left", help="left image")
    p.add_argument("right", help="right image")
    p.add_argument("statement", help='e.g. "the left image has more circles than the right image"')
    p.add_argument(
        "--model", help="model folder with heads/nlvr2/ (default: $XLXMERT_MODEL or models/shapes-64)"
    )
    p.set_defaults(func=_verify)
