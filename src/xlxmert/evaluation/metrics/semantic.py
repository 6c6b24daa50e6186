"""Semantic accuracy: an automatic HUMMUS (paper §6.1), and caption facts read off the image.

HUMMUS shows annotators an image and its caption with one word masked; a match counts when they
restore the word. Here the annotator is the matching surrogate (:class:`ImageTextMatcher`, which
sees only the image and the partial caption): every word of the masked word's category is filled
in, and the surrogate's favourite counts as a match when it is the original word, or a word that
makes the caption just as true of the scene (e.g. "blue" for "red" when the scene has both a red
and a blue circle). Per category (shape, colour, number, position) and averaged. On the original
images this is the ceiling, as in Table 1.

Fact scores (:func:`fact_scores`) read the picture with the evaluator instead: its predicted scene
is checked against the caption with ``facts.check_caption``. ``facts_true`` (share of stated facts
true) can be gamed by painting many objects, ``all_facts_true`` (share of images whose caption is
entirely true) much less, so the tables report both, beside R-precision-hard.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from xlxmert.data.shapes.facts import caption_is_true, check_caption
from xlxmert.data.shapes.scene import Scene
from xlxmert.errors import XLXMERTError
from xlxmert.evaluation.graders.evaluator import ShapeSceneEvaluator
from xlxmert.evaluation.graders.matcher import ImageTextMatcher
from xlxmert.evaluation.negatives import CATEGORIES, category_slots, fill_slot
from xlxmert.utils.seeding import numpy_rng


@torch.no_grad()
def semantic_accuracy(
    matcher: ImageTextMatcher,
    images: torch.Tensor,
    captions: Sequence[str],
    scenes: Sequence[Scene],
    seed: int = 0,
    batch_size: int = 32,
) -> dict[str, float | int | None]:
    """Automatic HUMMUS of ``images: FloatTensor[B, 3, H, W] in [-1, 1]`` for their ``captions``.

    For each image and category with a word of that category in its caption, one such word (chosen
    with ``seed``) is masked and restored by the surrogate. Returns ``<category>`` accuracies (None
    where no caption has such a word), ``n_<category>`` counts and ``mean`` over the categories.
    """
    if images.shape[0] != len(captions) or len(scenes) != len(captions):
        raise XLXMERTError(
            f"semantic_accuracy: {images.shape[0]} images, {len(captions)} captions, {len(scenes)} scenes"
        )
    rng = numpy_rng(seed)
    # (category, number of candidates) → rows of (image index, filled captions, original's index)
    groups: dict[tuple[str, int], list[tuple[int, list[str], int]]] = {}
    for i, caption in enumerate(captions):
        slots = category_slots(caption)
        for category in CATEGORIES:
            mine = [s for s in slots if s.category == category]
            if not mine:
                continue
            slot = mine[int(rng.integers(len(mine)))]
            filled = [fill_slot(caption, slot, word) for word in slot.alternatives]
            groups.setdefault((category, len(filled)), []).append(
                (i, filled, slot.alternatives.index(slot.text))
            )
    hits: dict[str, list[bool]] = {c: [] for c in CATEGORIES}
    for (category, _), rows in groups.items():
        for s in range(0, len(rows), batch_size):
            chunk = rows[s : s + batch_size]
            idx = torch.tensor([i for i, _, _ in chunk])
            top = matcher.score(images[idx], [filled for _, filled, _ in chunk]).argmax(dim=1).tolist()
            for (i, filled, original), best in zip(chunk, top):
                hits[category].append(best == original or caption_is_true(filled[best], scenes[i]))
    result: dict[str, float | int | None] = {}
    for category in CATEGORIES:
        result[category] = sum(hits[category]) / len(hits[category]) if hits[category] else None
        result[f"n_{category}"] = len(hits[category])
    present = [result[c] for c in CATEGORIES if result[c] is not None]
    result["mean"] = sum(present) / len(present) if present else None
    return result


@torch.no_grad()
def fact_scores(
    evaluator: ShapeSceneEvaluator, images: torch.Tensor, captions: Sequence[str], batch_size: int = 64
) -> dict[str, float]:
    """Caption facts checked against the evaluator's reading of ``images: FloatTensor[B, 3, H, W]``.

    ``facts_true``: true facts / stated facts over all images; ``all_facts_true``: share of images
    whose caption is entirely true of the predicted scene.
    """
    if images.shape[0] != len(captions):
        raise XLXMERTError(f"fact_scores: {images.shape[0]} images but {len(captions)} captions")
    n_true = n_total = all_true = 0
    for s in range(0, len(captions), batch_size):
        scenes = evaluator.predict_scenes(images[s : s + batch_size])
        for caption, scene in zip(captions[s : s + batch_size], scenes):
            t, total = check_caption(caption, scene)
            n_true += t
            n_total += total
            all_true += int(t == total)
    return {"facts_true": n_true / max(n_total, 1), "all_facts_true": all_true / max(len(captions), 1)}
