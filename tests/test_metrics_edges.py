"""The metric functions' edges (issue 26's mutation testing) for FID/IS, R-precision, semantic
accuracy, facts and the evaluator: single and empty inputs, one-line errors, batching, the PIL and
uint8 paths. Each assertion is a value the metric's definition fixes, written out by hand. The task
scores' edges are in ``test_metrics_edges_tasks.py``."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from test_metrics_oracle import Flatten, OracleEvaluator, OracleMatcher
from xlxmert.data.shapes.scene import Scene, SceneObject
from xlxmert.errors import XLXMERTError
from xlxmert.evaluation.graders.evaluator import evaluator_accuracy, scene_signature
from xlxmert.evaluation.metrics.fidelity import (
    _FloatInput,
    frechet_distance,
    images_to_batches,
    inception_score,
)
from xlxmert.evaluation.metrics.rprecision import _rank_first, r_precision
from xlxmert.evaluation.metrics.semantic import fact_scores, semantic_accuracy
from xlxmert.evaluation.negatives import hard_negatives
from xlxmert.evaluation.split import EvalExample


def exactly(message: str) -> str:
    """A ``pytest.raises`` pattern for the whole one-line message."""
    return "^" + re.escape(message) + "$"


RED_CIRCLE = Scene(1, "snow", (SceneObject("circle", "red", "large", 0.3, 0.5),))


# ---------------------------------------------------------------------- FID / IS inputs
def _pil(images: torch.Tensor) -> list[Image.Image]:
    arr = images.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in arr]


def test_images_to_batches_from_tensors_and_pil_images():
    g = torch.Generator().manual_seed(0)
    uint8 = torch.randint(0, 256, (7, 3, 2, 2), generator=g, dtype=torch.uint8)
    images = uint8.float().div(127.5).sub(1)
    batches = list(images_to_batches(images, batch_size=3))
    assert [b.shape[0] for b in batches] == [3, 3, 1] and torch.equal(torch.cat(batches), images)
    from_pil = list(images_to_batches(_pil(images), batch_size=3))
    assert [b.shape[0] for b in from_pil] == [3, 3, 1]
    torch.testing.assert_close(torch.cat(from_pil), images)
    seventy = images.repeat(10, 1, 1, 1)
    assert [b.shape[0] for b in images_to_batches(seventy)] == [64, 6]  # the default batch
    assert [b.shape[0] for b in images_to_batches(_pil(seventy))] == [64, 6]


def test_float_input_reads_uint8_as_minus_one_to_one_and_flattens():
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(x)
            return x[:, :, :1, :1] * 2  # [B, 3, 1, 1]

    wrapped = _FloatInput(Probe(), num_features=3)
    assert wrapped.num_features == 3 and not hasattr(_FloatInput(Probe()), "num_features")
    out = wrapped(torch.tensor([[[[0, 255]], [[255, 0]], [[0, 0]]]], dtype=torch.uint8))
    assert torch.equal(seen[-1], torch.tensor([[[[-1.0, 1.0]], [[1.0, -1.0]], [[-1.0, -1.0]]]]))
    assert torch.equal(out, torch.tensor([[-2.0, 2.0, -2.0]]))
    assert torch.equal(wrapped(torch.ones(1, 3, 2, 2)), torch.full((1, 3), 2.0))  # floats kept

    class Shaped(nn.Module):
        def __init__(self, shape):
            super().__init__()
            self.shape = shape

        def forward(self, x):
            return torch.arange(float(np.prod(self.shape))).reshape(self.shape)

    assert _FloatInput(Shaped((2, 3, 2)))(torch.zeros(2, 3, 1, 1)).shape == (2, 6)  # 3-D: flattened
    assert _FloatInput(Shaped((2, 5)))(torch.zeros(2, 3, 1, 1)).shape == (2, 5)
    assert _FloatInput(Shaped((2,)))(torch.zeros(2, 3, 1, 1)).shape == (2,)  # 1-D: as it is


def test_fid_and_is_of_pil_images_equal_those_of_tensors():
    g = torch.Generator().manual_seed(2)
    real = torch.randint(0, 256, (40, 3, 2, 2), generator=g).float().div(127.5).sub(1)
    fake = torch.randint(0, 200, (40, 3, 2, 2), generator=g).float().div(127.5).sub(1)
    from_tensors = frechet_distance(real, fake, Flatten(), num_features=12, batch_size=7)
    from_pil = frechet_distance(_pil(real), _pil(fake), Flatten())  # features probed from an image
    assert from_tensors > 0.1 and from_pil == pytest.approx(from_tensors, rel=1e-4)
    with pytest.raises(
        XLXMERTError, match=exactly("FID needs at least 2 images per set (got 1 real, 40 fake)")
    ):
        frechet_distance(real[:1], fake, Flatten())

    class Logits(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :4] * 3

    is_tensor = inception_score(real, Logits(), splits=1, batch_size=7)
    is_pil = inception_score(_pil(real), Logits(), splits=1)
    assert is_pil[0] == pytest.approx(is_tensor[0], rel=1e-5) and is_tensor[0] > 1.01
    # More splits than images: one split per image (each image alone has IS 1).
    assert inception_score(real[:3], Logits(), splits=10)[0] == pytest.approx(1.0)
    mean, std = inception_score(real, Logits())  # 10 splits of 4, shuffled with the seed
    assert std > 0 and (mean, std) == inception_score(real, Logits(), seed=0)
    assert inception_score(real, Logits(), seed=1) != (mean, std)


# ---------------------------------------------------------------------- R-precision, semantic, facts
def _world(n: int = 12):
    scenes = [
        Scene(i, place, (SceneObject(shape, color, "large", 0.3, 0.5),))
        for i, (place, color, shape) in enumerate(
            (p, c, s)
            for p in ("snow", "night")
            for c in ("red", "blue", "green")
            for s in ("circle", "square")
        )
    ][:n]
    captions = [
        f"a {s.objects[0].color} {s.objects[0].shape} {'in the snow' if s.place == 'snow' else 'at night'}"
        for s in scenes
    ]
    images = torch.stack([torch.full((3, 4, 4), -1.0 + 2 * i / 255) for i in range(n)])
    return images, captions, scenes


def test_rank_first_counts_ties_as_misses():
    scores = torch.tensor([[2.0, 1.0, 1.5], [1.0, 1.0, 0.0], [0.5, 0.9, 0.1]])
    assert _rank_first(scores).tolist() == [True, False, False]


def test_r_precision_checks_its_inputs_and_reports_missing_categories():
    images, captions, scenes = _world()
    matcher = OracleMatcher(images, captions)
    with pytest.raises(XLXMERTError, match=exactly("r_precision: 12 images, 11 captions, 12 scenes")):
        r_precision(matcher, images, captions[:11], scenes)
    with pytest.raises(XLXMERTError, match=exactly("r_precision: 12 images, 12 captions, 11 scenes")):
        r_precision(matcher, images, captions, scenes[:11])
    with pytest.raises(
        XLXMERTError,
        match=exactly("R-precision needs at least 2 images (easy negatives come from other images)"),
    ):
        r_precision(matcher, images[:1], captions[:1], scenes[:1])
    out = r_precision(matcher, images, captions, scenes, easy_negatives=30, hard_count=3, batch_size=5)
    assert out["easy"] == 1.0 and out["hard"] == 1.0  # 30 negatives from 11 captions: drawn again
    assert out["hard_number"] is None and out["n_hard_number"] == 0  # no caption has a number
    assert out["n_hard_color"] == 12 and out["n_hard"] == 12
    same = ["a red circle in the snow"] * 2
    twin = r_precision(OracleMatcher(images[:2], same), images[:2], same, scenes[:1] * 2, easy_negatives=3)
    assert twin["easy"] == 0.0  # only identical captions to draw from: a tie with itself


def test_hard_negatives_draw_without_repetition_while_the_pool_lasts():
    rng = np.random.default_rng(0)
    pool_size = len(set(hard_negatives("a red circle in the snow", RED_CIRCLE, rng, n=100)))
    few = hard_negatives("a red circle in the snow", RED_CIRCLE, rng, n=3)
    assert len(few) == len(set(few)) == 3
    many = hard_negatives("a red circle in the snow", RED_CIRCLE, rng, n=pool_size + 4)
    assert len(many) == pool_size + 4 and len(set(many)) == pool_size
    assert hard_negatives("shapes", RED_CIRCLE, rng) == []
    with pytest.raises(
        XLXMERTError, match=exactly("unknown category 'size'; choose one of shape, color, number, position")
    ):
        hard_negatives("a red circle", RED_CIRCLE, rng, category="size")


def test_semantic_accuracy_checks_inputs_and_empty_categories():
    images, captions, scenes = _world(4)
    matcher = OracleMatcher(images, captions)
    with pytest.raises(XLXMERTError, match=exactly("semantic_accuracy: 4 images, 3 captions, 4 scenes")):
        semantic_accuracy(matcher, images, captions[:3], scenes)
    with pytest.raises(XLXMERTError, match=exactly("semantic_accuracy: 4 images, 4 captions, 3 scenes")):
        semantic_accuracy(matcher, images, captions, scenes[:3])
    out = semantic_accuracy(matcher, images, captions, scenes, batch_size=3)
    assert out["shape"] == out["color"] == 1.0 and out["n_shape"] == 4  # places are no category
    assert out["number"] is None and out["position"] is None and out["n_number"] == 0
    assert out["mean"] == 1.0
    none = semantic_accuracy(matcher, images[:1], ["shapes"], scenes[:1])
    assert none["mean"] is None and none["n_color"] == 0


def test_semantic_accuracy_counts_a_filler_that_keeps_the_caption_true():
    # Two circles (red, blue): restoring "red" as "blue" keeps "a blue circle" true of the scene.
    scene = Scene(
        0,
        "snow",
        (SceneObject("circle", "red", "large", 0.3, 0.5), SceneObject("circle", "blue", "large", 0.7, 0.5)),
    )
    image = torch.zeros(1, 3, 4, 4)

    class PrefersBlue(nn.Module):
        def score(self, images, rows):
            return torch.tensor([[float("blue" in c) for c in row] for row in rows])

    out = semantic_accuracy(PrefersBlue(), image, ["a red circle"], [scene])
    assert out["color"] == 1.0
    lone = Scene(0, "snow", scene.objects[:1])
    assert semantic_accuracy(PrefersBlue(), image, ["a red circle"], [lone])["color"] == 0.0


def test_fact_scores_checks_inputs_and_empty_input():
    images, captions, scenes = _world(3)
    reader = OracleEvaluator(images, scenes)
    with pytest.raises(XLXMERTError, match=exactly("fact_scores: 3 images but 2 captions")):
        fact_scores(reader, images, captions[:2])
    assert fact_scores(reader, images[:0], []) == {"facts_true": 0.0, "all_facts_true": 0.0}
    half = fact_scores(reader, images[:1], ["a red circle at night"])  # 1 of its 2 facts
    assert half == {"facts_true": 0.5, "all_facts_true": 0.0}
    both = fact_scores(reader, images[:2], ["a red circle at night", captions[1]], batch_size=1)
    assert both == {"facts_true": 0.75, "all_facts_true": 0.5}


def test_evaluator_accuracy_matches_objects_by_colour_shape_and_centre(tmp_path):
    truth = Scene(
        1,
        "snow",
        (SceneObject("circle", "red", "large", 0.3, 0.5), SceneObject("star", "blue", "small", 0.7, 0.2)),
    )
    path = tmp_path / "img.png"
    Image.new("RGB", (64, 64), (236, 236, 236)).save(path)
    example = EvalExample(1, path, truth, ("a red circle",))
    image = (
        torch.from_numpy(np.asarray(Image.open(path).convert("RGB")))
        .permute(2, 0, 1)
        .float()
        .div(127.5)
        .sub(1)
    )

    def reading(*objects, place="snow"):
        reader = OracleEvaluator(image[None], [Scene(1, place, tuple(objects))])
        return evaluator_accuracy(reader, [example])

    red, blue = truth.objects
    exact = reading(red, blue)
    assert exact["scene_exact"] == exact["object_recall"] == exact["object_precision"] == 1.0
    near = reading(SceneObject("circle", "red", "large", 0.39, 0.41), blue)  # within 0.1: a match
    assert near["object_recall"] == 1.0 and near["scene_exact"] == 1.0
    far = reading(SceneObject("circle", "red", "large", 0.41, 0.5), blue)  # 0.11 away: no match
    assert far["object_recall"] == 0.5 and far["object_precision"] == 0.5
    far_y = reading(SceneObject("circle", "red", "large", 0.3, 0.61), blue)
    assert far_y["object_recall"] == 0.5
    # Exactly 0.1 away (0.2 - 0.1 == 0.1 in floating point): "within 0.1" is strict.
    edge = Scene(1, "snow", (SceneObject("circle", "red", "large", 0.2, 0.2),))
    edge_example = EvalExample(1, path, edge, ("a red circle",))
    for moved in (
        SceneObject("circle", "red", "large", 0.1, 0.2),
        SceneObject("circle", "red", "large", 0.2, 0.1),
    ):
        reader = OracleEvaluator(image[None], [Scene(1, "snow", (moved,))])
        assert evaluator_accuracy(reader, [edge_example])["object_recall"] == 0.0
    extra = reading(red, blue, SceneObject("cross", "green", "small", 0.5, 0.9))
    assert extra["object_recall"] == 1.0 and extra["object_precision"] == pytest.approx(2 / 3)
    assert extra["scene_exact"] == 0.0 and extra["pair_counts"] == 0.0 and extra["place"] == 1.0
    twice = reading(red, red)  # one true red circle can match one predicted red circle only
    assert twice["object_recall"] == 0.5 and twice["object_precision"] == 0.5
    wrong_size = reading(SceneObject("circle", "red", "small", 0.3, 0.5), blue)
    assert wrong_size["object_recall"] == 1.0 and wrong_size["scene_exact"] == 0.0
    night = reading(red, blue, place="night")
    assert night["place"] == 0.0 and night["scene_exact"] == 0.0 and night["num_images"] == 1.0
    assert scene_signature(truth) == ("snow", (("blue", "star", "small"), ("red", "circle", "large")))


class Spy(nn.Module):
    """Flattens images into features and records the batch sizes it is called with."""

    def __init__(self, num_features: int | None = None):
        super().__init__()
        self.calls: list[int] = []
        if num_features is not None:
            self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        return x.flatten(1)


def _random_images(n: int, seed: int, high: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, (n, 3, 2, 2), generator=g).float().div(127.5).sub(1)


def test_fid_batches_probes_only_when_it_must_and_takes_two_images():
    real, fake = _random_images(70, 0), _random_images(70, 1, high=200)
    declared = Spy(num_features=12)
    value = frechet_distance(real, fake, declared)
    assert declared.calls == [64, 6, 64, 6]  # the default batch; no probe (it declares its features)
    undeclared = Spy()
    assert frechet_distance(real, fake, undeclared, batch_size=30) == pytest.approx(value, rel=1e-5)
    assert undeclared.calls == [2, 30, 30, 10, 30, 30, 10]  # one probe of two real images first
    wrong = Spy(num_features=99)  # an explicit count wins over the network's attribute
    assert frechet_distance(real, fake, wrong, num_features=12) == pytest.approx(value, rel=1e-5)
    assert frechet_distance(real[:2], fake[:2], Flatten(), num_features=12) >= 0.0  # two are enough


class Logits(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls: list[int] = []

    def forward(self, x):
        self.calls.append(x.shape[0])
        return x.flatten(1)[:, :4] * 3


def test_inception_score_default_splits_shuffle_and_batches():
    images = _random_images(66, 2)  # 66 = 10 chunks of 7 (the last of 3), but 11 of 6
    classifier = Logits()
    mean, std = inception_score(images, classifier)
    assert classifier.calls == [64, 2]
    batched = Logits()
    assert inception_score(images, batched, batch_size=30) == (mean, std) and batched.calls == [30, 30, 6]
    # IS over 10 splits of the images shuffled by torch.randperm under the seed, written out.
    p = (images.flatten(1)[:, :4] * 3).double().softmax(1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        order = torch.randperm(66)
    per_split = []
    for chunk in p[order].chunk(10):
        kl = (chunk * (chunk.log() - chunk.mean(0, keepdim=True).log())).sum(1).mean()
        per_split.append(math.exp(float(kl)))
    assert len(per_split) == 10
    assert mean == pytest.approx(float(np.mean(per_split)), rel=1e-5)
    assert std == pytest.approx(float(np.std(per_split, ddof=1)), rel=1e-4)
    two = inception_score(images, Logits(), splits=2)
    assert two[1] > 0.0  # two splits have a spread
    assert inception_score(images[:1], Logits()) == (pytest.approx(1.0), 0.0)  # one image, one split


def test_fact_scores_reads_in_batches_of_64_by_default():
    images = torch.stack([torch.full((3, 4, 4), -1.0 + 2 * i / 255) for i in range(70)])
    scenes = [RED_CIRCLE] * 70
    reader = OracleEvaluator(images, scenes)
    sizes = []
    original = reader.predict_scenes

    def spy(batch, *args, **kwargs):
        sizes.append(len(batch))
        return original(batch, *args, **kwargs)

    reader.predict_scenes = spy
    assert fact_scores(reader, images, ["a red circle"] * 70) == {"facts_true": 1.0, "all_facts_true": 1.0}
    assert sizes == [64, 6]


def test_evaluator_accuracy_reads_images_at_the_evaluators_size_in_batches_of_64(tmp_path):
    from xlxmert.evaluation.split import images_uint8, load_example_images, to_float

    examples, scenes = [], []
    for i in range(70):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (64, 64), (i, 255 - i, (7 * i) % 256)).save(path)
        scene = Scene(i, ("snow", "night", "fog", "sand")[i % 4], RED_CIRCLE.objects)
        examples.append(EvalExample(i, path, scene, ("a red circle",)))
        scenes.append(scene)
    small = to_float(images_uint8(load_example_images(examples), 32))  # what a 32-px evaluator reads
    reader = OracleEvaluator(small, scenes)
    assert reader.config.image_size == 32
    sizes = []
    forward = reader.forward

    def spy(images):
        sizes.append(images.shape[0])
        return forward(images)

    reader.forward = spy
    result = evaluator_accuracy(reader, examples)
    assert result["place"] == 1.0 and result["scene_exact"] == 1.0 and result["num_images"] == 70.0
    assert sizes == [64, 6]


class RowSpy(nn.Module):
    """Ranks the true caption first for even-numbered images only, and records what it is asked."""

    def __init__(self, images: torch.Tensor, captions: list[str]):
        super().__init__()
        self.truth = {float(img[0, 0, 0]): (i, c) for i, (img, c) in enumerate(zip(images, captions))}
        self.rows: list[list[str]] = []
        self.batches: list[int] = []

    def score(self, images, rows):
        self.batches.append(len(rows))
        self.rows.extend(rows)
        out = torch.zeros(len(rows), len(rows[0]))
        for b, image in enumerate(images):
            i, _ = self.truth[float(image[0, 0, 0])]
            out[b, 0] = 1.0 if i % 2 == 0 else -1.0
        return out


def test_r_precision_defaults_batches_and_exact_shares(capsys):
    images, captions, scenes = _world(12)
    spy = RowSpy(images, captions)
    out = r_precision(spy, images, captions, scenes)
    assert out["easy"] == 0.5 and out["hard"] == 0.5  # exactly the even-numbered images
    assert out["hard_shape"] == out["hard_color"] == 0.5 and out["hard_position"] is None
    assert "hard_number" in out and "n_hard_position" in out  # every category reported
    easy_rows = spy.rows[:12]
    assert {len(r) for r in easy_rows} == {100} and {len(r) for r in spy.rows[12:]} == {10}  # 99 and 9
    assert spy.batches[:1] == [12] and capsys.readouterr().err == ""  # batches of 16; no bar
    assert out == r_precision(RowSpy(images, captions), images, captions, scenes, seed=0)
    three = RowSpy(images, captions)
    assert r_precision(three, images, captions, scenes, batch_size=5)["easy"] == 0.5
    assert three.batches[:3] == [5, 5, 2]
    r_precision(RowSpy(images, captions), images, captions, scenes, progress=True)
    assert "R-precision" in capsys.readouterr().err
    # As many distinct other captions as negatives: drawn without repetition.
    spy10 = RowSpy(images[:10], captions[:10])
    r_precision(spy10, images[:10], captions[:10], scenes[:10], easy_negatives=9)
    assert all(len(set(row)) == 10 for row in spy10.rows[:10])
