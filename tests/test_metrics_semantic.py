"""Semantic accuracy and facts (``evaluation.metrics.semantic``) of original images against
mismatched captions, with briefly trained graders."""

from __future__ import annotations

import pytest

from xlxmert.evaluation.graders.suite import EvaluationSuite
from xlxmert.evaluation.metrics.semantic import fact_scores, semantic_accuracy


@pytest.mark.slow
def test_semantic_accuracy_and_facts_of_originals_and_mismatched(eval_suite_dir, eval_test_set):
    examples, images, captions = eval_test_set
    suite = EvaluationSuite.from_pretrained(eval_suite_dir)
    scenes = [ex.scene for ex in examples]
    rolled = list(range(1, len(captions))) + [0]
    sem = semantic_accuracy(suite.matcher, images, captions, scenes)
    other_captions, other_scenes = [captions[j] for j in rolled], [scenes[j] for j in rolled]
    sem_other = semantic_accuracy(suite.matcher, images, other_captions, other_scenes)
    for result in (sem, sem_other):
        assert 0.0 <= result["mean"] <= 1.0
        assert all(result[f"n_{c}"] > 0 for c in ("shape", "color"))
    facts = fact_scores(suite.evaluator, images, captions)
    facts_other = fact_scores(suite.evaluator, images, [captions[j] for j in rolled])
    assert facts["facts_true"] > facts_other["facts_true"]
    assert facts["all_facts_true"] >= facts_other["all_facts_true"]
