"""The constants of the ShapeScenes world (WORLD.md is normative; these are its numbers).

Coordinates are normalised to [0, 1], x to the right, y downwards.
"""

from __future__ import annotations

from typing import NamedTuple


class Place(NamedTuple):
    """A background: its flat base colour and the phrase captions use for it."""

    rgb: tuple[int, int, int]
    phrase: str


# name → (rgb, caption phrase); the name is also the VQA answer word for "where is this".
PLACES: dict[str, Place] = {
    "snow": Place((236, 236, 236), "in the snow"),
    "night": Place((28, 30, 48), "at night"),
    "fog": Place((150, 150, 150), "in the fog"),
    "sand": Place((214, 192, 150), "on the sand"),
}

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "orange": (240, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 160, 60),
    "blue": (40, 90, 220),
    "purple": (140, 60, 190),
}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "cross")

# Plural nouns (only "cross" is irregular in spelling).
PLURALS: dict[str, str] = {s: (s + "es" if s.endswith("s") else s + "s") for s in SHAPES}

# Extent d of an object: the side of its bounding square, in canvas units.
SIZES: dict[str, float] = {"small": 0.20, "large": 0.34}

# Colour–shape pairs that never occur in train/val; every compositional scene has at least one.
HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("purple", "star"),
    ("green", "triangle"),
    ("orange", "cross"),
    ("blue", "diamond"),
)

# Region name → caption phrase, row-major from the top left (each phrase means exactly its region).
REGIONS: dict[str, str] = {
    "top left": "in the top left corner",
    "top": "at the top",
    "top right": "in the top right corner",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom left": "in the bottom left corner",
    "bottom": "at the bottom",
    "bottom right": "in the bottom right corner",
}

RELATIONS: tuple[str, ...] = ("to the left of", "to the right of", "above", "below")

SPLITS: tuple[str, ...] = ("train", "val", "test", "compositional")

# Up to eight: NLVR2 statements count over two images of at most four objects each.
NUMBER_WORDS: dict[int, str] = {
    0: "zero",
    1: "one",
    2: "two",
    3: "three",
    4: "four",
    5: "five",
    6: "six",
    7: "seven",
    8: "eight",
}

IMAGE_SIZES: tuple[int, ...] = (64, 128, 256)

# Objects per scene: 1, 2, 3, 4 with these probabilities.
OBJECT_COUNT_PROBS: tuple[float, ...] = (0.25, 0.35, 0.25, 0.15)

MARGIN = 0.02  # centres keep the whole box at least this far from the canvas edge
GAP = 0.03  # boxes of two objects are apart by at least this along at least one axis
PLACEMENT_TRIES = 100  # per object, before the whole scene is redrawn
DEAD_ZONE = 0.04  # a centre this close to a region boundary gets no position words
RELATION_MIN = 0.15  # a relation needs this much offset along its axis ...
RELATION_RATIO = 2.0  # ... and this many times the offset along the other axis
NOISE = 6  # uniform integer pixel noise in [-NOISE, +NOISE], every pixel and channel
SUPERSAMPLE = 4  # render at 4·S, LANCZOS down to S
MAX_CAPTION_WORDS = 18
CAPTIONS_PER_IMAGE = 5

# Shape geometry, as fractions of d.
SQUARE_SIDE = 0.82
TRIANGLE_HEIGHT = 0.866
STAR_INNER = 0.45
CROSS_WIDTH = 1.0 / 3.0


def article(word: str) -> str:
    """The indefinite article that agrees with ``word`` ("an orange star", "a red circle")."""
    return "an" if word[:1] in "aeiou" else "a"
