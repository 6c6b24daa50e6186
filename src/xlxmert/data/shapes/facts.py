"""An independent checker of ShapeScenes captions: caption text → facts → true or false of a scene.

Written from the caption grammar of WORLD.md, not from the caption writer, and re-deriving regions,
relations and counts from the scene graph on its own, so that it can catch the writer's mistakes
(the tests use it that way) and grade captions a model generates (evaluation uses it that way).

Grammar (lower case; commas only inside listings; an optional place phrase may end any caption)::

    caption  := body [PLACE]
    body     := np_list                      listing / count / place captions
              | np RELATION np               "a red circle to the left of a blue square"
              | np REGION                    "a blue square in the top right corner"
    np_list  := np | np "and" np | np "," np ... "and" np
    np       := QUANT [SIZE] [COLOUR] NOUN   NOUN: a shape (singular or plural), "shape(s)", "object(s)"

Meaning: one noun phrase with ``a``/``an``/``one`` claims that such an object exists (``object``
fact). Several noun phrases, or a number of two or more, list the scene exhaustively: one
``count`` fact per phrase (exactly that many) and a ``total`` fact (nothing else is there).
Relation and position phrases must refer to exactly one object each (``relation`` /
``position`` facts); a place phrase is a ``place`` fact.
"""

from __future__ import annotations

from dataclasses import dataclass

from xlxmert.data.shapes.world import (
    COLORS,
    DEAD_ZONE,
    NUMBER_WORDS,
    PLACES,
    PLURALS,
    REGIONS,
    RELATION_MIN,
    RELATION_RATIO,
    SHAPES,
    SIZES,
)

CATEGORY_WORDS: dict[str, list[str]] = {
    "shape": list(SHAPES),
    "color": list(COLORS),
    "number": [NUMBER_WORDS[k] for k in range(1, 5)],
    "position": list(REGIONS.values()) + ["to the left of", "to the right of", "above", "below"],
}

_QUANTITIES = {"a": 1, "an": 1, **{w: k for k, w in NUMBER_WORDS.items() if k > 0}}
_SINGULAR = {p: s for s, p in PLURALS.items()} | {s: s for s in SHAPES}
_GENERIC = {"shape", "shapes", "object", "objects"}
_RELATION_WORDS = ("to the left of", "to the right of", "above", "below")


@dataclass(frozen=True)
class NounPhrase:
    """``number`` objects that are ``size``/``color``/``shape`` (None: any)."""

    number: int
    size: str | None
    color: str | None
    shape: str | None

    def matches(self, obj) -> bool:
        return (
            (self.size is None or obj.size == self.size)
            and (self.color is None or obj.color == self.color)
            and (self.shape is None or obj.shape == self.shape)
        )


@dataclass(frozen=True)
class Fact:
    """One checkable claim of a caption.

    kind ``object``: ``subject`` exists; ``count``: exactly ``subject.number`` objects match
    ``subject``; ``total``: the scene has exactly ``number`` objects; ``relation``: the one object
    ``subject`` refers to is ``relation`` the one ``other`` refers to; ``position``: the one object
    ``subject`` refers to is in ``region``; ``place``: the scene's place is ``place``.
    """

    kind: str
    subject: NounPhrase | None = None
    other: NounPhrase | None = None
    relation: str | None = None
    region: str | None = None
    place: str | None = None
    number: int | None = None


def _strip_suffix(tokens: list[str], phrases: dict[str, str]) -> tuple[list[str], str | None]:
    """Remove a trailing phrase (phrase → key) from ``tokens``; returns (rest, key or None)."""
    for phrase, key in phrases.items():
        words = phrase.split()
        if len(tokens) > len(words) and tokens[-len(words) :] == words:
            return tokens[: -len(words)], key
    return tokens, None


def _parse_np(tokens: list[str]) -> NounPhrase | None:
    if len(tokens) < 2 or tokens[0] not in _QUANTITIES:
        return None
    number, rest = _QUANTITIES[tokens[0]], tokens[1:]
    size = rest.pop(0) if len(rest) > 1 and rest[0] in SIZES else None
    color = rest.pop(0) if len(rest) > 1 and rest[0] in COLORS else None
    if len(rest) != 1:
        return None
    noun = rest[0]
    if noun in _GENERIC:
        return NounPhrase(number, size, color, None)
    if noun in _SINGULAR:
        return NounPhrase(number, size, color, _SINGULAR[noun])
    return None


def _split_list(tokens: list[str]) -> list[list[str]] | None:
    parts: list[list[str]] = [[]]
    for t in tokens:
        if t in (",", "and"):
            parts.append([])
        else:
            parts[-1].append(t)
    return parts if all(parts) else None


def _find(tokens: list[str], words: list[str]) -> int:
    for i in range(len(tokens) - len(words) + 1):
        if tokens[i : i + len(words)] == words:
            return i
    return -1


def parse_caption(text: str) -> list[Fact]:
    """The facts a caption states; an empty list if it does not follow the grammar."""
    tokens = text.lower().replace(",", " , ").replace(".", " ").split()
    tokens, place = _strip_suffix(tokens, {p.phrase: name for name, p in PLACES.items()})
    facts = [Fact("place", place=place)] if place is not None else []
    if not tokens:
        return facts
    for rel in _RELATION_WORDS:
        i = _find(tokens, rel.split())
        if i > 0:
            a, b = _parse_np(tokens[:i]), _parse_np(tokens[i + len(rel.split()) :])
            if a is None or b is None or a.number != 1 or b.number != 1:
                return []
            return [Fact("relation", subject=a, other=b, relation=rel), *facts]
    rest, region = _strip_suffix(tokens, {phrase: name for name, phrase in REGIONS.items()})
    if region is not None:
        a = _parse_np(rest)
        if a is None or a.number != 1:
            return []
        return [Fact("position", subject=a, region=region), *facts]
    parts = _split_list(tokens)
    nps = [_parse_np(p) for p in parts] if parts else [None]
    if any(p is None for p in nps):
        return []
    if len(nps) == 1 and nps[0].shape is None and nps[0].color is None and nps[0].size is None:
        return [Fact("total", number=nps[0].number), *facts]  # "three shapes on the sand"
    if len(nps) == 1 and nps[0].number == 1:
        return [Fact("object", subject=nps[0]), *facts]  # "a yellow diamond in the fog"
    counts = [Fact("count", subject=p) for p in nps]
    return [*counts, Fact("total", number=sum(p.number for p in nps)), *facts]


def _third(v: float) -> int | None:
    # Which third of the axis v falls in, unless it is within DEAD_ZONE of a third's boundary.
    if min(abs(v - 1 / 3), abs(v - 2 / 3)) <= DEAD_ZONE:
        return None
    return min(int(v * 3), 2)


_REGION_GRID = {
    (0, 0): "top left",
    (0, 1): "top",
    (0, 2): "top right",
    (1, 0): "left",
    (1, 1): "center",
    (1, 2): "right",
    (2, 0): "bottom left",
    (2, 1): "bottom",
    (2, 2): "bottom right",
}


def _region(obj) -> str | None:
    row, col = _third(obj.cy), _third(obj.cx)
    return None if row is None or col is None else _REGION_GRID[(row, col)]


def _holds(rel: str, a, b) -> bool:
    # (along, across): the offset of b from a along the relation's direction and across it.
    along, across = {
        "to the left of": (b.cx - a.cx, b.cy - a.cy),
        "to the right of": (a.cx - b.cx, b.cy - a.cy),
        "above": (b.cy - a.cy, b.cx - a.cx),
        "below": (a.cy - b.cy, b.cx - a.cx),
    }[rel]
    return along >= RELATION_MIN and along >= RELATION_RATIO * abs(across)


def _the_one(np_: NounPhrase, scene):
    hits = [o for o in scene.objects if np_.matches(o)]
    return hits[0] if len(hits) == 1 else None


def fact_is_true(fact: Fact, scene) -> bool:
    """Whether ``fact`` holds in ``scene`` (anything with ``place`` and ``objects`` of cx/cy/...)."""
    if fact.kind == "place":
        return scene.place == fact.place
    if fact.kind == "total":
        return len(scene.objects) == fact.number
    if fact.kind == "object":
        return any(fact.subject.matches(o) for o in scene.objects)
    if fact.kind == "count":
        return sum(fact.subject.matches(o) for o in scene.objects) == fact.subject.number
    if fact.kind == "position":
        obj = _the_one(fact.subject, scene)
        return obj is not None and _region(obj) == fact.region
    if fact.kind == "relation":
        a, b = _the_one(fact.subject, scene), _the_one(fact.other, scene)
        return a is not None and b is not None and _holds(fact.relation, a, b)
    raise ValueError(f"unknown fact kind {fact.kind!r}")


def check_caption(text: str, scene) -> tuple[int, int]:
    """(facts true, facts stated); a caption outside the grammar counts as one false fact."""
    facts = parse_caption(text)
    if not facts:
        return 0, 1
    return sum(fact_is_true(f, scene) for f in facts), len(facts)


def caption_is_true(text: str, scene) -> bool:
    """Whether every fact of the caption holds in ``scene`` (False outside the grammar)."""
    true, total = check_caption(text, scene)
    return true == total
