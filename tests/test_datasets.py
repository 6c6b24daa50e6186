"""Real-format loaders on real-schema fixtures (tests/fixtures/) and on ShapeScenes-style files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from xlxmert.data.datasets import (
    AnswerVocabulary,
    CocoCaptions,
    GQADataset,
    NLVR2Dataset,
    VQADataset,
    nlvr2_image_names,
    normalize_answer,
    vqa_soft_score,
)
from xlxmert.errors import XLXMERTError

FIXTURES = Path(__file__).parent / "fixtures"
COCO = FIXTURES / "coco" / "captions_train2014.json"
VQA_Q = FIXTURES / "vqa" / "v2_OpenEnded_mscoco_train2014_questions.json"
VQA_A = FIXTURES / "vqa" / "v2_mscoco_train2014_annotations.json"
GQA = FIXTURES / "gqa" / "train_balanced_questions.json"
NLVR2 = FIXTURES / "nlvr2" / "dev.json"


# -- COCO captions ---------------------------------------------------------------------------


def test_coco_captions_counts_and_items():
    ds = CocoCaptions(COCO, image_root="/coco/train2014")
    assert ds.image_ids == [57870, 384029, 222016]
    assert ds.images[0] == {
        "id": 57870,
        "file_name": "COCO_train2014_000000057870.jpg",
        "width": 640,
        "height": 480,
    }
    assert len(ds) == 8
    assert [len(ds.captions_by_image[i]) for i in ds.image_ids] == [3, 3, 2]
    # Captions keep file order and lose COCO's stray whitespace / newlines.
    assert ds.captions_by_image[57870][1] == "A bus stopped at the curb next to two dogs."
    assert ds[1] == {
        "image_id": 384029,
        "file_name": "COCO_train2014_000000384029.jpg",
        "caption": "A man in a hat sits at a table with a pizza.",
    }
    assert ds.image_path(222016) == Path("/coco/train2014/COCO_train2014_000000222016.jpg")
    with pytest.raises(XLXMERTError, match="not in"):
        ds.image_path(1)


def test_coco_shapes_layout_resolves_into_images_folder(tmp_path):
    split = tmp_path / "train"
    (split / "images").mkdir(parents=True)
    (split / "images" / "shapes_train_000001.png").write_bytes(b"png")
    data = {
        "images": [{"id": 1, "file_name": "shapes_train_000001.png", "width": 64, "height": 64}],
        "annotations": [{"id": 1, "image_id": 1, "caption": "a red circle at night"}],
    }
    (split / "captions_train.json").write_text(json.dumps(data))
    ds = CocoCaptions(split / "captions_train.json")
    assert ds.image_path(1) == split / "images" / "shapes_train_000001.png"


def test_coco_batches_through_a_dataloader():
    batch = next(iter(DataLoader(CocoCaptions(COCO), batch_size=4)))
    assert batch["image_id"].tolist() == [57870, 384029, 57870, 222016]
    assert len(batch["caption"]) == 4


# -- answers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Red.", "red"),
        ("two", "2"),
        ("a pizza", "pizza"),
        (" Light  Blue ", "light blue"),
        ("1,000", "1000"),
        ("2.5", "2.5"),
        ("t-shirt", "t shirt"),
        ("don't", "dont"),
        ("the", "the"),
    ],
)
def test_normalize_answer(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_soft_score():
    assert [vqa_soft_score(n) for n in range(5)] == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0, 1.0])


def test_answer_vocabulary_min_count_cutoff_and_order():
    # Multiple-choice answers in the fixture: 2 (twice), red, yes, pizza, blue.
    vocab = AnswerVocabulary.build([VQA_A], min_count=1)
    assert vocab.answers == ["2", "blue", "pizza", "red", "yes"]  # most frequent first, ties alphabetical
    assert AnswerVocabulary.build([VQA_A], min_count=2).answers == ["2"]
    # GQA's answers count too (its "Red" normalises to "red"): red and yes reach 2.
    both = AnswerVocabulary.build([VQA_A, json.loads(GQA.read_text())], min_count=2)
    assert both.answers == ["2", "red", "yes"]
    assert both.index("Two") == 0 and both.index("RED.") == 1 and both.index("left") is None
    with pytest.raises(XLXMERTError, match="min_count"):
        AnswerVocabulary.build([VQA_A], min_count=3)


def test_answer_vocabulary_save_load(tmp_path):
    vocab = AnswerVocabulary.build([VQA_A], min_count=1)
    path = vocab.save(tmp_path / "answers.json")
    assert json.loads(path.read_text()) == vocab.answers
    loaded = AnswerVocabulary.load(path)
    assert loaded.answers == vocab.answers and len(loaded) == 5
    (tmp_path / "bad.json").write_text('{"answers": 1}')
    with pytest.raises(XLXMERTError, match="JSON list"):
        AnswerVocabulary.load(tmp_path / "bad.json")


# -- VQA ---------------------------------------------------------------------------------------


def test_vqa_soft_score_targets():
    vocab = AnswerVocabulary.build([VQA_A], min_count=1)  # ["2", "blue", "pizza", "red", "yes"]
    ds = VQADataset(VQA_Q, VQA_A, vocab)
    assert len(ds) == 6
    item = ds[0]
    assert (item["question_id"], item["image_id"], item["question"]) == (
        57870000,
        57870,
        "What color is the bus?",
    )
    assert item["target"].shape == (5,) and item["target"].dtype == torch.float32
    # 6 × "red" + 1 × "Red." → 1.0; one annotator said "yes" → 1/3; "orange" is outside the vocabulary.
    assert item["target"].tolist() == pytest.approx([0, 0, 0, 1.0, 1 / 3])
    assert item["answers"].count("red") == 7 and len(item["answers"]) == 10
    assert ds[1]["target"][0].item() == pytest.approx(1.0)  # "2" × 5 + "two" × 2
    assert ds[4]["target"].tolist() == pytest.approx([2 / 3, 0, 0, 0, 0])  # "2" + "two"
    assert ds[3]["target"][2].item() == pytest.approx(1.0)  # "pizza" × 4 + "a pizza" × 2
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["target"].shape == (3, 5)


def test_vqa_image_index_filters_and_maps_rows():
    vocab = AnswerVocabulary.build([VQA_A], min_count=1)
    ds = VQADataset(VQA_Q, VQA_A, vocab, image_index={222016: 0, 57870: 1})
    assert [it["image_id"] for it in ds] == [57870, 57870, 222016, 222016]
    assert [it["image_row"] for it in ds] == [1, 1, 0, 0]


def test_vqa_without_annotations_gives_zero_targets():
    vocab = AnswerVocabulary.build([VQA_A], min_count=1)
    ds = VQADataset(VQA_Q, None, vocab)
    assert ds[0]["target"].sum().item() == 0 and ds[0]["answers"] == []


# -- GQA ---------------------------------------------------------------------------------------


def test_gqa_items_and_labels():
    vocab = AnswerVocabulary.build([VQA_A], min_count=1)  # ["2", "blue", "pizza", "red", "yes"]
    ds = GQADataset(GQA, vocab)
    assert len(ds) == 3
    assert ds[0] == {
        "question_id": "02930152",
        "image_id": "2354786",
        "question": "Is the sky dark?",
        "answer": "yes",
        "label": 4,
    }
    assert (ds[1]["answer"], ds[1]["label"]) == ("red", 3)
    assert (ds[2]["answer"], ds[2]["label"]) == ("left", -1)  # out of vocabulary


# -- NLVR2 -------------------------------------------------------------------------------------


def test_nlvr2_fixture_resolves_images_from_identifier(tmp_path):
    ds = NLVR2Dataset(NLVR2, image_root=tmp_path)
    assert len(ds) == 3
    assert [it["label"] for it in ds] == [True, False, True]
    first = ds[0]
    assert first["identifier"] == "dev-850-0-0"
    assert first["sentence"].startswith("The left image contains twice")
    # URLs are remote, so NLVR2's naming rule applies: the pair, not the sentence, names the images.
    assert first["left_image"] == str(tmp_path / "dev-850-0-img0.png")
    assert first["right_image"] == str(tmp_path / "dev-850-0-img1.png")
    assert ds[1]["left_image"] == first["left_image"]
    assert nlvr2_image_names("train-10171-0-3") == ("train-10171-0-img0.png", "train-10171-0-img1.png")


def test_nlvr2_train_layout_uses_directory_field(tmp_path):
    (tmp_path / "62").mkdir()
    (tmp_path / "62" / "dev-850-0-img0.png").write_bytes(b"png")
    ds = NLVR2Dataset(NLVR2, image_root=tmp_path)
    assert ds[0]["left_image"] == str(tmp_path / "62" / "dev-850-0-img0.png")
    assert ds[0]["right_image"] == str(tmp_path / "dev-850-0-img1.png")  # not there: plain rule


def test_nlvr2_shapes_layout_resolves_relative_urls(tmp_path):
    split = tmp_path / "train"
    (split / "images").mkdir(parents=True)
    for i in (1, 2):
        (split / "images" / f"shapes_train_{i:06d}.png").write_bytes(b"png")
    record = {
        "identifier": "train-0-0-0",
        "sentence": "the left image has more circles than the right image",
        "label": False,
        "left_url": "images/shapes_train_000001.png",
        "right_url": "images/shapes_train_000002.png",
    }
    (split / "nlvr2_train.jsonl").write_text(json.dumps(record) + "\n\n")
    ds = NLVR2Dataset(split / "nlvr2_train.jsonl")  # image_root defaults to the file's folder
    assert len(ds) == 1 and ds[0]["label"] is False
    assert ds[0]["left_image"] == str(split / "images" / "shapes_train_000001.png")
    assert ds[0]["right_image"] == str(split / "images" / "shapes_train_000002.png")


# -- errors --------------------------------------------------------------------------------------


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(XLXMERTError, match="COCO captions file not found: .*nope.json"):
        CocoCaptions(tmp_path / "nope.json")
    with pytest.raises(XLXMERTError, match="NLVR2 file not found"):
        NLVR2Dataset(tmp_path / "nope.jsonl")


def test_invalid_json_names_file_and_line(tmp_path):
    bad = tmp_path / "questions.json"
    bad.write_text('{"questions": [\n{"question_id": 1,,}]}')
    with pytest.raises(XLXMERTError, match=r"questions.json is not valid JSON .*line 2"):
        VQADataset(bad, None, AnswerVocabulary(["yes"]))
    lines = tmp_path / "nlvr2.jsonl"
    lines.write_text('{"identifier": "dev-1-0-0"}\nnot json\n')
    with pytest.raises(XLXMERTError, match="line 2 is not valid JSON"):
        NLVR2Dataset(lines)


def test_missing_keys_name_file_and_key(tmp_path):
    coco = json.loads(COCO.read_text())
    del coco["annotations"][2]["caption"]
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(coco))
    with pytest.raises(
        XLXMERTError, match=r"captions.json: annotations\[2\] is missing required key 'caption'"
    ):
        CocoCaptions(path)

    gqa = json.loads(GQA.read_text())
    del gqa["07333408"]["imageId"]
    path = tmp_path / "gqa.json"
    path.write_text(json.dumps(gqa))
    with pytest.raises(XLXMERTError, match="gqa.json: question '07333408' is missing required key 'imageId'"):
        GQADataset(path, AnswerVocabulary(["yes"]))

    path = tmp_path / "no_questions.json"
    path.write_text(json.dumps({"info": {}}))
    with pytest.raises(XLXMERTError, match="no_questions.json is missing required key 'questions'"):
        VQADataset(path, None, AnswerVocabulary(["yes"]))

    path = tmp_path / "nlvr2.jsonl"
    path.write_text(json.dumps({"identifier": "dev-1-0-0", "sentence": "x", "label": "maybe"}) + "\n")
    with pytest.raises(XLXMERTError, match='expected "True" or "False"'):
        NLVR2Dataset(path)


def test_vqa_question_without_annotation_is_an_error(tmp_path):
    anns = json.loads(VQA_A.read_text())
    anns["annotations"] = anns["annotations"][:-1]
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(anns))
    with pytest.raises(XLXMERTError, match="no annotation for question_id 222016001"):
        VQADataset(VQA_Q, path, AnswerVocabulary(["yes"]))


# -- the ShapeScenes generator writes what these loaders read -----------------------------------


def test_loaders_read_a_generated_shapes_split(tiny_shapes):
    split = tiny_shapes / "train"
    captions = CocoCaptions(split / "captions_train.json")
    assert len(captions.image_ids) == 48 and len(captions) == 5 * 48
    assert all(captions.image_path(i).is_file() for i in captions.image_ids)
    vocab = AnswerVocabulary.build([split / "annotations_train.json", split / "gqa_train.json"], min_count=1)
    assert {"yes", "no", "red", "circle"} <= set(vocab.answers)
    vqa = VQADataset(split / "questions_train.json", split / "annotations_train.json", vocab)
    assert len(vqa) > 0 and all(vqa[i]["target"].max().item() == 1.0 for i in range(len(vqa)))
    gqa = GQADataset(split / "gqa_train.json", vocab)
    assert len(gqa) > 0 and all(item["label"] >= 0 for item in gqa)
    nlvr2 = NLVR2Dataset(split / "nlvr2_train.jsonl")
    assert len(nlvr2) > 0
    assert all(Path(item["left_image"]).is_file() and Path(item["right_image"]).is_file() for item in nlvr2)
