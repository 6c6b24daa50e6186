"""Every metric against an oracle and against mismatched pairs (issue 26).

An oracle (a matcher that knows each image's caption, an evaluator that knows each image's scene,
an answerer that knows each question's answer) must score the maximum on true pairs; the same
oracle on shuffled pairs must score what chance predicts, computed here from the data (not
guessed). A metric that pairs the wrong image, caption, scene or annotation fails one of the two.

The oracles identify an image by its pixels, so they are independent of how a metric batches,
orders or indexes its inputs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from xlxmert.data.shapes.facts import caption_is_true, check_caption
from xlxmert.data.shapes.scene import Scene
from xlxmert.evaluation.graders.evaluator import EvaluatorConfig, evaluator_accuracy, scene_targets
from xlxmert.evaluation.metrics.fidelity import frechet_distance, inception_score
from xlxmert.evaluation.metrics.rprecision import r_precision
from xlxmert.evaluation.metrics.semantic import fact_scores, semantic_accuracy
from xlxmert.evaluation.metrics.tasks import (
    caption_correctness,
    gqa_accuracy,
    nlvr2_accuracy,
    vqa_accuracy,
    vqa_score,
)
from xlxmert.evaluation.negatives import CATEGORIES, category_slots, fill_slot, hard_negative_pool
from xlxmert.evaluation.split import (
    choose_captions,
    images_uint8,
    load_example_images,
    load_examples,
    to_float,
)

N_IMAGES = 200
EASY, HARD = 9, 9  # negatives per row: chance is 1/10 for both


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """200 ShapeScenes test images with one caption each (as the evaluation chooses them)."""
    from xlxmert.data.shapes.generate import generate_split

    root = tmp_path_factory.mktemp("oracle_shapes")
    generate_split(root, "test", N_IMAGES, size=64, seed=26, progress=False)
    examples = load_examples(root, "test")
    images = to_float(images_uint8(load_example_images(examples)))
    return root, examples, images, choose_captions(examples, seed=0), [ex.scene for ex in examples]


# ---------------------------------------------------------------------- oracles
def pixel_key(image: torch.Tensor) -> bytes:
    """An image ``FloatTensor[3, H, W] in [-1, 1]`` (or a PIL image) as bytes of its uint8 pixels."""
    if not isinstance(image, torch.Tensor):
        return np.asarray(image.convert("RGB"), dtype=np.uint8).tobytes()
    pixels = image.float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(1, 2, 0).contiguous().numpy().tobytes()


class OracleMatcher(nn.Module):
    """Scores 1 for the caption an image was chosen to show and 0 for any other, plus seeded noise
    in [0, 0.1) so that equal scores are ranked at random (uniformly, whatever the batching)."""

    def __init__(self, images: torch.Tensor, captions: Sequence[str], seed: int = 0):
        super().__init__()
        self.own = {pixel_key(img): cap for img, cap in zip(images, captions)}
        self.gen = torch.Generator().manual_seed(seed)

    def score(self, images: torch.Tensor, rows: Sequence[Sequence[str]]) -> torch.Tensor:
        out = 0.1 * torch.rand(len(rows), len(rows[0]), generator=self.gen)
        for b, (image, row) in enumerate(zip(images, rows)):
            own = self.own.get(pixel_key(image))
            for k, caption in enumerate(row):
                out[b, k] += float(caption == own)
        return out


class OracleEvaluator(nn.Module):
    """Reads every known image perfectly (its scene, place and counts); an unknown image reads as
    an empty scene in the snow. ``shift`` reads image i as image i + shift (a mismatched reader)."""

    def __init__(self, images: torch.Tensor, scenes: Sequence[Scene], shift: int = 0):
        super().__init__()
        self.config = EvaluatorConfig(image_size=images.shape[-1])
        n = len(scenes)
        self.scene_of = {pixel_key(img): scenes[(i + shift) % n] for i, img in enumerate(images)}

    def _scenes(self, images: torch.Tensor) -> list[Scene]:
        return [self.scene_of.get(pixel_key(img), Scene(-1, "snow", ())) for img in images]

    def forward(self, images: torch.Tensor):
        tgt = scene_targets(self._scenes(images), self.config)
        place = torch.nn.functional.one_hot(tgt.place, len(self.config.places)).float()
        counts = torch.nn.functional.one_hot(tgt.counts, self.config.max_count + 1).float()
        return type("Out", (), {"place_logits": place, "count_logits": counts})()

    def predict_scenes(self, images: torch.Tensor, ids=None, threshold: float = 0.5) -> list[Scene]:
        return self._scenes(images)


def rotate(items: Sequence, k: int = 1) -> list:
    """``items[i + k]`` at place i: each image paired with another image's caption, scene, ..."""
    return [items[(i + k) % len(items)] for i in range(len(items))]


# ---------------------------------------------------------------------- chance, computed
def band(probabilities: Sequence[float]) -> float:
    """Four standard deviations of the mean of independent hits with these probabilities."""
    p = np.asarray(probabilities, dtype=float)
    return 4.0 * math.sqrt(float((p * (1 - p)).sum())) / len(p) + 0.01


def easy_chance(shown: Sequence[str], own: Sequence[str], k: int = EASY) -> list[float]:
    """Per row, the probability that the identity oracle ranks ``shown[i]`` first among ``k`` easy
    negatives drawn from the other rows' different captions (a hit is certain when the shown
    caption is the image's own; a miss when the own caption is among the negatives; 1/(k+1) else)."""
    out = []
    for i, caption in enumerate(shown):
        if caption == own[i]:
            out.append(1.0)
            continue
        others = [c for c in shown if c != caption]
        m = sum(c == own[i] for c in others)
        if len(others) >= k:
            none_drawn = math.comb(len(others) - m, k) / math.comb(len(others), k)
        else:
            none_drawn = (1 - m / len(others)) ** k
        out.append(none_drawn / (k + 1))
    return out


def hard_chance(shown: Sequence[str], scenes: Sequence[Scene], own: Sequence[str], k: int = HARD):
    """Per row with hard negatives: the identity oracle's probability of ranking ``shown[i]`` first
    (1/(k+1), unless the image's own caption is one of the false swaps that may be drawn)."""
    out = []
    for i, (caption, scene) in enumerate(zip(shown, scenes)):
        pool = hard_negative_pool(caption, scene)
        if not pool:
            continue
        if caption == own[i]:
            out.append(1.0)
            continue
        drawn = min(1.0, k / len(pool)) if own[i] in pool else 0.0
        out.append((1 - drawn) / (k + 1))
    return out


def semantic_chance(shown: Sequence[str], scenes: Sequence[Scene], own: Sequence[str]) -> dict:
    """Per category, the probabilities that restoring one masked word of ``shown[i]`` counts as a
    match for the identity oracle: the slot is drawn uniformly; the oracle picks the image's own
    caption when it is among the filled captions, else a filler at random; a match is the original
    word or a filler that keeps the caption true of ``scenes[i]``."""
    out: dict[str, list[float]] = {c: [] for c in CATEGORIES}
    for caption, scene, mine in zip(shown, scenes, own):
        slots = category_slots(caption)
        for category in CATEGORIES:
            of_category = [s for s in slots if s.category == category]
            if not of_category:
                continue
            per_slot = []
            for slot in of_category:
                filled = [fill_slot(caption, slot, w) for w in slot.alternatives]
                good = [
                    w == slot.text or caption_is_true(f, scene) for w, f in zip(slot.alternatives, filled)
                ]
                per_slot.append(float(good[filled.index(mine)]) if mine in filled else float(np.mean(good)))
            out[category].append(float(np.mean(per_slot)))
    return out


# ---------------------------------------------------------------------- R-precision
def test_r_precision_oracle_scores_one_on_true_pairs(world):
    _, _, images, captions, scenes = world
    matcher = OracleMatcher(images, captions)
    result = r_precision(matcher, images, captions, scenes, easy_negatives=EASY, hard_count=HARD)
    assert result["easy"] == 1.0 and result["hard"] == 1.0
    for category in CATEGORIES:
        assert result[f"hard_{category}"] == 1.0 and result[f"n_hard_{category}"] > 0


def test_r_precision_of_mismatched_pairs_is_at_computed_chance(world):
    _, _, images, captions, scenes = world
    matcher = OracleMatcher(images, captions)
    shown, shown_scenes = rotate(captions), rotate(scenes)
    result = r_precision(matcher, images, shown, shown_scenes, easy_negatives=EASY, hard_count=HARD)
    easy = easy_chance(shown, captions)
    hard = hard_chance(shown, shown_scenes, captions)
    assert 0.05 < np.mean(easy) < 0.11 and len(hard) == result["n_hard"]
    assert abs(result["easy"] - np.mean(easy)) < band(easy)
    assert abs(result["hard"] - np.mean(hard)) < band(hard)


def test_r_precision_with_a_blind_matcher_is_at_one_in_k_plus_one(world):
    # Scores that ignore image and caption: every row is a 1-in-10 draw.
    _, _, images, captions, scenes = world
    blind = OracleMatcher(images[:0], [])
    result = r_precision(blind, images, captions, scenes, easy_negatives=EASY, hard_count=HARD)
    chance = [1 / (EASY + 1)] * len(captions)
    assert abs(result["easy"] - 0.1) < band(chance) and abs(result["hard"] - 0.1) < band(chance)


# ---------------------------------------------------------------------- semantic accuracy
def test_semantic_accuracy_oracle_scores_one_on_true_pairs(world):
    _, _, images, captions, scenes = world
    result = semantic_accuracy(OracleMatcher(images, captions), images, captions, scenes)
    for category in CATEGORIES:
        assert result[category] == 1.0 and result[f"n_{category}"] > 0
    assert result["mean"] == 1.0


def test_semantic_accuracy_of_mismatched_pairs_is_at_computed_chance(world):
    _, _, images, captions, scenes = world
    shown, shown_scenes = rotate(captions), rotate(scenes)
    result = semantic_accuracy(OracleMatcher(images, captions), images, shown, shown_scenes)
    chance = semantic_chance(shown, shown_scenes, captions)
    for category in CATEGORIES:
        assert result[f"n_{category}"] == len(chance[category])
        assert abs(result[category] - np.mean(chance[category])) < band(chance[category]), category
    assert result["mean"] < 0.8  # far below the oracle's 1.0 on true pairs


# ---------------------------------------------------------------------- facts read off the image
def test_fact_scores_oracle_and_mismatched(world):
    _, _, images, captions, scenes = world
    reader = OracleEvaluator(images, scenes)
    assert fact_scores(reader, images, captions) == {"facts_true": 1.0, "all_facts_true": 1.0}
    other = rotate(captions)
    counts = [check_caption(c, s) for c, s in zip(other, scenes)]
    expected_facts = sum(t for t, _ in counts) / sum(n for _, n in counts)
    expected_all = float(np.mean([t == n for t, n in counts]))
    result = fact_scores(reader, images, other, batch_size=7)
    assert result["facts_true"] == pytest.approx(expected_facts)
    assert result["all_facts_true"] == pytest.approx(expected_all)
    assert expected_all < 0.5  # chance is far below the ceiling


def test_caption_correctness_oracle_and_mismatched(world):
    _, examples, _, captions, scenes = world
    perfect = caption_correctness(captions, scenes)
    assert perfect == {"facts_true": 1.0, "all_true": 1.0, "n": len(captions)}
    other = rotate(captions, 7)
    expected = float(np.mean([caption_is_true(c, s) for c, s in zip(other, scenes)]))
    result = caption_correctness(other, scenes)
    assert result["all_true"] == pytest.approx(expected) and expected < 0.5


def test_evaluator_accuracy_of_an_oracle_and_of_a_mismatched_reader(world):
    _, examples, images, _, scenes = world
    perfect = evaluator_accuracy(OracleEvaluator(images, scenes), examples)
    for key in ("place", "pair_counts", "scene_exact", "object_recall", "object_precision"):
        assert perfect[key] == 1.0, key
    shifted = evaluator_accuracy(OracleEvaluator(images, scenes, shift=1), examples, batch_size=16)
    assert shifted["place"] == pytest.approx(
        np.mean([a.place == b.place for a, b in zip(scenes, rotate(scenes))])
    )
    assert shifted["place"] < 0.5 and shifted["scene_exact"] < 0.1


# ---------------------------------------------------------------------- FID and IS, closed forms
class Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def gaussian_fid(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance of two feature sets' Gaussians (unbiased covariances)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def test_fid_equals_the_closed_form_and_is_zero_for_the_same_set():
    g = torch.Generator().manual_seed(0)
    real = 0.3 * torch.randn(400, 3, 2, 2, generator=g, dtype=torch.float64).float()
    fake = 0.5 * torch.randn(400, 3, 2, 2, generator=g, dtype=torch.float64).float() + 0.2
    got = frechet_distance(real, fake, Flatten(), num_features=12)
    expected = gaussian_fid(real.flatten(1).double().numpy(), fake.flatten(1).double().numpy())
    assert expected > 0.5 and got == pytest.approx(expected, rel=1e-3)
    assert frechet_distance(real, real, Flatten(), num_features=12) == pytest.approx(0.0, abs=1e-4)


class Classes(nn.Module):
    """Logits: the first 5 pixel values of the image (a classifier the test controls exactly)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :5]


def test_inception_score_is_the_number_of_classes_for_confident_balanced_predictions():
    confident = torch.full((50, 3, 2, 2), -30.0)
    for i in range(50):
        confident.view(50, -1)[i, i % 5] = 30.0  # one class per image, 10 images per class
    mean, std = inception_score(confident, Classes(), splits=1)
    assert mean == pytest.approx(5.0, rel=1e-4) and std == 0.0
    assert inception_score(torch.zeros(50, 3, 2, 2), Classes(), splits=1)[0] == pytest.approx(1.0)
    # In between: p(y|x) = softmax of random logits; IS = exp(mean KL(p(y|x) || p(y))), computed.
    g = torch.Generator().manual_seed(1)
    soft = torch.randn(60, 3, 2, 2, generator=g)
    p = soft.flatten(1)[:, :5].double().softmax(1).numpy()
    expected = math.exp(float((p * (np.log(p) - np.log(p.mean(0)))).sum(1).mean()))
    assert inception_score(soft, Classes(), splits=1)[0] == pytest.approx(expected, rel=1e-4)


# ---------------------------------------------------------------------- VQA, GQA, NLVR2
def official_vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """The VQA v2 formula written out: mean over the 10 annotators left out of min(1, matches / 3)."""
    return float(
        np.mean(
            [min(1.0, sum(a == prediction for j, a in enumerate(answers) if j != i) / 3) for i in range(10)]
        )
    )


def test_vqa_accuracy_matches_the_official_formula_on_mixed_answers():
    rng = np.random.default_rng(0)
    words = ["red", "blue", "green"]
    for _ in range(50):
        answers = [words[int(k)] for k in rng.integers(0, 3, size=10)]
        for prediction in words:
            assert vqa_accuracy(prediction, answers) == pytest.approx(
                official_vqa_accuracy(prediction, answers)
            )


def _questions(root, key: str = "VQA"):
    split_dir = root / "test"
    questions = json.loads((split_dir / "questions_test.json").read_text())["questions"]
    annotations = json.loads((split_dir / "annotations_test.json").read_text())["annotations"]
    return questions, {a["question_id"]: a for a in annotations}


def _pixels_to_id(root, examples):
    return {pixel_key(img): ex.image_id for ex, img in zip(examples, load_example_images(examples))}


def test_vqa_score_of_an_oracle_and_of_the_next_questions_answers(world):
    root, examples, *_ = world
    questions, by_qid = _questions(root)
    n = 400
    questions = questions[:n]
    pixels = _pixels_to_id(root, examples)
    index = {}
    for k, q in enumerate(questions):
        index.setdefault((q["image_id"], q["question"]), k)
    truth = [by_qid[q["question_id"]]["multiple_choice_answer"] for q in questions]

    def answerer(shift):
        def answer(images, qs):
            ks = [index[pixels[pixel_key(img)], q] for img, q in zip(images, qs)]
            return [truth[(k + shift) % n] for k in ks]

        return answer

    perfect = vqa_score(root, "test", answerer(0), n=n, batch_size=13)
    assert perfect["score"] == 1.0 and set(perfect["per_type"].values()) == {1.0}
    wrong = vqa_score(root, "test", answerer(1), n=n, batch_size=13)
    expected = np.mean(
        [
            vqa_accuracy(truth[(k + 1) % n], [a["answer"] for a in by_qid[q["question_id"]]["answers"]])
            for k, q in enumerate(questions)
        ]
    )
    assert wrong["score"] == pytest.approx(expected) and expected < 0.3


def test_gqa_accuracy_of_an_oracle_and_of_the_next_questions_answers(world):
    root, examples, *_ = world
    records = list(json.loads((root / "test" / "gqa_test.json").read_text()).values())
    pixels = _pixels_to_id(root, examples)
    index = {}
    for k, r in enumerate(records):
        index.setdefault((str(r["imageId"]), r["question"]), k)

    def answerer(shift):
        def answer(images, qs):
            ks = [index[str(pixels[pixel_key(img)]), q] for img, q in zip(images, qs)]
            return [records[(k + shift) % len(records)]["answer"] for k in ks]

        return answer

    assert gqa_accuracy(root, "test", answerer(0), batch_size=11)["accuracy"] == 1.0
    expected = np.mean(
        [records[(k + 1) % len(records)]["answer"] == r["answer"] for k, r in enumerate(records)]
    )
    wrong = gqa_accuracy(root, "test", answerer(1), batch_size=11)["accuracy"]
    assert wrong == pytest.approx(expected) and expected < 0.3


def test_nlvr2_accuracy_of_an_oracle_its_negation_and_a_constant(world):
    root, examples, *_ = world
    records = [json.loads(line) for line in (root / "test" / "nlvr2_test.jsonl").read_text().splitlines()]
    pixels = _pixels_to_id(root, examples)
    files = {ex.path.name: ex.image_id for ex in examples}
    label = {
        (r["sentence"], files[r["left_url"].split("/")[-1]], files[r["right_url"].split("/")[-1]]): r["label"]
        == "True"
        for r in records
    }

    def judge(flip):
        def fn(left, right, sentences):
            keys = [
                (s, pixels[pixel_key(a)], pixels[pixel_key(b)]) for s, a, b in zip(sentences, left, right)
            ]
            return [label[k] != flip for k in keys]

        return fn

    assert nlvr2_accuracy(root, "test", judge(False), batch_size=9)["accuracy"] == 1.0
    assert nlvr2_accuracy(root, "test", judge(True), batch_size=9)["accuracy"] == 0.0
    share_true = np.mean([r["label"] == "True" for r in records])
    constant = nlvr2_accuracy(root, "test", lambda a, b, s: [True] * len(s))["accuracy"]
    assert constant == pytest.approx(share_true)
