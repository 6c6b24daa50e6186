"""``xlxmert paint``, ``xlxmert caption`` and ``xlxmert answer``: the pipelines from the shell.

    xlxmert paint "a red circle in the snow" ["caption" ...] -o out.png [--model DIR]
                  [--sampler NAME --steps K --seed 0 --temperature T --anneal --top-k K] [--strip]
    xlxmert caption img.png [img.png ...] [--prefix "a"] [--sampler mask-predict|gibbs] [--length auto|N]
                    [--num-captions N] [--model DIR]
    xlxmert answer img.png "what color is the circle" [--model DIR]

Without ``--model`` the model folder is ``$XLXMERT_MODEL``, else the repository's ``models/shapes-64``.
Library warnings (a truncated caption) are printed on stderr as one line each.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xlxmert.cli.output import check_output_dir, check_output_file, write_image
from xlxmert.errors import XLXMERTError

SAMPLER_NAMES = ("mask-predict", "tl-br", "random", "easy-first")
MAX_STRIP_FRAMES = 16


def _model_dir(args: argparse.Namespace) -> Path:
    from xlxmert.pipelines import default_model_dir
    from xlxmert.utils.hub import resolve_model_folder

    return resolve_model_folder(args.model) if args.model else default_model_dir()


def _device(name: str) -> Any:
    """``--device`` as a ``torch.device``; a one-line error for a bad name or a missing accelerator."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise XLXMERTError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise XLXMERTError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise XLXMERTError(f"--device {name}: only cpu and cuda are supported")
    return device


def _with_warnings(fn: Callable[[], Any]) -> Any:
    """Run ``fn``, printing each warning it raises as one ``xlxmert: warning:`` line on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    for w in caught:
        if issubclass(w.category, UserWarning):
            print(f"xlxmert: warning: {w.message}", file=sys.stderr)
    return result


def _strip_frames(frames: list) -> list:
    """At most MAX_STRIP_FRAMES evenly spaced frames, always ending with the last step."""
    if len(frames) <= MAX_STRIP_FRAMES:
        return frames
    n = len(frames)
    picks = sorted({round(i * (n - 1) / (MAX_STRIP_FRAMES - 1)) for i in range(MAX_STRIP_FRAMES)})
    return [frames[i] for i in picks]


def _paint(args: argparse.Namespace) -> int:
    from xlxmert.data.images import image_grid
    from xlxmert.pipelines.paint import PaintPipeline

    # Outputs are checked before the model loads; images are written whole or not at all.
    if args.out_dir:
        folder = check_output_dir(args.out_dir)
    else:
        path = check_output_file(args.out)
    device = _device(args.device)
    pipe = PaintPipeline.from_pretrained(_model_dir(args)).to(device)
    out = _with_warnings(
        lambda: pipe(
            args.captions,
            sampler=args.sampler,
            steps=args.steps,
            seed=args.seed,
            temperature=args.temperature,
            anneal=args.anneal,
            top_k=args.top_k,
            guidance_scale=args.guidance_scale,
            return_intermediates=args.strip,
            noise=False if args.no_noise else None,
        )
    )
    written = []
    if args.out_dir:
        for i, img in enumerate(out.images):
            written.append(write_image(img, folder / f"{i:03d}.png"))
            if args.strip:
                frames = _strip_frames(out.intermediates[i])
                written.append(
                    write_image(image_grid(frames, columns=len(frames)), folder / f"{i:03d}_strip.png")
                )
    else:
        columns = min(len(out.images), 8)
        written.append(
            write_image(
                out.images[0] if len(out.images) == 1 else image_grid(out.images, columns=columns), path
            )
        )
        if args.strip:
            rows = [_strip_frames(frames) for frames in out.intermediates]
            strip_path = path.with_name(f"{path.stem}_strip{path.suffix}")
            written.append(
                write_image(image_grid([f for row in rows for f in row], columns=len(rows[0])), strip_path)
            )
    for p in written:
        print(p)
    return 0


def _caption(args: argparse.Namespace) -> int:
    from xlxmert.pipelines.caption import CaptionPipeline

    device = _device(args.device)
    pipe = CaptionPipeline.from_pretrained(_model_dir(args)).to(device)
    out = _with_warnings(
        lambda: pipe(
            args.images,
            prefix=args.prefix,
            length=args.length,
            sampler=args.sampler,
            num_captions=args.num_captions,
            sweeps=args.sweeps,
            seed=args.seed,
            temperature=args.temperature,
            top_k=args.top_k,
        )
    )
    n = args.num_captions
    for i, (caption, score) in enumerate(zip(out.captions, out.scores)):
        fields = ([args.images[i // n]] if len(args.images) > 1 else []) + ([f"{score:.3f}"] if n > 1 else [])
        print("\t".join([*fields, caption]))
    return 0


def _answer(args: argparse.Namespace) -> int:
    from xlxmert.pipelines.answer import AnswerPipeline

    device = _device(args.device)
    pipe = AnswerPipeline.from_pretrained(_model_dir(args), head=args.head).to(device)
    out = _with_warnings(lambda: pipe([args.image], [args.question], top_k=args.top_k))
    for answer, prob in out.top[0]:
        print(f"{answer}\t{prob:.3f}")
    return 0


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", help="model folder or Hub repository id (default: $XLXMERT_MODEL, else models/shapes-64)"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("paint", help="paint images from captions (X-LXMERT sampling + generator)")
    p.add_argument("captions", nargs="+", help="one or more captions, each in quotes")
    p.add_argument("--device", default="cpu", help="where the models run: cpu (default), cuda or cuda:N")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--out", help="output image; several captions are tiled into one grid image")
    where.add_argument("--out-dir", help="folder for one image per caption (000.png, 001.png, ...)")
    _add_model(p)
    p.add_argument(
        "--sampler",
        choices=SAMPLER_NAMES,
        help="grid sampling order. The sampling options default to the model's sampler/config.json, "
        "else the paper's mask-predict, 4 steps, argmax",
    )
    p.add_argument(
        "--steps",
        type=int,
        help="steps (mask-predict: 4; the others: one per grid cell; random: fewer fills several a step)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling draws and the generator noise")
    p.add_argument("--temperature", type=float, help="0 = argmax (the paper); > 0 samples ids")
    p.add_argument(
        "--anneal",
        action=argparse.BooleanOptionalAction,
        help="decay the temperature linearly to 0 over the steps",
    )
    p.add_argument(
        "--guidance-scale",
        type=float,
        default=None,
        help="classifier-free guidance (1 = none; default: the model's)",
    )
    p.add_argument("--top-k", type=int, help="sample only among the k most likely visual words")
    p.add_argument("--no-noise", action="store_true", help="switch off the generator's noise injection")
    p.add_argument(
        "--strip",
        action="store_true",
        help=f"also save every sampling step decoded (at most {MAX_STRIP_FRAMES} frames, evenly spaced)",
    )
    p.set_defaults(func=_paint)

    c = subparsers.add_parser("caption", help="caption images with the MLM head")
    c.add_argument("images", nargs="+", help="image files")
    c.add_argument("--device", default="cpu", help="where the models run: cpu (default), cuda or cuda:N")
    c.add_argument("--prefix", default="", help="words the caption must start with, e.g. 'a'")
    c.add_argument(
        "--sampler",
        default="mask-predict",
        choices=("mask-predict", "gibbs"),
        help="mask-predict: words filled most confident first, then refined (default); "
        "gibbs: the paper's Gibbs sampling",
    )
    c.add_argument(
        "--length",
        default="auto",
        help="caption length in word pieces (prefix included), or auto: every length, the best-scored kept",
    )
    c.add_argument(
        "--num-captions",
        type=int,
        default=1,
        metavar="N",
        help="the N best captions per image, each printed with its score",
    )
    c.add_argument("--sweeps", type=int, default=2, help="Gibbs sweeps over the free positions")
    c.add_argument("--seed", type=int, default=0, help="seed of the visiting order and sampled words")
    c.add_argument("--temperature", type=float, default=0.0, help="0 = argmax; > 0 samples words")
    c.add_argument("--top-k", type=int, help="sample only among the k most likely words")
    _add_model(c)
    c.set_defaults(func=_caption)

    a = subparsers.add_parser(
        "answer", help="answer a question about an image (fine-tuned VQA/GQA head, else the QA head)"
    )
    a.add_argument("image", help="image file")
    a.add_argument("question", help="the question, in quotes")
    a.add_argument("--device", default="cpu", help="where the models run: cpu (default), cuda or cuda:N")
    a.add_argument("--top-k", type=int, default=1, help="print the k most probable answers")
    a.add_argument(
        "--head",
        choices=("vqa", "gqa"),
        help="fine-tuned head to answer with (default: the folder's vqa head, else gqa, else the QA head)",
    )
    _add_model(a)
    a.set_defaults(func=_answer)
