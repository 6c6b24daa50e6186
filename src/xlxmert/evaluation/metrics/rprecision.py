"""R-precision (paper §6.1, appendix E.1) scored by an independent image–text matching surrogate.

Given an image, the caption it should show and negatives, R-precision is the share of images for
which the surrogate (:class:`~xlxmert.evaluation.graders.matcher.ImageTextMatcher`) ranks the true
caption first:

- *easy*: against 99 captions of other images;
- *hard*: against 9 captions that each swap ONE category word (shape, colour, number,
  position/relation) for another of its category so that the caption becomes false of the scene
  (:func:`~xlxmert.evaluation.negatives.hard_negatives`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from xlxmert.data.shapes.scene import Scene
from xlxmert.errors import XLXMERTError
from xlxmert.evaluation.graders.matcher import ImageTextMatcher
from xlxmert.evaluation.negatives import CATEGORIES, hard_negatives
from xlxmert.utils.seeding import numpy_rng


def _rank_first(scores: torch.Tensor) -> torch.Tensor:
    """BoolTensor[B]: column 0 strictly beats every other column (ties count as misses)."""
    return scores[:, 0] > scores[:, 1:].max(dim=1).values


@torch.no_grad()
def r_precision(
    matcher: ImageTextMatcher,
    images: torch.Tensor,
    captions: Sequence[str],
    scenes: Sequence[Scene],
    seed: int = 0,
    easy_negatives: int = 99,
    hard_count: int = 9,
    batch_size: int = 16,
    progress: bool = False,
    return_hits: bool = False,
) -> dict[str, Any]:
    """R-precision of ``images: FloatTensor[B, 3, H, W] in [-1, 1]`` for ``captions`` (one per image).

    ``scenes[i]`` is the scene ``captions[i]`` describes: hard negatives must be false of it. Easy
    negatives are captions of the *other* entries (``captions`` is also the pool), so B should be
    at least 100 for the paper's 1-in-100 setting (fewer distinct negatives are repeated).
    Returns ``easy``, ``hard`` (swaps of any category) and ``hard_<category>`` (None where no caption
    has a swap of that category), plus ``n_hard_<category>`` counts. ``return_hits`` adds each
    image's outcome, ``easy_hits`` and ``hard_hits`` (lists of n bools; None where an image's caption
    has no hard negative), for resampling (e.g. bootstrap intervals).
    """
    n = len(captions)
    if images.shape[0] != n or len(scenes) != n:
        raise XLXMERTError(f"r_precision: {images.shape[0]} images, {n} captions, {len(scenes)} scenes")
    if n < 2:
        raise XLXMERTError("R-precision needs at least 2 images (easy negatives come from other images)")
    rng = numpy_rng(seed)
    easy_rows, hard_rows = [], {c: [] for c in (None, *CATEGORIES)}
    for i, caption in enumerate(captions):
        others = [j for j in range(n) if captions[j] != caption]
        if not others:
            others = [j for j in range(n) if j != i]
        pick = rng.choice(others, size=easy_negatives, replace=len(others) < easy_negatives)
        easy_rows.append([caption, *(captions[int(j)] for j in pick)])
        for category in hard_rows:
            negatives = hard_negatives(caption, scenes[i], rng, hard_count, category)
            if negatives:
                hard_rows[category].append((i, [caption, *negatives]))
    result: dict[str, float | None] = {}
    hits = []
    for s in tqdm(range(0, n, batch_size), desc="R-precision", disable=not progress):
        hits.append(_rank_first(matcher.score(images[s : s + batch_size], easy_rows[s : s + batch_size])))
    result["easy"] = float(torch.cat(hits).float().mean())
    if return_hits:
        result["easy_hits"] = torch.cat(hits).tolist()
    for category, rows in hard_rows.items():
        key = "hard" if category is None else f"hard_{category}"
        if not rows:
            result[key] = None
            result[f"n_{key}"] = 0
            continue
        hits = []
        for s in range(0, len(rows), batch_size):
            chunk = rows[s : s + batch_size]
            idx = torch.tensor([i for i, _ in chunk])
            hits.append(_rank_first(matcher.score(images[idx], [r for _, r in chunk])))
        result[key] = float(torch.cat(hits).float().mean())
        result[f"n_{key}"] = len(rows)
        if return_hits and category is None:
            per_image: list[bool | None] = [None] * n
            for (i, _), hit in zip(rows, torch.cat(hits).tolist()):
                per_image[i] = hit
            result["hard_hits"] = per_image
    return result
