"""Metric functions: what the second mutation run (issue 26, docs/testing.md) found untested in
the hard negatives, the official answer normalisation and the NLVR2 loop. Each expected value is
fixed by the function's definition, worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from test_metrics_edges import RED_CIRCLE
from test_metrics_edges_tasks import small  # noqa: F401  (a fixture)
from xlxmert.data.shapes.scene import Scene, SceneObject
from xlxmert.evaluation.metrics.tasks import nlvr2_accuracy, official_normalize
from xlxmert.evaluation.negatives import _is_false, hard_negative_pool, hard_negatives

# Two red objects and a blue circle: swapping the colour or the shape of "a red circle" can
# leave a caption that is still true ("a blue circle", "a red square").
THREE = Scene(
    2,
    "snow",
    (
        SceneObject("circle", "red", "large", 0.3, 0.5),
        SceneObject("square", "red", "large", 0.7, 0.5),
        SceneObject("circle", "blue", "small", 0.5, 0.2),
    ),
)


def test_a_caption_is_false_when_one_of_its_facts_is():
    assert not _is_false("a red circle in the snow", THREE)  # every fact true
    assert not _is_false("a blue circle in the snow", THREE)
    assert _is_false("a green circle in the snow", THREE)
    assert _is_false("a red circle in the desert", THREE)  # one fact of two false
    assert _is_false("shapes", THREE)  # outside the grammar: one false fact


def test_the_hard_negative_pool_holds_only_false_distinct_swaps():
    # Ten one-word swaps (five colours, five shapes); "blue" and "square" leave it true.
    assert hard_negative_pool("a red circle in the snow", THREE) == [
        *(f"{a} {c} circle in the snow" for a, c in [("an", "orange"), ("a", "yellow"), ("a", "green")]),
        "a purple circle in the snow",
        *(f"a red {shape} in the snow" for shape in ("triangle", "diamond", "star", "cross")),
    ]
    assert hard_negative_pool("a red circle in the snow", THREE, category="shape") == [
        f"a red {shape} in the snow" for shape in ("triangle", "diamond", "star", "cross")
    ]


def test_hard_negatives_default_to_nine_and_permute_a_pool_of_exactly_n():
    caption = "a red circle in the snow"
    assert len(hard_negatives(caption, RED_CIRCLE, np.random.default_rng(0))) == 9
    pool = hard_negative_pool(caption, RED_CIRCLE)
    drawn = hard_negatives(caption, RED_CIRCLE, np.random.default_rng(0), n=len(pool))
    # n equal to the pool: every negative once, in a random order (not the pool's).
    assert sorted(drawn) == sorted(pool) and drawn != pool


def test_official_normalize_removes_every_mark_once_one_touches_a_space():
    # The official rule: a mark next to a space anywhere is removed everywhere, not spaced out.
    assert official_normalize("x-y -z") == "xy z"
    assert official_normalize("x-y- z") == "xy z"
    assert official_normalize("x-y-z") == "x y z"


def test_nlvr2_accuracy_reads_in_batches_of_32_and_breaks_down_by_template(small):  # noqa: F811
    sizes = []

    def judge(left, right, sentences):
        sizes.append(len(sentences))
        return [True] * len(sentences)

    out = nlvr2_accuracy(small, "test", judge)
    assert out["n"] == 40 and sizes == [32, 8]  # the documented default batch
    # ShapeScenes' query names each statement's template.
    assert sorted(out["per_template"]) == ["both", "exactly", "more", "place"]


def test_understanding_baselines_fit_on_train_and_score_the_split(tmp_path):
    import json
    import shutil
    from collections import Counter

    from xlxmert.data.shapes.generate import generate_split
    from xlxmert.evaluation.metrics.tasks import understanding_baselines
    from xlxmert.training.finetune import baselines
    from xlxmert.training.finetune_data import load_task_split

    generate_split(tmp_path, "train", 40, size=64, seed=1, progress=False)
    generate_split(tmp_path, "test", 30, size=64, seed=2, progress=False)
    out = understanding_baselines(tmp_path, "test", n=20)
    assert sorted(out) == sorted(
        f"{task}_{name}" for task in ("vqa", "gqa", "nlvr2") for name in ("majority_answer", "question_only")
    )
    for task in ("vqa", "gqa"):
        train, test = (
            load_task_split(tmp_path, task, "train"),
            load_task_split(tmp_path, task, "test").head(20),
        )
        expected = baselines(task, train, test)
        assert out[f"{task}_majority_answer"] == expected["majority_answer"]
        assert out[f"{task}_question_only"] == expected["question_only"]
    # NLVR2's majority baseline by hand: the share of the first 20 test labels equal to the
    # most frequent training label.
    labels = {
        split: [json.loads(line)["label"] for line in (tmp_path / split / f"nlvr2_{split}.jsonl").open()]
        for split in ("train", "test")
    }
    majority = Counter(labels["train"]).most_common(1)[0][0]
    assert out["nlvr2_majority_answer"] == pytest.approx(sum(y == majority for y in labels["test"][:20]) / 20)
    # A task whose files are missing is left out; the others are still scored.
    (tmp_path / "test" / "gqa_test.json").unlink()
    assert sorted(understanding_baselines(tmp_path, "test")) == sorted(
        k for k in out if not k.startswith("gqa")
    )
    shutil.rmtree(tmp_path / "train")
    assert understanding_baselines(tmp_path, "test") == {}
