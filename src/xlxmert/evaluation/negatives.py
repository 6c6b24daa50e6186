"""A caption's category words and the one-word swaps that make it false of its scene.

The *hard negatives* of R-precision (paper §6.1, appendix E.1; :mod:`xlxmert.evaluation.metrics.rprecision`)
and the matcher's training negatives (:mod:`xlxmert.evaluation.graders.matcher_training`): each swaps ONE
category word (shape, colour, number, position/relation) for another of its category so that the caption
becomes false of the scene (checked with ``facts.check_caption``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xlxmert.data.shapes import world
from xlxmert.data.shapes.facts import check_caption
from xlxmert.data.shapes.scene import Scene
from xlxmert.errors import XLXMERTError

CATEGORIES: tuple[str, ...] = ("shape", "color", "number", "position")

# The words of each category, as units a swap replaces. Number words are those that take a plural
# noun (two..four), so a swap never has to change the noun; positions are whole phrases (a region
# phrase is swapped for another region phrase, a relation for another relation).
_SHAPE_SINGULAR = tuple(world.SHAPES)
_SHAPE_PLURAL = tuple(world.PLURALS[s] for s in world.SHAPES)
_NUMBERS = ("two", "three", "four")
_REGION_PHRASES = tuple(world.REGIONS.values())
_RELATIONS = tuple(world.RELATIONS)


@dataclass(frozen=True)
class Slot:
    """A category word (or position phrase) of a caption: tokens ``[start, end)``."""

    start: int
    end: int
    text: str
    category: str
    alternatives: tuple[str, ...]  # every filler of the same kind, the original included


def tokenize(caption: str) -> list[str]:
    """Lower-case words; listing commas are tokens of their own."""
    return re.sub(r",", " , ", caption.lower()).split()


def detokenize(tokens: Sequence[str]) -> str:
    return " ".join(tokens).replace(" , ", ", ")


def _phrase_table() -> list[tuple[tuple[str, ...], str, tuple[str, ...]]]:
    table = []
    for group, category in (
        (_REGION_PHRASES, "position"),
        (_RELATIONS, "position"),
        (_SHAPE_SINGULAR, "shape"),
        (_SHAPE_PLURAL, "shape"),
        (tuple(world.COLORS), "color"),
        (_NUMBERS, "number"),
    ):
        for phrase in group:
            table.append((tuple(phrase.split()), category, group))
    # Longest first, so "to the left of" wins over any shorter phrase sharing its words.
    table.sort(key=lambda row: -len(row[0]))
    return table


_PHRASES = _phrase_table()


def category_slots(caption: str) -> list[Slot]:
    """The caption's category words and phrases, left to right."""
    tokens = tokenize(caption)
    slots = []
    i = 0
    while i < len(tokens):
        for words, category, group in _PHRASES:
            if tuple(tokens[i : i + len(words)]) == words:
                slots.append(Slot(i, i + len(words), " ".join(words), category, group))
                i += len(words)
                break
        else:
            i += 1
    return slots


def fill_slot(caption: str, slot: Slot, filler: str) -> str:
    """``caption`` with ``slot`` replaced by ``filler``; an ``a``/``an`` right before it is made to agree."""
    tokens = tokenize(caption)
    new = tokens[: slot.start] + filler.split() + tokens[slot.end :]
    if slot.start > 0 and new[slot.start - 1] in ("a", "an"):
        new[slot.start - 1] = world.article(new[slot.start])
    return detokenize(new)


def _is_false(caption: str, scene: Scene) -> bool:
    n_true, n_total = check_caption(caption, scene)
    return n_total > 0 and n_true < n_total


def hard_negative_pool(caption: str, scene: Scene, category: str | None = None) -> list[str]:
    """Every caption made by swapping one category word of ``caption`` that is false of ``scene``."""
    pool = []
    for slot in category_slots(caption):
        if category is not None and slot.category != category:
            continue
        for filler in slot.alternatives:
            if filler == slot.text:
                continue
            candidate = fill_slot(caption, slot, filler)
            if candidate not in pool and _is_false(candidate, scene):
                pool.append(candidate)
    return pool


def hard_negatives(
    caption: str, scene: Scene, rng: np.random.Generator, n: int = 9, category: str | None = None
) -> list[str]:
    """``n`` hard negatives of ``caption`` (one category word swapped, false of ``scene``).

    Drawn without repetition while the pool lasts, then with; ``[]`` when no swap is false (e.g. a
    caption without category words). ``category`` restricts the swaps to one of CATEGORIES.
    """
    if category is not None and category not in CATEGORIES:
        raise XLXMERTError(f"unknown category {category!r}; choose one of {', '.join(CATEGORIES)}")
    pool = hard_negative_pool(caption, scene, category)
    if not pool:
        return []
    if len(pool) >= n:
        idx = rng.choice(len(pool), size=n, replace=False)
    else:
        idx = np.concatenate([np.arange(len(pool)), rng.choice(len(pool), size=n - len(pool), replace=True)])
    return [pool[int(i)] for i in idx]


def world_words() -> tuple[str, ...]:
    """Every word a ShapeScenes caption may use that the vocabulary must know even if unseen."""
    words: set[str] = set(_SHAPE_SINGULAR) | set(_SHAPE_PLURAL) | set(world.COLORS) | set(_NUMBERS)
    for phrase in (*_REGION_PHRASES, *_RELATIONS, *(p.phrase for p in world.PLACES.values())):
        words.update(phrase.split())
    words.update({"a", "an", "and", ",", "small", "large", "shapes", "shape", "one"})
    return tuple(sorted(words))
