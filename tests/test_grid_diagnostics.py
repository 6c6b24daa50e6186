"""scripts/grid_diagnostics.py: reading colour–shape pairs off grids of prediction-vocabulary words."""

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "grid_diagnostics.py"
MODEL = Path(__file__).resolve().parents[1] / "models" / "shapes-64"  # the shipped default


@pytest.fixture(scope="module")
def diag():
    spec = importlib.util.spec_from_file_location("grid_diagnostics", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pair(diag, color, shape):
    return diag.COLOR_NAMES.index(color) * len(diag.SHAPE_NAMES) + diag.SHAPE_NAMES.index(shape)


def test_named_pairs_are_the_noun_phrases_with_a_colour_and_a_shape(diag):
    got = diag.named_pairs("a red circle to the left of a blue square at night")
    assert got == {pair(diag, "red", "circle"), pair(diag, "blue", "square")}
    assert diag.named_pairs("three shapes at night") == set()
    assert diag.named_pairs("a red shape") == set()


def test_shares_and_presence_of_the_named_pairs(diag):
    n = len(diag.COLOR_NAMES) * len(diag.SHAPE_NAMES)
    red_circle, blue_square = pair(diag, "red", "circle"), pair(diag, "blue", "square")
    red_square = pair(diag, "red", "square")
    mass = torch.zeros(2, n)
    mass[0, red_circle], mass[0, blue_square] = 3.0, 1.0  # only the named pairs
    mass[1, red_square], mass[1, blue_square] = 3.0, 0.4  # red but the wrong shape; too little blue
    pairs = [{red_circle, blue_square}] * 2
    s = diag.shares(mass, pairs)
    assert s["pair"] == pytest.approx((1.0 + 0.4 / 3.4) / 2, abs=1e-3)
    assert s["colour"] == pytest.approx(1.0) and s["shape"] == pytest.approx(1.0)
    p = diag.presence(mass, pairs)
    assert p == {"pair": 0.5, "colour": 0.75, "shape": 0.75}


def write_split(root, captions_of_images, ids):
    """A ``data/test`` captions file and ``vocab/ids/test.*`` for images 1, 2, ..."""
    split = root / "data" / "test"
    split.mkdir(parents=True)
    images = [
        {"id": i + 1, "file_name": f"{i}.png", "width": 64, "height": 64}
        for i in range(len(captions_of_images))
    ]
    annotations = [
        {"id": 10 * (i + 1) + k, "image_id": i + 1, "caption": c}
        for i, caps in enumerate(captions_of_images)
        for k, c in enumerate(caps)
    ]
    (split / "captions_test.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    ids_dir = root / "vocab" / "ids"
    ids_dir.mkdir(parents=True)
    np.save(ids_dir / "test.npy", np.asarray(ids, dtype=np.uint16))
    (ids_dir / "test.json").write_text(json.dumps([im["id"] for im in images]))
    return root / "data", root / "vocab"


def test_main_reads_the_shipped_models_painted_words(diag, tmp_path, capsys):
    captions = [
        ["a red circle to the left of a blue square at night", "a red circle and a blue square"],
        ["three shapes in the snow"],  # names no colour–shape pair: left out
        ["a green triangle in the fog"],
    ]
    cells = MODEL.joinpath("transformer", "config.json")
    num_cells = json.loads(cells.read_text())["grid_size"] ** 2
    data, vocab = write_split(tmp_path, captions, np.arange(3 * num_cells).reshape(3, num_cells) % 7)
    args = ["--model", str(MODEL), "--data", str(data), "--vocab", str(vocab), "--n", "3", "--steps", "4"]
    args += ["--guidance-scale", "1", "3"]
    assert diag.main(args) == 0
    first = capsys.readouterr().out
    assert first.startswith("2 captions naming a colour-shape pair; ground-truth grids: object mass ")
    for g in ("1.0", "3.0"):
        assert f"guidance {g}: full mask: object mass " in first
        assert f"guidance {g}: sampled (random-4, T 1.0): object mass " in first
    shares = [float(x) for x in re.findall(r"'(?:pair|colour|shape)': ([\d.]+)", first)]
    assert len(shares) == 3 * 7 and all(0.0 <= s <= 1.0 for s in shares)
    assert diag.main(args) == 0
    assert capsys.readouterr().out == first  # seeded: the same numbers again


def test_main_refuses_a_model_whose_words_are_not_predictions(diag, tmp_path, capsys):
    from conftest import build_tiny_model

    model = build_tiny_model(tmp_path / "model")
    data, vocab = write_split(tmp_path, [["a red circle at night"]], [[0] * 16])
    assert diag.main(["--model", str(model), "--data", str(data), "--vocab", str(vocab)]) == 1
    assert capsys.readouterr().err == (
        "error: the model's visual words are not backbone predictions (--backbone-output)\n"
    )
