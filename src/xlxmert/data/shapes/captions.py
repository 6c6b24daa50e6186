"""Captions of a scene (COCO captions format): five per image, true, at most 18 words.

Families in order of preference (WORLD.md): listing, relation, position, count, place. Each family
proposes every true caption it can make for the scene; the writer takes one caption per family,
then fills up to five, repeating families (never writing a false or ambiguous caption).
"""

from __future__ import annotations

import numpy as np

from xlxmert.data.shapes.scene import Scene, SceneObject, describe, region_of, relation
from xlxmert.data.shapes.world import (
    CAPTIONS_PER_IMAGE,
    MAX_CAPTION_WORDS,
    NUMBER_WORDS,
    PLACES,
    PLURALS,
    REGIONS,
    article,
)

FAMILIES: tuple[str, ...] = ("listing", "relation", "position", "count", "place")


def noun_phrase(number: int, words: list[str], shape: str) -> str:
    """ "a red circle", "an orange star", "two blue squares" (words: size and/or colour)."""
    if number == 1:
        head = [*words, shape]
        return " ".join([article(head[0]), *head])
    return " ".join([NUMBER_WORDS[number], *words, PLURALS[shape]])


def join_list(items: list[str]) -> str:
    """ "A", "A and B", "A, B and C"."""
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _groups(objects, key) -> list[list[SceneObject]]:
    # Groups of objects sharing key(obj), in order of first appearance.
    groups: dict = {}
    for o in objects:
        groups.setdefault(key(o), []).append(o)
    return list(groups.values())


def listing_captions(scene: Scene) -> list[str]:
    """Every object, identical (colour, shape) grouped, size words only where sizes differ."""
    phrases = []
    for group in _groups(scene.objects, lambda o: (o.color, o.shape)):
        first = group[0]
        if len({o.size for o in group}) == 1:
            phrases.append(noun_phrase(len(group), [first.color], first.shape))
        else:
            for same in _groups(group, lambda o: o.size):
                phrases.append(noun_phrase(len(same), [same[0].size, first.color], first.shape))
    return [f"{join_list(phrases)} {PLACES[scene.place].phrase}"]


def _referring(scene: Scene, obj: SceneObject) -> str | None:
    desc = describe(scene, obj)
    return None if desc is None else f"{article(desc)} {desc}"


def relation_captions(scene: Scene) -> list[str]:
    """ "a red circle to the left of a blue square", both sides singled out."""
    out = []
    for a in scene.objects:
        for b in scene.objects:
            if a is b:
                continue
            rel = relation(a, b)
            ra, rb = _referring(scene, a), _referring(scene, b)
            if rel is not None and ra is not None and rb is not None:
                out.append(f"{ra} {rel} {rb}")
    return out


def position_captions(scene: Scene) -> list[str]:
    """ "a blue square in the top right corner" for each referable object outside the dead zones."""
    out = []
    for obj in scene.objects:
        region, ref = region_of(obj), _referring(scene, obj)
        if region is not None and ref is not None:
            out.append(f"{ref} {REGIONS[region]}")
    return out


def count_captions(scene: Scene) -> list[str]:
    """The exact total ("three shapes on the sand") and exact per-shape counts covering every object."""
    n = len(scene.objects)
    place = PLACES[scene.place].phrase
    out = [f"{NUMBER_WORDS[n]} {'shape' if n == 1 else 'shapes'} {place}"]
    if n >= 2:  # with one object a per-shape count says no more than the place family
        per_shape = join_list(
            [noun_phrase(len(g), [], g[0].shape) for g in _groups(scene.objects, lambda o: o.shape)]
        )
        out += [per_shape, f"{per_shape} {place}"]
    return out


def place_captions(scene: Scene) -> list[str]:
    """One object and the place: "a yellow diamond in the fog" (also with size, or shape alone)."""
    place = PLACES[scene.place].phrase
    out = []
    for obj in scene.objects:
        for words in ([obj.color], [obj.size, obj.color], [obj.size], []):
            out.append(f"{noun_phrase(1, words, obj.shape)} {place}")
    return list(dict.fromkeys(out))


_WRITERS = {
    "listing": listing_captions,
    "relation": relation_captions,
    "position": position_captions,
    "count": count_captions,
    "place": place_captions,
}


def caption_length(caption: str) -> int:
    """Words plus listing commas: the WordPieces the caption takes in the transformer's text slots.

    WORLD.md allows 18 words; the transformer holds ``[CLS]`` + 18 pieces + ``[SEP]`` (paper: max
    length 20) and a comma is a piece of its own, so a listing with commas must count them too or
    its place phrase would be truncated away.
    """
    return len(caption.split()) + caption.count(",")


def candidate_captions(scene: Scene) -> dict[str, list[str]]:
    """Family → every true caption of at most 18 words (commas counted) it can write for ``scene``."""
    return {
        family: [c for c in writer(scene) if caption_length(c) <= MAX_CAPTION_WORDS]
        for family, writer in _WRITERS.items()
    }


def write_captions(scene: Scene, rng: np.random.Generator, k: int = CAPTIONS_PER_IMAGE) -> list[str]:
    """``k`` captions: one per family in order of preference, then more, distinct where possible."""
    candidates = candidate_captions(scene)
    chosen: list[str] = []

    def take(pool: list[str]) -> bool:
        fresh = [c for c in pool if c not in chosen]
        if not fresh:
            return False
        chosen.append(fresh[int(rng.integers(len(fresh)))])
        return True

    for family in FAMILIES:
        if len(chosen) < k:
            take(candidates[family])
    while len(chosen) < k:
        if not any(take(candidates[f]) for f in FAMILIES if len(chosen) < k):
            # Every true caption is used: repeat rather than write a false one.
            pool = [c for f in FAMILIES for c in candidates[f]]
            chosen.append(pool[int(rng.integers(len(pool)))])
    return chosen
