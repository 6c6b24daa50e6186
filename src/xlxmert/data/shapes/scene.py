"""The scene graph of a ShapeScenes image and the words for where things are.

A :class:`Scene` is the ground truth of one image: a place and 1–4 :class:`SceneObject`. Regions,
relations and referring descriptions are derived from it by the rules of WORLD.md; every writer
(captions, questions, NLVR2) and the renderer start from here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xlxmert.data.shapes.world import (
    COLORS,
    DEAD_ZONE,
    GAP,
    HELD_OUT_PAIRS,
    MARGIN,
    OBJECT_COUNT_PROBS,
    PLACEMENT_TRIES,
    PLACES,
    RELATION_MIN,
    RELATION_RATIO,
    SHAPES,
    SIZES,
    SPLITS,
)
from xlxmert.errors import XLXMERTError

# Coordinates are stored with 4 decimals so that a scene read back from JSON is the same scene
# (same regions, relations and masks) as the one that was rendered.
_DECIMALS = 4
# Placement never needs this many redraws in practice (four large objects fit easily); the bound
# only turns an impossible configuration into an error instead of a hang.
_MAX_REDRAWS = 10_000


@dataclass(frozen=True)
class SceneObject:
    """One shape: ``shape`` in SHAPES, ``color`` in COLORS, ``size`` in SIZES, centre (cx, cy)."""

    shape: str
    color: str
    size: str
    cx: float
    cy: float

    @property
    def d(self) -> float:
        """Extent: the side of the object's bounding square, in canvas units."""
        return SIZES[self.size]

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """The d×d box ``(x0, y0, x1, y1)``, normalised."""
        h = self.d / 2
        return (
            round(self.cx - h, _DECIMALS),
            round(self.cy - h, _DECIMALS),
            round(self.cx + h, _DECIMALS),
            round(self.cy + h, _DECIMALS),
        )


@dataclass(frozen=True)
class Scene:
    """The ground truth of one image: its id, place (a PLACES name) and objects."""

    id: int
    place: str
    objects: tuple[SceneObject, ...]


def _allowed_pairs() -> list[tuple[str, str]]:
    held = set(HELD_OUT_PAIRS)
    return [(c, s) for c in COLORS for s in SHAPES if (c, s) not in held]


def _boxes_apart(a: SceneObject, b: SceneObject) -> bool:
    # Boxes grown by GAP/2 on every side must not intersect: far enough apart on at least one axis.
    reach = (a.d + b.d) / 2 + GAP
    return abs(a.cx - b.cx) >= reach or abs(a.cy - b.cy) >= reach


def _place_objects(
    rng: np.random.Generator, attrs: list[tuple[str, str, str]]
) -> tuple[SceneObject, ...] | None:
    placed: list[SceneObject] = []
    for shape, color, size in attrs:
        lo = SIZES[size] / 2 + MARGIN
        hi = 1.0 - lo
        for _ in range(PLACEMENT_TRIES):
            cx, cy = (min(max(round(float(v), _DECIMALS), lo), hi) for v in rng.uniform(lo, hi, 2))
            obj = SceneObject(shape, color, size, cx, cy)
            if all(_boxes_apart(obj, other) for other in placed):
                placed.append(obj)
                break
        else:
            return None
    return tuple(placed)


def sample_scene(rng: np.random.Generator, split: str, scene_id: int) -> Scene:
    """Draw one scene of ``split`` from the world's distribution.

    Objects (1–4 with probabilities 0.25/0.35/0.25/0.15) draw shape, colour and size uniformly and
    independently; in train/val/test the held-out colour–shape pairs are excluded (uniform over the
    other 32 pairs); in ``compositional`` one object, chosen uniformly, gets a held-out pair and the
    others draw from all 36. Centres are uniform with a margin; boxes keep a gap (rejection
    sampling, 100 tries per object, then the whole placement is redrawn).
    """
    if split not in SPLITS:
        raise XLXMERTError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    place = str(rng.choice(list(PLACES)))
    n = int(rng.choice(len(OBJECT_COUNT_PROBS), p=OBJECT_COUNT_PROBS)) + 1
    if split == "compositional":
        pairs = [(c, s) for c in COLORS for s in SHAPES]
        forced = int(rng.integers(n))
    else:
        pairs = _allowed_pairs()
        forced = -1
    attrs = []
    for k in range(n):
        if k == forced:
            color, shape = HELD_OUT_PAIRS[int(rng.integers(len(HELD_OUT_PAIRS)))]
        else:
            color, shape = pairs[int(rng.integers(len(pairs)))]
        size = str(rng.choice(list(SIZES)))
        attrs.append((shape, color, size))
    for _ in range(_MAX_REDRAWS):
        objects = _place_objects(rng, attrs)
        if objects is not None:
            return Scene(int(scene_id), place, objects)
    raise XLXMERTError(f"could not place {attrs} on the canvas; the size or gap settings are too large")


def _band(v: float) -> int | None:
    """0, 1 or 2 for the first, middle or last third; None within DEAD_ZONE of a boundary."""
    if abs(v - 1 / 3) <= DEAD_ZONE or abs(v - 2 / 3) <= DEAD_ZONE:
        return None
    return 0 if v < 1 / 3 else (2 if v > 2 / 3 else 1)


_REGION_NAMES = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)


def region_of(obj: SceneObject) -> str | None:
    """The region name of ``obj``'s centre (a REGIONS key), or None inside a dead zone."""
    col, row = _band(obj.cx), _band(obj.cy)
    if col is None or row is None:
        return None
    return _REGION_NAMES[row][col]


def relation(a: SceneObject, b: SceneObject) -> str | None:
    """Where ``a`` is relative to ``b``: "to the left of", "to the right of", "above", "below" or None."""
    dx, dy = b.cx - a.cx, b.cy - a.cy
    if dx >= RELATION_MIN and dx >= RELATION_RATIO * abs(dy):
        return "to the left of"
    if -dx >= RELATION_MIN and -dx >= RELATION_RATIO * abs(dy):
        return "to the right of"
    if dy >= RELATION_MIN and dy >= RELATION_RATIO * abs(dx):
        return "above"
    if -dy >= RELATION_MIN and -dy >= RELATION_RATIO * abs(dx):
        return "below"
    return None


def _description_levels(obj: SceneObject) -> tuple[tuple[str, ...], ...]:
    return ((obj.shape,), (obj.color, obj.shape), (obj.size, obj.color, obj.shape))


def _matches(obj: SceneObject, words: tuple[str, ...]) -> bool:
    return all(w in (obj.shape, obj.color, obj.size) for w in words)


def describe(scene: Scene, obj: SceneObject) -> str | None:
    """The shortest of "SHAPE", "COLOUR SHAPE", "SIZE COLOUR SHAPE" that matches only ``obj``.

    No article ("red circle"); None if no such description singles the object out.
    """
    for words in _description_levels(obj):
        if sum(_matches(o, words) for o in scene.objects) == 1:
            return " ".join(words)
    return None


def scene_to_json(scene: Scene, file_name: str) -> dict:
    """The scene's entry in ``scenes_<split>.json`` (WORLD.md's schema)."""
    return {
        "id": scene.id,
        "file_name": file_name,
        "place": scene.place,
        "objects": [
            {
                "shape": o.shape,
                "color": o.color,
                "size": o.size,
                "cx": o.cx,
                "cy": o.cy,
                "bbox": list(o.bbox),
            }
            for o in scene.objects
        ],
    }


def scene_from_json(d: dict) -> Scene:
    """Inverse of :func:`scene_to_json` (``file_name`` and ``bbox`` are not kept)."""
    try:
        objects = tuple(
            SceneObject(str(o["shape"]), str(o["color"]), str(o["size"]), float(o["cx"]), float(o["cy"]))
            for o in d["objects"]
        )
        return Scene(int(d["id"]), str(d["place"]), objects)
    except (KeyError, TypeError, ValueError) as exc:
        raise XLXMERTError(f"malformed scene entry {str(d)[:80]!r}: {exc!r}") from None


def load_scenes(split_dir: str | Path) -> list[Scene]:
    """All scenes of a split folder, from ``scenes_<split>.json`` (split = the folder's name)."""
    split_dir = Path(split_dir)
    path = split_dir / f"scenes_{split_dir.name}.json"
    if not path.is_file():
        found = sorted(split_dir.glob("scenes_*.json"))
        if len(found) != 1:
            raise XLXMERTError(
                f"no scenes file in {split_dir}; generate the split with `xlxmert data shapes --out ROOT`"
            )
        path = found[0]
    try:
        data = json.loads(path.read_text())
        return [scene_from_json(d) for d in data["images"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise XLXMERTError(f"cannot read scenes from {path}: {exc!r}") from None
