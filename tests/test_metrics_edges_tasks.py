"""The task metrics' edges (issue 26's mutation testing): the official VQA answer normalisation,
breakdowns by type, NLVR2 consistency, the baselines, the task loops on files, single and empty
inputs and one-line errors. Each assertion is a value the metric's definition fixes, written out by
hand."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from test_metrics_edges import RED_CIRCLE, exactly
from xlxmert.data.shapes.facts import check_caption
from xlxmert.errors import XLXMERTError
from xlxmert.evaluation.metrics.tasks import (
    caption_correctness,
    gqa_accuracy,
    majority_answer,
    nlvr2_accuracy,
    nlvr2_sentence_key,
    official_normalize,
    question_only_answers,
    score_gqa,
    score_nlvr2,
    score_vqa,
    vqa_accuracy,
    vqa_score,
)


# ---------------------------------------------------------------------- official VQA normalisation
@pytest.mark.parametrize(
    "raw, normal",
    [
        ("Two", "2"),
        ("none", "0"),
        ("ten", "10"),
        ("The red one.", "red 1"),
        ("an apple", "apple"),
        ("dont", "don't"),
        ("couldntve", "couldn't've"),
        ("shouldve", "should've"),
        ("im", "i'm"),
        ("well", "well"),
        ("its", "its"),
        ("1,000", "1000"),
        ("yes, 1,000", "yes 1000"),
        ("2.5", "2.5"),
        ("end.", "end"),
        ("red-ish", "red ish"),
        ("red -ish", "red ish"),
        ("yes!", "yes"),
        ("(a) b", "b"),
        ("  red\tcar\n", "red car"),
        ("a;b/c", "b c"),
    ],
)
def test_official_normalize(raw, normal):
    assert official_normalize(raw) == normal


def test_vqa_accuracy_of_one_or_no_answer_is_exact_match():
    assert vqa_accuracy("Red.", ["red"]) == 1.0 and vqa_accuracy("blue", ["red"]) == 0.0
    assert vqa_accuracy("red", []) == 0.0


def test_score_vqa_breaks_down_by_question_and_answer_type():
    records = [
        {"answers": ["red"] * 10, "question_type": "what color", "answer_type": "other"},
        {"answers": ["yes"] * 10, "question_type": "is there", "answer_type": "yes/no"},
        {"answers": ["no"] * 10, "question_type": "is there", "answer_type": "yes/no"},
        {"answers": ["2"] * 10},
    ]
    out = score_vqa(["red", "yes", "yes", "two"], records)
    assert out["score"] == 0.75 and out["n"] == 4
    assert out["per_question_type"] == {"all": 1.0, "is there": 0.5, "what color": 1.0}
    assert out["per_answer_type"] == {"all": 1.0, "other": 1.0, "yes/no": 0.5}
    assert score_vqa(["red"], records[:1])["score"] == 1.0
    assert score_vqa([], [])["score"] == 0.0
    with pytest.raises(ValueError):
        score_vqa(["red"], records)


def test_score_gqa_breaks_down_by_its_types():
    types = {"structural": "query", "semantic": "attr", "detailed": "colorQuery"}
    records = [
        {"answer": "red", "types": types},
        {"answer": "yes", "types": {"structural": "verify", "semantic": "obj", "detailed": "exist"}},
        {"answer": "2"},
    ]
    out = score_gqa(["Red", "no", "two"], records)
    assert out["accuracy"] == pytest.approx(2 / 3) and out["n"] == 3
    assert out["per_structural_type"] == {"all": 1.0, "query": 1.0, "verify": 0.0}
    assert out["per_semantic_type"] == {"all": 1.0, "attr": 1.0, "obj": 0.0}
    assert out["per_detailed_type"] == {"all": 1.0, "colorQuery": 1.0, "exist": 0.0}
    assert score_gqa(["red"], records[:1])["accuracy"] == 1.0 and score_gqa([], [])["accuracy"] == 0.0
    with pytest.raises(ValueError):
        score_gqa(["red"], records)


def test_nlvr2_sentence_key_drops_the_pair_index():
    assert nlvr2_sentence_key("dev-850-1-3") == "dev-850-3"
    assert nlvr2_sentence_key("test1-7-0-0") == "test1-7-0"
    assert nlvr2_sentence_key("a-b-c") == "a-b-c" and nlvr2_sentence_key("x") == "x"
    assert nlvr2_sentence_key("x-y-850-1-3") == "x-y-850-3"  # only the pair index goes


def test_score_nlvr2_accuracy_consistency_and_templates():
    records = [
        {"identifier": "dev-1-0-0", "sentence": "s", "label": True, "query": "more"},
        {"identifier": "dev-1-1-0", "sentence": "s", "label": False, "query": "more"},
        {"identifier": "dev-2-0-1", "sentence": "t", "label": True},
        {"identifier": "dev-3-0-0", "sentence": "u", "label": False, "query": "same"},
    ]
    out = score_nlvr2([1, 0, 0, 0], records)
    assert out["accuracy"] == 0.75 and out["n"] == 4
    assert out["consistency"] == pytest.approx(2 / 3) and out["sentences"] == 3
    assert out["consistency_groups"] == "identifier"
    assert out["per_template"] == {"all": 0.0, "more": 1.0, "same": 1.0}
    # One pair per identifier: grouped by the sentence text (lower case, spaces collapsed).
    texts = [
        {"identifier": f"x-{i}-0-0", "sentence": s, "label": True} for i, s in enumerate(["A  b", "a b", "c"])
    ]
    out = score_nlvr2([True, False, True], texts)
    assert out["consistency_groups"] == "sentence text" and out["sentences"] == 2
    assert out["consistency"] == 0.5
    no_ids = [{"sentence": "s", "label": False}]
    assert score_nlvr2([False], no_ids)["consistency"] == 1.0 and score_nlvr2([], [])["accuracy"] == 0.0
    assert score_nlvr2([False], no_ids)["accuracy"] == 1.0
    # Without identifiers every record is its own pair: grouped by sentence text.
    two = [{"sentence": "s", "label": True}, {"sentence": "t", "label": True}]
    assert score_nlvr2([True, False], two)["consistency_groups"] == "sentence text"
    # A group is consistent only if every pair is right, whichever comes last.
    first_wrong = [
        {"identifier": "d-1-0-0", "sentence": "s", "label": True},
        {"identifier": "d-1-1-0", "sentence": "s", "label": True},
    ]
    assert score_nlvr2([False, True], first_wrong)["consistency"] == 0.0
    with pytest.raises(ValueError):
        score_nlvr2([True], two)


def test_majority_and_question_only_baselines():
    assert majority_answer(["b", "a", "a", "b", "c"]) == "b"  # a tie: the first seen
    assert majority_answer(["x"]) == "x"
    with pytest.raises(XLXMERTError, match=exactly("no training answers to take the majority of")):
        majority_answer([])
    train = ["What color?", "what  color?", "what color?", "how many", "how many"]
    answers = ["red", "blue", "blue", "2", "3"]
    assert question_only_answers(train, answers, ["WHAT color?", "how many", "never seen"]) == [
        "blue",
        "2",
        "blue",
    ]
    with pytest.raises(ValueError):
        question_only_answers(train, answers[:2], ["how many"])


# ---------------------------------------------------------------------- the task loops on files
@pytest.fixture(scope="module")
def small(tmp_path_factory):
    from xlxmert.data.shapes.generate import generate_split

    root = tmp_path_factory.mktemp("edges")
    generate_split(root, "test", 40, size=64, seed=3, progress=False)
    return root


def test_task_loops_batch_and_limit(small, capsys):
    calls = []

    def answer(images, questions):
        calls.append(len(images))
        assert all(isinstance(img, Image.Image) for img in images)
        return ["yes"] * len(questions)

    n_questions = len(json.loads((small / "test" / "questions_test.json").read_text())["questions"])
    assert vqa_score(small, "test", answer)["n"] == n_questions
    assert calls[0] == 32 and sum(calls) == n_questions  # the documented default batch
    calls.clear()
    n_gqa = len(json.loads((small / "test" / "gqa_test.json").read_text()))
    assert gqa_accuracy(small, "test", answer)["n"] == n_gqa and n_gqa > 32 and calls[0] == 32
    calls.clear()
    assert vqa_score(small, "test", answer, n=7, batch_size=3)["n"] == 7 and calls == [3, 3, 1]
    calls.clear()
    assert gqa_accuracy(small, "test", answer, n=5, batch_size=2)["n"] == 5 and calls == [2, 2, 1]
    judged = []

    def judge(left, right, sentences):
        judged.append(len(sentences))
        return [True] * len(sentences)

    assert nlvr2_accuracy(small, "test", judge, n=5, batch_size=2)["n"] == 5 and judged == [2, 2, 1]
    assert capsys.readouterr().err == ""  # no progress bar unless asked for
    vqa_score(small, "test", answer, n=2, progress=True)
    gqa_accuracy(small, "test", answer, n=2, progress=True)
    nlvr2_accuracy(small, "test", judge, n=2, progress=True)
    bars = capsys.readouterr().err
    assert "VQA: " in bars and "GQA: " in bars and "NLVR2: " in bars


def test_task_loops_name_a_missing_file(small, tmp_path):
    empty = tmp_path / "empty" / "test"
    empty.mkdir(parents=True)
    for fn, what, name in (
        (vqa_score, "VQA questions", "questions_test.json"),
        (gqa_accuracy, "GQA questions", "gqa_test.json"),
    ):
        with pytest.raises(XLXMERTError, match=exactly(f"{what} file not found: {empty / name}")):
            fn(tmp_path / "empty", "test", lambda images, qs: qs)
    import shutil

    shutil.copy(small / "test" / "questions_test.json", empty)
    with pytest.raises(
        XLXMERTError, match=exactly(f"VQA annotations file not found: {empty / 'annotations_test.json'}")
    ):
        vqa_score(tmp_path / "empty", "test", lambda images, qs: qs)
    shutil.copy(small / "test" / "annotations_test.json", empty)
    with pytest.raises(
        XLXMERTError, match=exactly(f"COCO captions file not found: {empty / 'captions_test.json'}")
    ):
        vqa_score(tmp_path / "empty", "test", lambda images, qs: qs)


def test_task_loops_report_bad_answers_and_files_in_one_line(small, tmp_path):
    with pytest.raises(XLXMERTError, match=exactly("answer_fn returned 1 answers for 2 questions")):
        vqa_score(small, "test", lambda images, qs: ["yes"], n=2, batch_size=2)
    with pytest.raises(XLXMERTError, match=exactly("answer_fn returned 0 answers for 1 questions")):
        gqa_accuracy(small, "test", lambda images, qs: [], n=1)
    with pytest.raises(XLXMERTError, match=exactly("judge_fn returned 3 labels for 2 statements")):
        nlvr2_accuracy(small, "test", lambda a, b, s: [True] * 3, n=2, batch_size=2)
    # A question about an unknown image, an unannotated question.
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(small, broken)
    qfile = broken / "test" / "questions_test.json"
    questions = json.loads(qfile.read_text())
    first_qid = questions["questions"][0]["question_id"]
    questions["questions"][0]["image_id"] = 999
    qfile.write_text(json.dumps(questions))
    with pytest.raises(XLXMERTError, match=exactly(f"VQA question {first_qid} refers to unknown image 999")):
        vqa_score(broken, "test", lambda images, qs: ["yes"] * len(qs))
    questions["questions"][0]["image_id"] = questions["questions"][1]["image_id"]
    questions["questions"][0]["question_id"] = 123456
    qfile.write_text(json.dumps(questions))
    with pytest.raises(
        XLXMERTError, match=exactly("VQA question 123456 has no annotation in annotations_test.json")
    ):
        vqa_score(broken, "test", lambda images, qs: ["yes"] * len(qs))
    gfile = broken / "test" / "gqa_test.json"
    gqa = json.loads(gfile.read_text())
    first = next(iter(gqa))
    gqa[first]["imageId"] = "nowhere"
    gfile.write_text(json.dumps(gqa))
    with pytest.raises(XLXMERTError, match=exactly("GQA question refers to unknown image 'nowhere'")):
        gqa_accuracy(broken, "test", lambda images, qs: ["yes"] * len(qs))


def test_task_loops_find_images_by_file_stem(small, tmp_path):
    # GQA's imageId may be the file's stem (the real GQA's "n161313") instead of the COCO id.
    import shutil

    copy = tmp_path / "stems"
    shutil.copytree(small, copy)
    coco = json.loads((copy / "test" / "captions_test.json").read_text())
    stem_of = {str(im["id"]): im["file_name"].split("/")[-1].removesuffix(".png") for im in coco["images"]}
    gfile = copy / "test" / "gqa_test.json"
    gqa = json.loads(gfile.read_text())
    for rec in gqa.values():
        rec["imageId"] = stem_of[str(rec["imageId"])]
    gfile.write_text(json.dumps(gqa))
    answers = [r["answer"] for r in gqa.values()]
    it = iter(answers)
    assert gqa_accuracy(copy, "test", lambda images, qs: [next(it) for _ in qs])["accuracy"] == 1.0


def test_caption_correctness_single_caption_and_errors():
    assert check_caption("a red circle", RED_CIRCLE) == (1, 1)
    assert caption_correctness(["a red circle"], [RED_CIRCLE]) == {"facts_true": 1.0, "all_true": 1.0, "n": 1}
    assert caption_correctness(["a blue circle"], [RED_CIRCLE])["facts_true"] == 0.0
    assert caption_correctness([], []) == {"facts_true": 0.0, "all_true": 0.0, "n": 0}
    with pytest.raises(XLXMERTError, match=exactly("caption_correctness: 2 captions for 1 scenes")):
        caption_correctness(["a", "b"], [RED_CIRCLE])


def test_vqa_accuracy_with_two_answers_uses_the_leave_one_out_mean():
    # Two annotators: leaving out "red" leaves no match (0), leaving out "blue" leaves one (1/3).
    assert vqa_accuracy("red", ["red", "blue"]) == pytest.approx(1 / 6)
