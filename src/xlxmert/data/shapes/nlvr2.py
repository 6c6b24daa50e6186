"""Paired-image statements (NLVR2 format, JSON lines): two scenes, a sentence, True/False.

Labels alternate True/False over the pairs, so every split is balanced; for each pair a template and
its slots are drawn until the statement has the wanted label (the place template can always make
either label, so the draw always ends).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from xlxmert.data.shapes.scene import Scene
from xlxmert.data.shapes.world import COLORS, HELD_OUT_PAIRS, NUMBER_WORDS, PLACES, PLURALS, SHAPES, article

TEMPLATES: tuple[str, ...] = ("more", "both", "exactly", "place")
_TRIES = 50


def _count(scene: Scene, color: str | None = None, shape: str | None = None) -> int:
    return sum(
        (color is None or o.color == color) and (shape is None or o.shape == shape) for o in scene.objects
    )


def _draw(left: Scene, right: Scene, rng: np.random.Generator, split: str) -> tuple[str, bool, str, str]:
    """One random statement about the pair: (sentence, truth, synset, template)."""
    sides = {"left": left, "right": right}
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    if template == "more":
        side, other = ("left", "right") if rng.random() < 0.5 else ("right", "left")
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        truth = _count(sides[side], shape=shape) > _count(sides[other], shape=shape)
        return f"the {side} image has more {PLURALS[shape]} than the {other} image", truth, shape, template
    if template == "both":
        kind = int(rng.integers(3))
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        if kind == 2 and split != "compositional" and (color, shape) in HELD_OUT_PAIRS:
            kind = 0  # held-out pairs are never named outside the compositional split
        if kind == 0:
            what, synset, c, s = f"{article(color)} {color} object", color, color, None
        elif kind == 1:
            what, synset, c, s = f"{article(shape)} {shape}", shape, None, shape
        else:
            what, synset, c, s = f"{article(color)} {color} {shape}", shape, color, shape
        truth = _count(left, c, s) > 0 and _count(right, c, s) > 0
        return f"both images contain {what}", truth, synset, template
    if template == "exactly":
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        actual = _count(left, shape=shape) + _count(right, shape=shape)
        # Half the time the true number, else another small number, so both labels come up.
        n = actual if rng.random() < 0.5 else int(rng.integers(1, 5))
        n = max(n, 1)
        noun = shape if n == 1 else PLURALS[shape]
        verb = "is" if n == 1 else "are"
        return (
            f"there {verb} exactly {NUMBER_WORDS[n]} {noun} in the two images",
            n == actual,
            shape,
            template,
        )
    side = "left" if rng.random() < 0.5 else "right"
    place = list(PLACES)[int(rng.integers(len(PLACES)))]
    return f"the {side} image is {PLACES[place].phrase}", sides[side].place == place, place, template


def statement(
    left: Scene, right: Scene, rng: np.random.Generator, label: bool, split: str
) -> tuple[str, str, str]:
    """A sentence about (left, right) whose truth is ``label``: (sentence, synset, template)."""
    for _ in range(_TRIES):
        sentence, truth, synset, template = _draw(left, right, rng, split)
        if truth == label:
            return sentence, synset, template
    side = "left" if rng.random() < 0.5 else "right"
    scene = left if side == "left" else right
    place = scene.place if label else next(p for p in PLACES if p != scene.place)
    return f"the {side} image is {PLACES[place].phrase}", place, "place"


def write_nlvr2(
    scenes: list[Scene], file_names: list[str], split: str, seed_for: Callable[[int], list[int]]
) -> list[dict]:
    """One statement per scene as the left image, the right image another scene of the split.

    ``seed_for(index)`` gives the pair's seed, so the records do not depend on how scenes were made.
    """
    records = []
    n = len(scenes)
    for i, left in enumerate(scenes):
        rng = np.random.default_rng(seed_for(i))
        j = (i + 1 + int(rng.integers(n - 1))) % n if n > 1 else i
        label = i % 2 == 0
        sentence, synset, template = statement(left, scenes[j], rng, label, split)
        records.append(
            {
                "identifier": f"{split}-{i}-0-0",
                "sentence": sentence,
                "label": "True" if label else "False",
                "left_url": file_names[i],
                "right_url": file_names[j],
                "synset": synset,
                "query": template,
                "writer": "shapescenes",
                "directory": "images",
            }
        )
    return records
