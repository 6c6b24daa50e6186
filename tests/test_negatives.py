"""Hard negatives (``evaluation.negatives``): one category word swapped, false of the scene, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from xlxmert.data.shapes.facts import check_caption
from xlxmert.errors import XLXMERTError
from xlxmert.evaluation.negatives import category_slots, fill_slot, hard_negatives, tokenize
from xlxmert.evaluation.split import (
    load_examples,
)


def _slot_texts(caption: str) -> list[tuple[str, str]]:
    return [(s.category, s.text) for s in category_slots(caption)]


def _non_slot_words(caption: str) -> list[str]:
    tokens = tokenize(caption)
    keep = [True] * len(tokens)
    for s in category_slots(caption):
        for i in range(s.start, s.end):
            keep[i] = False
    return ["a" if t == "an" else t for t, k in zip(tokens, keep) if k]


def test_every_hard_negative_swaps_exactly_one_category_word_and_is_false(eval_shapes):
    rng = np.random.default_rng(0)
    checked = 0
    for ex in load_examples(eval_shapes, "test", 40):
        for caption in ex.captions:
            assert check_caption(caption, ex.scene)[0] == check_caption(caption, ex.scene)[1]
            original = _slot_texts(caption)
            for negative in hard_negatives(caption, ex.scene, rng, n=9):
                swapped = _slot_texts(negative)
                assert len(swapped) == len(original)
                diffs = [(a, b) for a, b in zip(original, swapped) if a != b]
                assert len(diffs) == 1 and diffs[0][0][0] == diffs[0][1][0]  # one word, same category
                assert _non_slot_words(negative) == _non_slot_words(caption)
                n_true, n_total = check_caption(negative, ex.scene)
                assert n_true < n_total
                checked += 1
    assert checked > 500


def test_hard_negatives_by_category_and_seeded():
    from xlxmert.data.shapes.scene import Scene, SceneObject

    red = SceneObject("circle", "red", "small", 0.2, 0.5)
    objects = (red, SceneObject("square", "blue", "large", 0.75, 0.5))
    scene = Scene(1, "snow", objects)
    caption = "a red circle to the left of a blue square"
    for category in ("shape", "color", "position"):
        negs = hard_negatives(caption, scene, np.random.default_rng(1), n=9, category=category)
        assert len(negs) == 9
        assert all({s.category for s in category_slots(n)} >= {category} for n in negs)
    assert hard_negatives(caption, scene, np.random.default_rng(3)) == hard_negatives(
        caption, scene, np.random.default_rng(3)
    )
    assert hard_negatives(caption, scene, np.random.default_rng(0), category="number") == []
    assert fill_slot("a red circle in the snow", category_slots("a red circle in the snow")[0], "orange") == (
        "an orange circle in the snow"
    )
    with pytest.raises(XLXMERTError, match="category"):
        hard_negatives(caption, scene, np.random.default_rng(0), category="verb")
