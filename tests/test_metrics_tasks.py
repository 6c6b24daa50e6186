"""Task scores (``evaluation.metrics.tasks``): the official VQA formula, oracle and constant answers
for VQA/GQA/NLVR2, caption correctness of true and swapped captions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xlxmert.evaluation.metrics.tasks import (
    caption_correctness,
    gqa_accuracy,
    nlvr2_accuracy,
    vqa_accuracy,
    vqa_score,
)
from xlxmert.evaluation.negatives import hard_negatives
from xlxmert.evaluation.split import (
    load_example_images,
    load_examples,
)


def test_vqa_accuracy_follows_the_official_formula():
    assert vqa_accuracy("2", ["two"] * 10) == 1.0
    assert vqa_accuracy("Red.", ["red"] * 10) == 1.0
    assert vqa_accuracy("blue", ["red"] * 10) == 0.0
    # 2 of 10 annotators: 8 subsets keep both (2/3), 2 keep one (1/3) → 0.6
    assert vqa_accuracy("cat", ["cat", "cat"] + ["dog"] * 8) == pytest.approx(0.6)


def test_task_scores_with_oracle_and_constant_answers(eval_shapes):
    split_dir = eval_shapes / "test"
    annotations = json.loads((split_dir / "annotations_test.json").read_text())["annotations"]
    truth = {}
    questions = json.loads((split_dir / "questions_test.json").read_text())["questions"]
    by_qid = {a["question_id"]: a["multiple_choice_answer"] for a in annotations}
    for q in questions:
        truth[q["question"], q["image_id"]] = by_qid[q["question_id"]]
    gqa = json.loads((split_dir / "gqa_test.json").read_text())
    pixels_to_id = {
        np.asarray(img).tobytes(): ex.image_id
        for ex, img in zip(
            load_examples(eval_shapes, "test"), load_example_images(load_examples(eval_shapes, "test"))
        )
    }
    gqa_truth = {(q["question"], str(q["imageId"])): q["answer"] for q in gqa.values()}

    def constant(images, qs):
        return ["yes"] * len(qs)

    def oracle_gqa(images, qs):
        return [gqa_truth[q, str(pixels_to_id[np.asarray(img).tobytes()])] for img, q in zip(images, qs)]

    assert vqa_score(eval_shapes, "test", constant, n=60)["score"] < 0.5
    assert gqa_accuracy(eval_shapes, "test", oracle_gqa)["accuracy"] == 1.0
    records = [json.loads(line) for line in (split_dir / "nlvr2_test.jsonl").read_text().splitlines()]
    files = {ex.path.name: ex.image_id for ex in load_examples(eval_shapes, "test")}
    labels = {
        (r["sentence"], files[r["left_url"].split("/")[-1]], files[r["right_url"].split("/")[-1]]): r["label"]
        == "True"
        for r in records
    }

    def oracle_nlvr2(left, right, sentences):
        ids = [
            (pixels_to_id[np.asarray(a).tobytes()], pixels_to_id[np.asarray(b).tobytes()])
            for a, b in zip(left, right)
        ]
        return [labels[s, a, b] for s, (a, b) in zip(sentences, ids)]

    assert nlvr2_accuracy(eval_shapes, "test", oracle_nlvr2)["accuracy"] == 1.0
    assert nlvr2_accuracy(eval_shapes, "test", lambda l, r, s: [True] * len(s))["accuracy"] < 0.75


def test_caption_correctness_of_true_and_swapped_captions(eval_shapes):
    examples = load_examples(eval_shapes, "test", 30)
    scenes = [ex.scene for ex in examples]
    right = caption_correctness([ex.captions[0] for ex in examples], scenes)
    rng = np.random.default_rng(0)
    wrong = []
    for ex in examples:
        negs = hard_negatives(ex.captions[0], ex.scene, rng, n=1)
        wrong.append(negs[0] if negs else "not a caption")
    swapped = caption_correctness(wrong, scenes)
    assert right["facts_true"] == 1.0 and right["all_true"] == 1.0
    assert swapped["all_true"] == 0.0 and swapped["facts_true"] < 0.9
