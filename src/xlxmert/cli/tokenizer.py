"""``xlxmert tokenizer train``: learn a WordPiece vocabulary from a split's captions and questions."""

from __future__ import annotations

import argparse
from pathlib import Path

from xlxmert.errors import XLXMERTError


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser("tokenizer", help="train a WordPiece tokenizer on a data split")
    sub = group.add_subparsers(dest="tokenizer_command", metavar="ACTION", parser_class=type(group))
    train = sub.add_parser(
        "train",
        help="learn a WordPiece vocabulary from DATA/<split>/ captions, questions and statements",
        description=(
            "Train a BERT-style (lowercase) WordPiece tokenizer on DATA/<split>/captions_<split>.json, "
            "questions_<split>.json and nlvr2_<split>.jsonl. --out FILE.json writes the tokenizer file "
            "(and tokenizer_config.json beside it); any other --out is a folder for both."
        ),
    )
    train.add_argument("--data", required=True, type=Path, help="data root holding DATA/<split>/")
    train.add_argument("--split", default="train", help="split to read (default: train)")
    train.add_argument("--out", required=True, type=Path, help="tokenizer.json file or output folder")
    train.add_argument("--vocab-size", type=int, default=1000, help="maximum vocabulary size (default: 1000)")
    train.add_argument(
        "--max-length", type=int, default=20, help="tokens per text incl. [CLS]/[SEP] (default: 20)"
    )
    train.set_defaults(func=_train)
    group.set_defaults(func=lambda args: _missing_action(group))


def _missing_action(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _train(args: argparse.Namespace) -> int:
    from xlxmert.data.tokenizer import TOKENIZER_CONFIG_FILE, TextTokenizer, texts_from_split

    if not args.data.is_dir():
        raise XLXMERTError(f"data root not found: {args.data}")
    split_dir = args.data / args.split
    if not split_dir.is_dir():
        raise XLXMERTError(
            f"split folder not found: {split_dir} (create it with `xlxmert data shapes --out {args.data} "
            f"--split {args.split}`)"
        )
    texts = texts_from_split(split_dir)
    tokenizer = TextTokenizer.train(texts, vocab_size=args.vocab_size, max_length=args.max_length)
    if args.out.suffix == ".json":
        tokenizer.save(args.out)
        written = f"{args.out} (+ {args.out.parent / TOKENIZER_CONFIG_FILE})"
    else:
        tokenizer.save_pretrained(args.out)
        written = str(args.out)
    print(f"tokenizer: {tokenizer.vocab_size} tokens from {len(texts)} texts of {split_dir} -> {written}")
    return 0
