"""The ShapeScenes scene graph: sampling, regions, relations, referring, and the caption checker."""

import numpy as np
import pytest

from xlxmert.data.shapes import facts
from xlxmert.data.shapes.captions import candidate_captions, write_captions
from xlxmert.data.shapes.scene import (
    Scene,
    SceneObject,
    describe,
    region_of,
    relation,
    sample_scene,
    scene_from_json,
    scene_to_json,
)
from xlxmert.data.shapes.world import COLORS, HELD_OUT_PAIRS, PLACES, REGIONS, SHAPES, SIZES
from xlxmert.errors import XLXMERTError


def _scenes(split, n=300, seed=0):
    return [sample_scene(np.random.default_rng([seed, i]), split, i) for i in range(n)]


def test_sampled_scenes_follow_the_spec():
    scenes = _scenes("train", 400)
    counts = np.bincount([len(s.objects) for s in scenes], minlength=5)[1:] / len(scenes)
    assert np.allclose(counts, [0.25, 0.35, 0.25, 0.15], atol=0.07)
    assert {s.place for s in scenes} == set(PLACES)
    for s in scenes:
        for o in s.objects:
            assert o.shape in SHAPES and o.color in COLORS and o.size in SIZES
            lo, hi = o.d / 2 + 0.02, 1 - o.d / 2 - 0.02
            assert lo - 1e-9 <= o.cx <= hi + 1e-9 and lo - 1e-9 <= o.cy <= hi + 1e-9
        for i, a in enumerate(s.objects):
            for b in s.objects[i + 1 :]:
                # Boxes grown by 0.015 on every side do not intersect.
                ax0, ay0, ax1, ay1 = a.bbox
                bx0, by0, bx1, by1 = b.bbox
                apart_x = ax1 + 0.015 <= bx0 - 0.015 + 1e-9 or bx1 + 0.015 <= ax0 - 0.015 + 1e-9
                apart_y = ay1 + 0.015 <= by0 - 0.015 + 1e-9 or by1 + 0.015 <= ay0 - 0.015 + 1e-9
                assert apart_x or apart_y


def test_held_out_pairs_only_in_compositional():
    for split in ("train", "val", "test"):
        pairs = {(o.color, o.shape) for s in _scenes(split, 200) for o in s.objects}
        assert not pairs & set(HELD_OUT_PAIRS)
        assert len(pairs) == 32
    for s in _scenes("compositional", 100):
        assert any((o.color, o.shape) in HELD_OUT_PAIRS for o in s.objects)


def test_same_rng_same_scene_and_json_round_trip():
    a = sample_scene(np.random.default_rng(7), "val", 3)
    b = sample_scene(np.random.default_rng(7), "val", 3)
    assert a == b
    assert a != sample_scene(np.random.default_rng(8), "val", 3)
    assert scene_from_json(scene_to_json(a, "x.png")) == a
    with pytest.raises(XLXMERTError):
        sample_scene(np.random.default_rng(0), "nope", 0)


def _obj(shape="circle", color="red", size="small", cx=0.5, cy=0.5):
    return SceneObject(shape, color, size, cx, cy)


def test_regions_and_dead_zones():
    assert region_of(_obj(cx=0.1, cy=0.1)) == "top left"
    assert region_of(_obj(cx=0.5, cy=0.15)) == "top"
    assert region_of(_obj(cx=0.15, cy=0.5)) == "left"
    assert region_of(_obj(cx=0.5, cy=0.5)) == "center"
    assert region_of(_obj(cx=0.9, cy=0.9)) == "bottom right"
    assert region_of(_obj(cx=0.36, cy=0.5)) is None  # within 0.04 of x = 1/3
    assert region_of(_obj(cx=0.5, cy=0.70)) is None  # within 0.04 of y = 2/3
    assert set(REGIONS) == {
        "top left",
        "top",
        "top right",
        "left",
        "center",
        "right",
        "bottom left",
        "bottom",
        "bottom right",
    }


def test_relations_follow_thresholds():
    a, b = _obj(cx=0.2, cy=0.5), _obj(cx=0.5, cy=0.6)
    assert relation(a, b) == "to the left of" and relation(b, a) == "to the right of"
    assert relation(_obj(cx=0.5, cy=0.2), _obj(cx=0.55, cy=0.5)) == "above"
    assert relation(_obj(cx=0.5, cy=0.8), _obj(cx=0.55, cy=0.5)) == "below"
    assert relation(_obj(cx=0.2, cy=0.2), _obj(cx=0.5, cy=0.5)) is None  # diagonal
    assert relation(_obj(cx=0.4, cy=0.5), _obj(cx=0.5, cy=0.5)) is None  # too close


def test_describe_is_the_shortest_singling_description():
    s = Scene(
        1,
        "fog",
        (
            _obj("circle", "red", "small", 0.2, 0.2),
            _obj("circle", "blue", "small", 0.8, 0.2),
            _obj("square", "red", "large", 0.5, 0.7),
        ),
    )
    assert describe(s, s.objects[2]) == "square"
    assert describe(s, s.objects[0]) == "red circle"
    twins = Scene(2, "fog", (_obj(cx=0.2), _obj(cx=0.8)))
    assert describe(twins, twins.objects[0]) is None
    sized = Scene(3, "fog", (_obj(cx=0.2), _obj(size="large", cx=0.7)))
    assert describe(sized, sized.objects[1]) == "large red circle"


SCENE = Scene(
    5,
    "night",
    (
        _obj("circle", "red", "small", 0.15, 0.5),
        _obj("square", "blue", "large", 0.6, 0.55),
        _obj("square", "blue", "small", 0.85, 0.15),
    ),
)


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("a red circle, a large blue square and a small blue square at night", True),
        ("a red circle and two blue squares at night", True),  # size words are optional for counts
        ("a red circle and a large blue square at night", False),  # not every object
        ("a red circle to the left of a large blue square", True),
        ("a red circle to the right of a large blue square", False),
        ("a blue square to the left of a red circle", False),  # "blue square" is ambiguous
        ("a red circle on the left", True),
        ("a circle in the center", False),
        ("three shapes at night", True),
        ("four shapes at night", False),
        ("a circle and two squares", True),
        ("a circle and a square", False),
        ("a small blue square in the snow", False),
        ("a small blue square at night", True),
        ("a green circle at night", False),
        ("purple elephants dance", False),
    ],
)
def test_checker_judges_captions(caption, expected):
    assert facts.caption_is_true(caption, SCENE) is expected


def test_checker_counts_facts():
    kinds = [f.kind for f in facts.parse_caption("two blue squares and a red circle at night")]
    assert kinds == ["count", "count", "total", "place"]
    assert facts.check_caption("two blue squares and a red circle in the fog", SCENE) == (3, 4)
    assert facts.check_caption("not a caption", SCENE) == (0, 1)
    assert set(facts.CATEGORY_WORDS) == {"shape", "color", "number", "position"}
    assert "in the top left corner" in facts.CATEGORY_WORDS["position"]
    assert "to the left of" in facts.CATEGORY_WORDS["position"]


def test_captions_are_true_short_and_varied():
    for i, s in enumerate(_scenes("train", 300, seed=1)):
        caps = write_captions(s, np.random.default_rng(i))
        assert len(caps) == 5
        for c in caps:
            assert len(c.split()) + c.count(",") <= 18, c  # commas take a text slot too
            assert c == c.lower() and not any(p in c for p in ".;:!?")
            assert facts.caption_is_true(c, s), (c, s)
            words = c.split()
            for art, nxt in zip(words, words[1:]):
                if art in ("a", "an"):
                    assert art == ("an" if nxt[0] in "aeiou" else "a"), c
        # One caption per family where the family has one to give.
        families = candidate_captions(s)
        available = sum(bool(v) for v in families.values())
        covered = sum(any(c in families[f] for c in caps) for f in families)
        assert covered == available
