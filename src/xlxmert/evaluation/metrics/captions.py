"""Caption metrics: the captioning papers' BLEU-4 and CIDEr-D, and ShapeScenes' exact checks.

- ``bleu4`` / ``cider_d``: corpus BLEU-4 and CIDEr-D against the five reference captions of each
  image, with pycocoevalcap's scorers (the COCO caption evaluation's own code; pure Python). Texts
  are lower-cased and stripped of punctuation, which is what the COCO PTB tokenizer does to
  ShapeScenes' captions, without its Java.
- ``facts_true`` / ``all_true``: :func:`xlxmert.evaluation.metrics.tasks.caption_correctness` (the
  package's fact checker on the true scene).
- ``outside_grammar``: the share of captions that no ShapeScenes caption family can write
  (:func:`in_grammar`, WORLD.md "Captions").
- ``repeated_word`` / ``dangling_article``: the share of captions with a word written twice in a
  row, or an article not followed by a noun phrase (at the end, or before a function word).
- ``two_objects_named``: of the images with exactly two objects, the share whose caption names
  both, each with its colour and shape (``n_two_objects`` of them).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from xlxmert.data.shapes.captions import caption_length
from xlxmert.data.shapes.facts import parse_caption
from xlxmert.data.shapes.scene import Scene
from xlxmert.data.shapes.world import (
    COLORS,
    MAX_CAPTION_WORDS,
    NUMBER_WORDS,
    PLACES,
    PLURALS,
    REGIONS,
    RELATIONS,
    SHAPES,
    SIZES,
    article,
)
from xlxmert.errors import XLXMERTError
from xlxmert.evaluation.metrics.tasks import caption_correctness
from xlxmert.utils.seeding import numpy_rng

ARTICLES = ("a", "an", "the")
# Words after which an article leaves its noun phrase unfinished.
FUNCTION_WORDS = frozenset(
    {*ARTICLES, "and", "or", ",", "of", "in", "on", "at", "to", "with", "above", "below"}
)
MAX_OBJECTS = 4  # WORLD.md: 1 to 4 objects per scene


def _any(words) -> str:
    return "(?:" + "|".join(re.escape(w) for w in words) + ")"


def _list_of(item: str) -> str:
    """``item``, ``item and item`` or ``item , item ... and item`` (commas as tokens)."""
    return f"{item}(?: , {item})* and {item}|{item}"


_COLOR, _SIZE, _SHAPE, _PLURAL = _any(COLORS), _any(SIZES), _any(SHAPES), _any(PLURALS.values())
_MANY = _any(NUMBER_WORDS[k] for k in range(2, MAX_OBJECTS + 1))
_PLACE = _any(p.phrase for p in PLACES.values())
# Noun phrases: one referring to a single object ("a small red circle"), one listing identical
# objects ("two blue squares"), one counting a shape ("a circle", "two stars").
_REF = f"an? (?:{_SIZE} )?(?:{_COLOR} )?{_SHAPE}"
_LIST_ITEM = f"an? (?:{_SIZE} )?{_COLOR} {_SHAPE}|{_MANY} (?:{_SIZE} )?{_COLOR} {_PLURAL}"
_COUNT_ITEM = f"an? {_SHAPE}|{_MANY} {_PLURAL}"
_TOTAL = f"{_any(NUMBER_WORDS[k] for k in range(2, MAX_OBJECTS + 1))} shapes|one shape"
_FAMILIES = {
    "listing": f"(?:{_list_of(f'(?:{_LIST_ITEM})')}) {_PLACE}",
    "relation": f"{_REF} {_any(RELATIONS)} {_REF}",
    "position": f"{_REF} {_any(REGIONS.values())}",
    "count": f"(?:{_TOTAL}) {_PLACE}|(?:{_list_of(f'(?:{_COUNT_ITEM})')})(?: {_PLACE})?",
    "place": f"{_REF} {_PLACE}",
}
_PATTERNS = {family: re.compile(f"(?:{pattern})") for family, pattern in _FAMILIES.items()}


def tokens(caption: str) -> list[str]:
    """Lower-case words, with each comma a token of its own."""
    return caption.lower().replace(",", " , ").split()


def _quantities(words: list[str]) -> list[int]:
    numbers = {"a": 1, "an": 1, **{NUMBER_WORDS[k]: k for k in range(2, MAX_OBJECTS + 1)}}
    return [numbers[w] for w in words if w in numbers]


def grammar_family(caption: str) -> str | None:
    """The caption family of WORLD.md that can write ``caption`` (None: none can).

    Beyond each family's word order: lower case, articles agree with the next word, at most 18
    words (listing commas counted), at most four objects listed or counted, and a per-shape count
    without a place names at least two objects."""
    if caption != caption.lower() or caption_length(caption) > MAX_CAPTION_WORDS:
        return None
    words = tokens(caption)
    if " ".join(words).replace(" , ", ", ") != caption.strip():
        return None  # stray spaces or punctuation
    for w, nxt in zip(words, words[1:]):
        if w in ("a", "an") and w != article(nxt):
            return None
    text = " ".join(words)
    for family, pattern in _PATTERNS.items():
        if pattern.fullmatch(text):
            if family in ("listing", "count") and sum(_quantities(words)) > MAX_OBJECTS:
                continue
            if family == "count" and not re.search(f" {_PLACE}$", text) and sum(_quantities(words)) < 2:
                continue
            return family
    return None


def in_grammar(caption: str) -> bool:
    """Whether some ShapeScenes caption family can write ``caption`` (its words, not its truth)."""
    return grammar_family(caption) is not None


def has_repeated_word(caption: str) -> bool:
    """A word written twice in a row ("a a triangle", "the sand sand")."""
    words = tokens(caption)
    return any(a == b for a, b in zip(words, words[1:]))


def has_dangling_article(caption: str) -> bool:
    """An article with no noun phrase after it: last, or followed by a function word."""
    words = tokens(caption)
    return any(
        w in ARTICLES and (i + 1 == len(words) or words[i + 1] in FUNCTION_WORDS) for i, w in enumerate(words)
    )


def names_objects(caption: str, scene: Scene) -> bool:
    """Whether ``caption`` (parsed by the fact checker) names every object of ``scene`` with its
    colour and shape."""
    named = set()
    for fact in parse_caption(caption):
        for np_ in (fact.subject, fact.other):
            if np_ is not None and np_.color is not None and np_.shape is not None:
                named.add((np_.color, np_.shape))
    return all((o.color, o.shape) in named for o in scene.objects)


def _normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def bleu_cider(captions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU-4 and CIDEr-D of ``captions[i]`` against ``references[i]`` (pycocoevalcap)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    if len(captions) != len(references) or not captions:
        raise XLXMERTError(
            f"{len(captions)} captions for {len(references)} reference sets; give one per image"
        )
    if any(not refs for refs in references):
        raise XLXMERTError("every image needs at least one reference caption")
    gts = {i: [_normalize(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [_normalize(c) or "<empty>"] for i, c in enumerate(captions)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {"bleu4": float(bleu[3]), "cider_d": float(cider)}


def caption_metrics(
    captions: Sequence[str], references: Sequence[Sequence[str]], scenes: Sequence[Scene]
) -> dict[str, float | int]:
    """Every metric of the module docstring for one caption per image."""
    if not len(captions) == len(references) == len(scenes):
        raise XLXMERTError(
            f"{len(captions)} captions, {len(references)} reference sets and {len(scenes)} scenes; "
            "give one of each per image"
        )
    n = len(captions)
    correct = caption_correctness(captions, scenes)
    pairs = [(c, s) for c, s in zip(captions, scenes) if len(s.objects) == 2]
    return {
        **bleu_cider(captions, references),
        "facts_true": float(correct["facts_true"]),
        "all_true": float(correct["all_true"]),
        "outside_grammar": sum(not in_grammar(c) for c in captions) / n,
        "repeated_word": sum(map(has_repeated_word, captions)) / n,
        "dangling_article": sum(map(has_dangling_article, captions)) / n,
        "two_objects_named": sum(names_objects(c, s) for c, s in pairs) / max(len(pairs), 1),
        "n_two_objects": len(pairs),
        "n": n,
    }


def other_image_references(references: Sequence[Sequence[str]], seed: int) -> list[str]:
    """The chance control: for image i, one reference caption of another image (images paired by
    a seeded rotation, the caption drawn with the same seed)."""
    if len(references) < 2:
        raise XLXMERTError("the chance control needs at least two images")
    rng = numpy_rng(seed)
    shift = int(rng.integers(1, len(references)))
    out = []
    for i in range(len(references)):
        refs = references[(i + shift) % len(references)]
        out.append(refs[int(rng.integers(len(refs)))])
    return out
