"""The graders (``evaluation.graders``), briefly trained: the evaluator reads original images well,
the matcher's scores survive saving and do not depend on the batch, both round-trip."""

from __future__ import annotations

import json

import pytest
import torch

from xlxmert.cli import main
from xlxmert.errors import XLXMERTError
from xlxmert.evaluation.graders.evaluator import (
    ShapeSceneEvaluator,
    evaluator_accuracy,
    scene_targets,
)
from xlxmert.evaluation.graders.matcher import ImageTextMatcher, MatcherConfig
from xlxmert.evaluation.graders.suite import EvaluationSuite


@pytest.mark.slow
def test_evaluator_accuracy_on_original_images_is_reported_and_high(eval_suite_dir, eval_shapes, capsys):
    code = main(["evaluator", "accuracy", "--data", str(eval_shapes), "--evaluator", str(eval_suite_dir)])
    assert code == 0
    acc = json.loads(capsys.readouterr().out)
    assert acc["place"] > 0.9  # chance 0.25
    assert acc["object_recall"] > 0.15  # chance ≈ 0 (colour, shape and centre within 0.1)
    assert acc["num_images"] == 100


@pytest.mark.slow
def test_matcher_scores_survive_saving_and_do_not_depend_on_the_batch(
    eval_suite_dir, eval_test_set, tmp_path
):
    _, images, captions = eval_test_set
    suite = EvaluationSuite.from_pretrained(eval_suite_dir)
    rows = [captions[:5], captions[5:10], captions[10:15]]
    together = suite.matcher.score(images[:3], rows)
    alone = torch.cat([suite.matcher.score(images[i : i + 1], [rows[i]]) for i in range(3)])
    again = ImageTextMatcher.from_pretrained(suite.matcher.save_pretrained(tmp_path / "matcher"))
    assert together.shape == (3, 5)
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)
    assert torch.equal(again.score(images[:3], rows), together)
    with pytest.raises(XLXMERTError, match="same number"):
        suite.matcher.score(images[:2], [captions[:2], captions[:3]])
    assert MatcherConfig.from_preset("shapes-64") == MatcherConfig()
    with pytest.raises(XLXMERTError, match="preset"):
        MatcherConfig.from_preset("huge")


@pytest.mark.slow
def test_evaluator_round_trip_and_targets(eval_suite_dir, eval_test_set):
    examples, images, _ = eval_test_set
    suite = EvaluationSuite.from_pretrained(eval_suite_dir)
    again = ShapeSceneEvaluator.from_pretrained(eval_suite_dir / "evaluator")
    with torch.no_grad():
        assert torch.equal(suite.evaluator(images[:4]).features, again(images[:4]).features)
    tgt = scene_targets([ex.scene for ex in examples[:4]], again.config)
    grid = again.config.image_size // again.config.detection_stride
    assert tgt.centers.shape == (4, grid, grid)
    assert int((tgt.centers > 0).sum()) == sum(len(ex.scene.objects) for ex in examples[:4])
    acc = evaluator_accuracy(again, examples[:8])
    assert 0.0 <= acc["scene_exact"] <= 1.0
