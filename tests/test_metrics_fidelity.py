"""FID and IS (``evaluation.metrics.fidelity``): zero against itself, growing with noise; IS of one
repeated image is one; a user-supplied ``.pt2`` feature network and its errors."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_EVALUATOR, RandomFeatures
from xlxmert.errors import XLXMERTError
from xlxmert.evaluation.graders.evaluator import (
    EvaluatorClassLogits,
    ShapeSceneEvaluator,
)
from xlxmert.evaluation.metrics.fidelity import frechet_distance, inception_score, load_feature_network


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_noise(eval_test_set, tmp_path):
    _, images, _ = eval_test_set
    path = tmp_path / "features.pt2"
    batch = torch.export.Dim("batch")
    exported = torch.export.export(RandomFeatures(), (images[:2],), dynamic_shapes={"x": {0: batch}})
    torch.export.save(exported, str(path))
    feature = load_feature_network(path)
    same = frechet_distance(images, images, feature, num_features=32)
    gen = torch.Generator().manual_seed(0)
    small = frechet_distance(images, images + 0.1 * torch.randn(images.shape, generator=gen), feature, 32)
    large = frechet_distance(images, images + 0.4 * torch.randn(images.shape, generator=gen), feature, 32)
    assert same < 1e-3
    assert same < small < large


def test_inception_score_of_one_repeated_image_is_one(eval_test_set):
    _, images, _ = eval_test_set
    evaluator = ShapeSceneEvaluator(TINY_EVALUATOR)
    classifier = EvaluatorClassLogits(evaluator)
    repeated, _ = inception_score(images[:1].repeat(20, 1, 1, 1), classifier, splits=2)
    varied, _ = inception_score(images[:20], classifier, splits=2)
    assert repeated == pytest.approx(1.0, abs=1e-4)
    assert varied > repeated


def test_fid_needs_two_images_and_feature_file_errors(tmp_path, eval_test_set):
    _, images, _ = eval_test_set
    with pytest.raises(XLXMERTError, match="at least 2"):
        frechet_distance(images[:1], images, RandomFeatures(), 32)
    (tmp_path / "bad.pt").write_text("not a network")
    with pytest.raises(XLXMERTError, match=".pt2"):
        load_feature_network(tmp_path / "bad.pt")
    (tmp_path / "bad.pt2").write_text("not a network")
    with pytest.raises(XLXMERTError, match="re-export"):
        load_feature_network(tmp_path / "bad.pt2")
