"""Pixels of a ShapeScenes image, and the exact mask of each object.

Both start from the same geometry (:func:`shape_outline`), so the mask the backbone trainer uses
for per-cell coverage is the shape the renderer painted, up to anti-aliasing.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from xlxmert.data.shapes.scene import Scene, SceneObject
from xlxmert.data.shapes.world import (
    COLORS,
    CROSS_WIDTH,
    IMAGE_SIZES,
    NOISE,
    PLACES,
    SQUARE_SIDE,
    STAR_INNER,
    SUPERSAMPLE,
    TRIANGLE_HEIGHT,
)
from xlxmert.errors import XLXMERTError

Polygon = list[tuple[float, float]]


def shape_outline(obj: SceneObject) -> list[Polygon] | None:
    """The object's outline as polygons in normalised coordinates (their union is the shape).

    None for the circle, which is exact as a disc of diameter d rather than a polygon.
    """
    cx, cy, d = obj.cx, obj.cy, obj.d
    h = d / 2
    if obj.shape == "circle":
        return None
    if obj.shape == "square":
        s = SQUARE_SIDE * d / 2
        return [[(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]]
    if obj.shape == "triangle":
        # (cx, cy) is the centre of the triangle's bounding box, not its centroid.
        t = TRIANGLE_HEIGHT * d / 2
        return [[(cx, cy - t), (cx + h, cy + t), (cx - h, cy + t)]]
    if obj.shape == "diamond":
        return [[(cx, cy - h), (cx + h, cy), (cx, cy + h), (cx - h, cy)]]
    if obj.shape == "star":
        points = []
        for k in range(10):
            r = h if k % 2 == 0 else STAR_INNER * h
            angle = -math.pi / 2 + k * math.pi / 5  # k = 0 points straight up (y grows downwards)
            points.append((cx + r * math.cos(angle), cy + r * math.sin(angle)))
        return [points]
    if obj.shape == "cross":
        w = CROSS_WIDTH * d / 2
        return [
            [(cx - h, cy - w), (cx + h, cy - w), (cx + h, cy + w), (cx - h, cy + w)],
            [(cx - w, cy - h), (cx + w, cy - h), (cx + w, cy + h), (cx - w, cy + h)],
        ]
    raise XLXMERTError(f"unknown shape {obj.shape!r}")


def _check_size(size: int) -> None:
    if size not in IMAGE_SIZES:
        raise XLXMERTError(f"image size {size} is not supported; choose one of {IMAGE_SIZES}")


def render_scene(scene: Scene, size: int = 64, seed: int = 0) -> Image.Image:
    """Paint ``scene`` as an 8-bit RGB ``size``×``size`` image.

    Drawn flat at 4·size with Pillow, LANCZOS-downsampled to ``size`` (anti-aliased edges), then
    integer noise uniform in [-6, 6] (seeded by ``seed``) is added to every pixel and channel.
    """
    _check_size(size)
    big = size * SUPERSAMPLE
    img = Image.new("RGB", (big, big), PLACES[scene.place].rgb)
    draw = ImageDraw.Draw(img)

    # Pillow addresses pixel centres by integer coordinates; pixel k covers [k, k+1) of the
    # normalised-times-size axis, so a normalised u lands at u·big − 0.5.
    def px(u: float) -> float:
        return u * big - 0.5

    for obj in scene.objects:
        fill = COLORS[obj.color]
        outline = shape_outline(obj)
        if outline is None:
            h = obj.d / 2
            draw.ellipse([px(obj.cx - h), px(obj.cy - h), px(obj.cx + h), px(obj.cy + h)], fill=fill)
        else:
            for poly in outline:
                draw.polygon([(px(x), px(y)) for x, y in poly], fill=fill)
    small = np.asarray(img.resize((size, size), Image.LANCZOS), dtype=np.int16)
    noise = np.random.default_rng(int(seed)).integers(-NOISE, NOISE + 1, size=small.shape, dtype=np.int16)
    return Image.fromarray(np.clip(small + noise, 0, 255).astype(np.uint8), "RGB")


def _inside_polygon(x: np.ndarray, y: np.ndarray, poly: Polygon) -> np.ndarray:
    # Even–odd ray casting (the star is not convex).
    inside = np.zeros(x.shape, dtype=bool)
    n = len(poly)
    for i in range(n):
        x0, y0 = poly[i]
        x1, y1 = poly[(i + 1) % n]
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < xc)
    return inside


def object_mask(obj: SceneObject, size: int) -> np.ndarray:
    """``bool[size, size]``: the pixels (row = y, column = x) whose centre lies inside the shape."""
    c = (np.arange(size) + 0.5) / size
    x, y = np.meshgrid(c, c)  # x varies along columns, y along rows
    outline = shape_outline(obj)
    if outline is None:
        return (x - obj.cx) ** 2 + (y - obj.cy) ** 2 <= (obj.d / 2) ** 2
    mask = np.zeros((size, size), dtype=bool)
    for poly in outline:
        mask |= _inside_polygon(x, y, poly)
    return mask
