"""Rendered ShapeScenes pixels match the spec's geometry, palette and noise."""

import numpy as np
import pytest
from scipy import ndimage

from xlxmert.data.shapes.render import object_mask, render_scene
from xlxmert.data.shapes.scene import Scene, SceneObject, sample_scene
from xlxmert.data.shapes.world import COLORS, PLACES, SHAPES
from xlxmert.errors import XLXMERTError


def _nearest_is_object(img, obj_rgb, bg_rgb):
    d_obj = np.abs(img - np.array(obj_rgb)).sum(-1)
    d_bg = np.abs(img - np.array(bg_rgb)).sum(-1)
    return d_obj < d_bg


@pytest.mark.parametrize("size", [64, 128])
def test_every_shape_matches_its_mask(size):
    objects = tuple(
        SceneObject(shape, color, "large" if k % 2 else "small", cx, cy)
        for k, (shape, color, (cx, cy)) in enumerate(
            zip(SHAPES, COLORS, [(0.2, 0.2), (0.8, 0.2), (0.2, 0.8), (0.8, 0.8), (0.5, 0.5), (0.5, 0.2)])
        )
    )
    for obj in objects:
        scene = Scene(1, "night", (obj,))
        img = np.asarray(render_scene(scene, size=size, seed=3), dtype=np.int16)
        mask = object_mask(obj, size)
        assert mask.shape == (size, size) and mask.dtype == bool
        painted = _nearest_is_object(img, COLORS[obj.color], PLACES["night"].rgb)
        # Disagreement only on the anti-aliased one-pixel band around the outline.
        band = ndimage.binary_dilation(mask) & ~ndimage.binary_erosion(mask)
        assert not (painted ^ mask)[~band].any(), obj
        # Interior pixels: the palette colour up to noise (6) and LANCZOS ringing.
        inner = ndimage.binary_erosion(mask, iterations=2)
        if inner.any():
            assert np.abs(img[inner] - np.array(COLORS[obj.color])).max() <= 12, obj
        # Mask area matches the shape's analytic area within a pixel band.
        assert abs(painted.sum() - mask.sum()) <= band.sum() / 2 + 2, obj


def test_mask_area_matches_geometry():
    S = 256
    cases = {
        "circle": np.pi / 4,
        "square": 0.82**2,
        "triangle": 0.866 / 2,
        "diamond": 0.5,
        "cross": 1 / 3 + 2 * (1 / 3) * (1 / 3),
    }
    for shape, frac in cases.items():
        mask = object_mask(SceneObject(shape, "red", "large", 0.5, 0.5), S)
        assert abs(mask.sum() / (0.34 * S) ** 2 - frac) < 0.03, shape
    star = object_mask(SceneObject("star", "red", "large", 0.5, 0.5), S)
    assert star[int(0.5 * S - 0.16 * S), S // 2]  # the upper point
    assert not star[int(0.5 * S + 0.16 * S), S // 2]  # no point straight down
    tri = object_mask(SceneObject("triangle", "red", "large", 0.5, 0.5), S)
    rows = np.where(tri.any(1))[0]
    assert abs((rows.mean() + 0.5) / S - 0.5) < 0.01  # centred on its bounding box
    assert tri[rows[-1]].sum() > 10 * tri[rows[0]].sum()  # points up


def test_background_is_base_colour_plus_bounded_noise():
    rng = np.random.default_rng(0)
    for i in range(6):
        scene = sample_scene(rng, "train", i)
        img = np.asarray(render_scene(scene, size=64, seed=i), dtype=np.int16)
        far = np.ones((64, 64), dtype=bool)
        for obj in scene.objects:
            far &= ~ndimage.binary_dilation(object_mask(obj, 64), iterations=4)
        assert far.sum() > 100
        # Noise is integer uniform in [-6, 6] (no place colour is close enough to 0 or 255 to clip).
        diff = img[far] - np.array(PLACES[scene.place].rgb)
        assert diff.max() == 6 and diff.min() == -6
        assert len(np.unique(diff)) == 13


def test_render_is_seeded_and_validates_size():
    scene = sample_scene(np.random.default_rng(1), "train", 1)
    a = np.asarray(render_scene(scene, 64, seed=5))
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, np.asarray(render_scene(scene, 64, seed=5)))
    assert not np.array_equal(a, np.asarray(render_scene(scene, 64, seed=6)))
    with pytest.raises(XLXMERTError):
        render_scene(scene, 100)
