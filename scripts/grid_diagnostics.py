"""Where painting loses the caption's objects: in the transformer's visual words, before the generator.

For a model whose visual words are the backbone's per-cell predictions (``--backbone-output
predictions``: each centroid is ``[place probabilities, colour×shape coverages]``), a grid of
words says which colour–shape pairs it paints, with no generator and no grader involved. Two
measurements on the first caption of each of ``--n`` images of ``--split``:

* ``full mask``: every cell masked (where painting starts). The expected covered cells per pair,
  ``Σ_cells p(word) · coverage(word)``, and the share of that object mass on the pairs (colours,
  shapes) the caption names, beside the same share in the ground-truth grids.
* ``sampled``: grids painted with a sampler; the share of the caption's named pairs (colours,
  shapes) that the grid holds (covered mass above half a cell), the object mass per image, and
  the share of that mass on the named pairs (colours, shapes).

    python scripts/grid_diagnostics.py --model models/shapes-64 --data W/data --vocab W/vocab \
        --split test --n 200 --guidance-scale 1 3

The numbers of the model card's "Session 6" section come from this script.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from xlxmert.data.datasets import CocoCaptions
from xlxmert.data.shapes.facts import parse_caption
from xlxmert.data.shapes.world import COLORS, PLACES, SHAPES
from xlxmert.errors import XLXMERTError
from xlxmert.pipelines import PaintPipeline
from xlxmert.sampling import SamplerConfig
from xlxmert.visual.vocabulary import load_ids

COLOR_NAMES, SHAPE_NAMES = list(COLORS), list(SHAPES)


def named_pairs(caption: str) -> set[int]:
    """Colour-major pair indices ``c * S + s`` of the noun phrases (subjects, and the objects of
    relations) that name a colour and a shape."""
    pairs = set()
    for fact in parse_caption(caption):
        for np_ in (fact.subject, fact.other):
            if np_ is not None and np_.color and np_.shape:
                pairs.add(COLOR_NAMES.index(np_.color) * len(SHAPE_NAMES) + SHAPE_NAMES.index(np_.shape))
    return pairs


def shares(mass: torch.Tensor, pairs: list[set[int]]) -> dict[str, float]:
    """``mass: [B, C*S]`` covered cells per pair → mean share of the object mass on the named pairs,
    colours and shapes."""
    n_c, n_s = len(COLOR_NAMES), len(SHAPE_NAMES)
    grid = mass.view(-1, n_c, n_s)
    out = {}
    for name, per, key in (
        ("pair", mass, lambda q: q),
        ("colour", grid.sum(2), lambda q: q // n_s),
        ("shape", grid.sum(1), lambda q: q % n_s),
    ):
        on = torch.stack([per[i, sorted({key(q) for q in p})].sum() for i, p in enumerate(pairs)])
        out[name] = round(float((on / per.sum(1).clamp_min(1e-9)).mean()), 3)
    return out


def presence(mass: torch.Tensor, pairs: list[set[int]]) -> dict[str, float]:
    """Share of the named pairs / colours / shapes that a grid covers by more than half a cell."""
    n_c, n_s = len(COLOR_NAMES), len(SHAPE_NAMES)
    grid = mass.view(-1, n_c, n_s)
    hits: dict[str, list[bool]] = {"pair": [], "colour": [], "shape": []}
    for i, p in enumerate(pairs):
        for q in p:
            hits["pair"].append(bool(mass[i, q] > 0.5))
            hits["colour"].append(bool(grid[i, q // n_s].sum() > 0.5))
            hits["shape"].append(bool(grid[i, :, q % n_s].sum() > 0.5))
    return {k: round(float(np.mean(v)), 3) for k, v in hits.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument("--data", required=True, help="data root holding SPLIT/captions_SPLIT.json")
    p.add_argument("--vocab", required=True, help="vocabulary folder with ids/SPLIT.npy (ground truth)")
    p.add_argument("--split", default="test")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--guidance-scale", type=float, nargs="+", default=[1.0, 3.0])
    p.add_argument("--sampler", default="random")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest words only")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        pipe = PaintPipeline.from_pretrained(args.model)
        cov = pipe.vocabulary.centroids.float()[:, len(PLACES) :]
        if cov.shape[1] != len(COLOR_NAMES) * len(SHAPE_NAMES):
            raise XLXMERTError("the model's visual words are not backbone predictions (--backbone-output)")
        ids_true, image_ids = load_ids(args.vocab, args.split)
        captions = CocoCaptions(f"{args.data}/{args.split}/captions_{args.split}.json").captions_by_image
    except (XLXMERTError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    first = {image_id: texts[0] for image_id, texts in captions.items() if texts}
    rows = [i for i in range(min(args.n, len(image_ids))) if named_pairs(first.get(int(image_ids[i]), ""))]
    texts = [first[int(image_ids[i])] for i in rows]
    pairs = [named_pairs(t) for t in texts]
    true_mass = cov[torch.from_numpy(ids_true[rows].astype(np.int64))].sum(1)
    print(f"{len(rows)} captions naming a colour-shape pair; ground-truth grids: object mass "
          f"{true_mass.sum(1).mean():.2f}, shares {shares(true_mass, pairs)}")  # fmt: skip

    num_cells = pipe.transformer.config.num_cells
    empty_grid = torch.zeros(len(texts), num_cells, dtype=torch.long)
    every_cell = torch.ones(len(texts), num_cells, dtype=torch.bool)
    for g in args.guidance_scale:
        with torch.no_grad():
            logits = pipe.predictor(texts, guidance_scale=g)(empty_grid, every_cell).float()
        mass = (logits.softmax(-1) @ cov).sum(1)
        sampler = SamplerConfig(
            args.sampler, args.steps, temperature=args.temperature, top_k=args.top_k, guidance_scale=g
        ).build()
        painted = torch.cat(
            [
                pipe.sample(texts[s : s + 50], sampler, seed=args.seed, guidance_scale=g).ids
                for s in range(0, len(texts), 50)
            ]
        )
        sampled = cov[painted.long()].sum(1)
        print(f"guidance {g}: full mask: object mass {mass.sum(1).mean():.2f}, shares {shares(mass, pairs)}")
        how = f"{args.sampler}-{args.steps}, T {args.temperature}"
        how += f", top-k {args.top_k}" if args.top_k else ""
        print(f"guidance {g}: sampled ({how}): object mass "
              f"{sampled.sum(1).mean():.2f}, named present {presence(sampled, pairs)}, "
              f"shares {shares(sampled, pairs)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
