"""R-precision (``evaluation.metrics.rprecision``) with a briefly trained matcher: true pairs far
above shuffled ones."""

from __future__ import annotations

import numpy as np
import pytest

from xlxmert.evaluation.graders.suite import EvaluationSuite
from xlxmert.evaluation.metrics.rprecision import r_precision
from xlxmert.evaluation.negatives import CATEGORIES


@pytest.mark.slow
def test_r_precision_true_pairs_far_above_shuffled_pairs(eval_suite_dir, eval_test_set):
    examples, images, captions = eval_test_set
    suite = EvaluationSuite.from_pretrained(eval_suite_dir)
    scenes = [ex.scene for ex in examples]
    true = r_precision(suite.matcher, images, captions, scenes, easy_negatives=99)
    perm = np.random.default_rng(0).permutation(len(captions))
    shuffled = r_precision(suite.matcher, images, [captions[j] for j in perm], [scenes[j] for j in perm])
    # A surrogate trained for seconds (it reaches ≈0.07 easy here; ≈0.3+ in minutes at full size):
    # true pairs well above chance (1/100), shuffled ones at it.
    assert shuffled["easy"] <= 0.04
    assert true["easy"] >= 0.05
    assert true["easy"] >= 2.5 * max(shuffled["easy"], 0.01)
    assert shuffled["hard"] < 0.25  # chance 1/10
    assert set(CATEGORIES) <= {k.removeprefix("hard_") for k in true if k.startswith("hard_")}
