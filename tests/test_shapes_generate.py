"""Generated ShapeScenes splits: formats, determinism, truth of every caption, question and statement."""

import json
import re
from collections import Counter

import pytest

from xlxmert.cli import main
from xlxmert.data.shapes import facts
from xlxmert.data.shapes.generate import generate_split
from xlxmert.data.shapes.scene import load_scenes
from xlxmert.data.shapes.world import HELD_OUT_PAIRS, PLACES, REGIONS, SHAPES, SPLITS
from xlxmert.errors import XLXMERTError

FILES = (
    "captions_{}.json",
    "scenes_{}.json",
    "questions_{}.json",
    "annotations_{}.json",
    "gqa_{}.json",
    "nlvr2_{}.jsonl",
)


def _files(split_dir):
    return sorted(p for p in split_dir.rglob("*") if p.is_file())


def _read(split_dir, name):
    return json.loads((split_dir / name.format(split_dir.name)).read_text())


def test_split_has_the_spec_files(tiny_shapes):
    for split, n in (("train", 48), ("val", 16), ("test", 16), ("compositional", 8)):
        d = tiny_shapes / split
        for name in FILES:
            assert (d / name.format(split)).is_file()
        pngs = sorted((d / "images").glob("*.png"))
        assert [p.name for p in pngs] == [f"shapes_{split}_{i:06d}.png" for i in range(1, n + 1)]
        caps = _read(d, "captions_{}.json")
        assert [im["id"] for im in caps["images"]] == list(range(1, n + 1))
        assert all(set(im) >= {"id", "file_name", "width", "height"} for im in caps["images"])
        assert all((d / im["file_name"]).is_file() and im["width"] == 64 for im in caps["images"])
        assert all(set(a) == {"id", "image_id", "caption"} for a in caps["annotations"])
        assert len({a["id"] for a in caps["annotations"]}) == 5 * n
        scenes = _read(d, "scenes_{}.json")["images"]
        assert [s["id"] for s in scenes] == [im["id"] for im in caps["images"]]
        for s in scenes:
            for o in s["objects"]:
                assert set(o) == {"shape", "color", "size", "cx", "cy", "bbox"}
                half = {"small": 0.1, "large": 0.17}[o["size"]]
                assert o["bbox"] == pytest.approx(
                    [o["cx"] - half, o["cy"] - half, o["cx"] + half, o["cy"] + half], abs=1e-4
                )
    assert len(load_scenes(tiny_shapes / "val")) == 16


def test_vqa_and_gqa_schemas(tiny_shapes):
    d = tiny_shapes / "train"
    qs, anns = _read(d, "questions_{}.json"), _read(d, "annotations_{}.json")
    assert set(qs) >= {"info", "task_type", "data_type", "data_subtype", "license", "questions"}
    assert set(anns) >= {"info", "data_type", "data_subtype", "license", "annotations"}
    assert [q["question_id"] for q in qs["questions"]] == [a["question_id"] for a in anns["annotations"]]
    for a in anns["annotations"]:
        assert set(a) == {
            "question_id",
            "image_id",
            "question_type",
            "answer_type",
            "multiple_choice_answer",
            "answers",
        }
        assert len(a["answers"]) == 10 and [x["answer_id"] for x in a["answers"]] == list(range(1, 11))
        assert all(
            x["answer"] == a["multiple_choice_answer"] and x["answer_confidence"] == "yes"
            for x in a["answers"]
        )
    assert Counter(a["question_type"] for a in anns["annotations"]).keys() == {
        "color",
        "shape",
        "count",
        "exist",
        "position",
        "relation",
        "place",
    }
    gqa = _read(d, "gqa_{}.json")
    keys = {"imageId", "question", "answer", "fullAnswer", "types"}
    assert gqa and all(set(v) >= keys for v in gqa.values())
    assert all(set(v["types"]) == {"structural", "semantic", "detailed"} for v in gqa.values())
    by_id = {str(q["question_id"]): q for q in qs["questions"]}
    types = {str(a["question_id"]): a["question_type"] for a in anns["annotations"]}
    assert {types[k] for k in gqa} == {"position", "relation"}
    assert sum(t in ("position", "relation") for t in types.values()) == len(gqa)
    assert all(
        by_id[k]["question"] == v["question"] and str(by_id[k]["image_id"]) == v["imageId"]
        for k, v in gqa.items()
    )


def _same_bytes(a, b):
    fa, fb = _files(a), _files(b)
    assert [p.relative_to(a) for p in fa] == [p.relative_to(b) for p in fb]
    return all(x.read_bytes() == y.read_bytes() for x, y in zip(fa, fb))


def test_same_seed_same_bytes_also_with_workers(tmp_path):
    a = generate_split(tmp_path / "a", "train", 12, seed=3, progress=False)
    b = generate_split(tmp_path / "b", "train", 12, seed=3, workers=2, progress=False)
    c = generate_split(tmp_path / "c", "train", 12, seed=4, progress=False)
    assert _same_bytes(a, b)
    assert _read(a, "scenes_{}.json") != _read(c, "scenes_{}.json")
    # A smaller rerun into the same folder leaves exactly the files of the smaller run.
    generate_split(tmp_path / "a", "train", 5, seed=3, progress=False)
    assert len(list((a / "images").glob("*.png"))) == 5


def test_held_out_pairs(tiny_shapes):
    held = set(HELD_OUT_PAIRS)
    for split in ("train", "val"):
        for scene in load_scenes(tiny_shapes / split):
            assert not {(o.color, o.shape) for o in scene.objects} & held
    for scene in load_scenes(tiny_shapes / "compositional"):
        assert {(o.color, o.shape) for o in scene.objects} & held


def test_every_caption_is_short_and_true(tiny_shapes):
    for split in SPLITS:
        d = tiny_shapes / split
        scenes = {s.id: s for s in load_scenes(d)}
        per_image = Counter()
        for a in _read(d, "captions_{}.json")["annotations"]:
            per_image[a["image_id"]] += 1
            assert len(a["caption"].split()) + a["caption"].count(",") <= 18  # fits 20 text slots
            assert facts.caption_is_true(a["caption"], scenes[a["image_id"]]), a
        assert set(per_image.values()) == {5}


# --- an independent re-derivation of the answers -------------------------------------------------


def _third(v):
    if abs(v - 1 / 3) <= 0.04 or abs(v - 2 / 3) <= 0.04:
        return None
    return 0 if v < 1 / 3 else 1 if v < 2 / 3 else 2


def _region(o):
    names = [
        ["top left", "top", "top right"],
        ["left", "center", "right"],
        ["bottom left", "bottom", "bottom right"],
    ]
    r, c = _third(o.cy), _third(o.cx)
    return None if r is None or c is None else names[r][c]


def _rel(a, b):
    dx, dy = b.cx - a.cx, b.cy - a.cy
    for name, along, across in (
        ("to the left of", dx, dy),
        ("to the right of", -dx, dy),
        ("above", dy, dx),
        ("below", -dy, dx),
    ):
        if along >= 0.15 and along >= 2 * abs(across):
            return name
    return None


def _match(scene, words):
    return [o for o in scene.objects if all(w in (o.shape, o.color, o.size) for w in words)]


def _the(scene, words):
    hits = _match(scene, words)
    assert len(hits) == 1, (words, scene)
    return hits[0]


def _answer(q, scene):
    if q == "where is this":
        return scene.place
    if m := re.fullmatch(r"what color is the (.+)", q):
        return _the(scene, m[1].split()).color
    if m := re.fullmatch(r"what shape is the (.+) object", q):
        return _the(scene, m[1].split()).shape
    if m := re.fullmatch(r"how many (\w+) are there", q):
        shape = next(s for s in SHAPES if m[1] in (s + "s", s + "es"))
        return str(len(_match(scene, [shape])))
    if m := re.fullmatch(r"is there an? (\w+) (\w+)", q):
        return "yes" if _match(scene, [m[1], m[2]]) else "no"
    if m := re.fullmatch(r"what shape is (to the left of|to the right of|above|below) the (.+)", q):
        anchor = _the(scene, m[2].split())
        hits = [o for o in scene.objects if o is not anchor and _rel(o, anchor) == m[1]]
        assert len(hits) == 1, q
        return hits[0].shape
    if m := re.fullmatch(r"where is the (.+)", q):
        region = _region(_the(scene, m[1].split()))
        assert region is not None, q
        return region
    raise AssertionError(f"unexpected question {q!r}")


def test_every_answer_is_right_and_yes_no_balanced(tiny_shapes):
    for split in SPLITS:
        d = tiny_shapes / split
        scenes = {s.id: s for s in load_scenes(d)}
        qs = _read(d, "questions_{}.json")["questions"]
        anns = _read(d, "annotations_{}.json")["annotations"]
        for q, a in zip(qs, anns):
            assert _answer(q["question"], scenes[q["image_id"]]) == a["multiple_choice_answer"], q
            if a["question_type"] == "position":
                assert a["multiple_choice_answer"] in REGIONS
            if a["question_type"] == "place":
                assert a["multiple_choice_answer"] in PLACES
        yes_no = Counter(a["multiple_choice_answer"] for a in anns if a["answer_type"] == "yes/no")
        assert yes_no["yes"] == yes_no["no"] > 0
        if split in ("train", "val", "test"):  # held-out pairs are not even named outside compositional
            for q in qs:
                assert not any(f"{c} {s}" in q["question"] for c, s in HELD_OUT_PAIRS)


def _count(scene, words):
    return len(_match(scene, words))


def _statement_truth(sentence, left, right):
    side = {"left": left, "right": right}
    if m := re.fullmatch(r"the (left|right) image has more (\w+) than the (left|right) image", sentence):
        shape = next(s for s in SHAPES if m[2] in (s + "s", s + "es"))
        return _count(side[m[1]], [shape]) > _count(side[m[3]], [shape])
    if m := re.fullmatch(r"both images contain an? (.+?)( object)?", sentence):
        words = m[1].split()
        return _count(left, words) > 0 and _count(right, words) > 0
    if m := re.fullmatch(r"there (?:is|are) exactly (\w+) (\w+) in the two images", sentence):
        number = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight"].index(m[1])
        shape = next(s for s in SHAPES if m[2] in (s, s + "s", s + "es"))
        return _count(left, [shape]) + _count(right, [shape]) == number
    if m := re.fullmatch(r"the (left|right) image is (.+)", sentence):
        return PLACES[side[m[1]].place].phrase == m[2]
    raise AssertionError(f"unexpected statement {sentence!r}")


def test_nlvr2_labels_right_and_balanced(tiny_shapes):
    for split in SPLITS:
        d = tiny_shapes / split
        scenes = {f"images/shapes_{split}_{s.id:06d}.png": s for s in load_scenes(d)}
        lines = [json.loads(x) for x in (d / f"nlvr2_{split}.jsonl").read_text().splitlines()]
        assert len(lines) == len(scenes)
        labels = Counter(x["label"] for x in lines)
        assert set(labels) == {"True", "False"} and abs(labels["True"] - labels["False"]) <= 1
        for x in lines:
            assert set(x) >= {
                "identifier",
                "sentence",
                "label",
                "left_url",
                "right_url",
                "synset",
                "query",
                "writer",
                "directory",
            }
            assert (d / x["left_url"]).is_file() and (d / x["right_url"]).is_file()
            truth = _statement_truth(x["sentence"], scenes[x["left_url"]], scenes[x["right_url"]])
            assert truth == (x["label"] == "True"), x
            if split != "compositional":
                assert not any(f"{c} {s}" in x["sentence"] for c, s in HELD_OUT_PAIRS)


def test_bad_arguments_raise():
    for kwargs in ({"n": 0}, {"split": "dev"}, {"size": 100}, {"workers": 0}):
        args = {"root": "/tmp/unused-shapes", "split": "train", "n": 1, **kwargs}
        with pytest.raises(XLXMERTError):
            generate_split(**args, progress=False)


@pytest.mark.parametrize(
    "extra",
    [
        ["--n", "-3"],
        ["--split", "dev"],
        ["--size", "100"],
        ["--n", "many"],
        "UNWRITABLE",
    ],
)
def test_cli_errors_are_one_line(extra, tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    if extra == "UNWRITABLE":
        argv = ["data", "shapes", "--out", str(blocker / "root"), "--n", "2"]
    else:
        argv = ["data", "shapes", "--out", str(tmp_path / "root"), *extra]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code != 0
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_cli_writes_a_split(tmp_path, capsys):
    assert main(["data", "shapes", "--out", str(tmp_path), "--split", "val", "--n", "3", "--seed", "1"]) == 0
    assert str(tmp_path / "val") in capsys.readouterr().out
    assert len(load_scenes(tmp_path / "val")) == 3
