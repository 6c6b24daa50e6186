"""The visual side from the command line: backbone train → features extract → vocab build → assign."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from xlxmert.cli import main
from xlxmert.visual.store import FeatureStore
from xlxmert.visual.vocabulary import VisualVocabulary, load_ids


@pytest.fixture(scope="module")
def pipeline(tiny_shapes, tmp_path_factory):
    work = tmp_path_factory.mktemp("visual_cli")
    bb, feats, vocab = work / "bb", work / "feats", work / "vocab"
    assert (
        main(
            [
                "backbone",
                "train",
                "--data",
                str(tiny_shapes),
                "--out",
                str(bb),
                "--steps",
                "3",
                "--batch-size",
                "4",
                "--feature-dim",
                "16",
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "features",
                "extract",
                "--data",
                str(tiny_shapes),
                "--split",
                "train",
                "--backbone",
                "shapes",
                "--backbone-dir",
                str(bb),
                "--out",
                str(feats),
                "--grid-size",
                "8",
                "--chunk-size",
                "20",
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "vocab",
                "build",
                "--features",
                str(feats),
                "--k",
                "16",
                "--out",
                str(vocab),
                "--sample-size",
                "2000",
                "--niter",
                "5",
            ]
        )
        == 0
    )
    assert main(["vocab", "assign", "--features", str(feats), "--vocab", str(vocab)]) == 0
    return tiny_shapes, bb, feats, vocab


def test_end_to_end(pipeline, capsys):
    data, bb, feats, vocab = pipeline
    assert (bb / "config.json").is_file() and (bb / "model.safetensors").is_file()
    store = FeatureStore.open(feats)
    assert store.features.shape == (48, 8, 8, 16) and store.grid_size == 8
    assert json.loads((feats / "index.json").read_text())["chunks_done"] == [0, 1, 2]
    v = VisualVocabulary.from_pretrained(vocab)
    assert (v.num_clusters, v.dim, v.config.grid_size) == (16, 16, 8)
    report = json.loads((vocab / "report.json").read_text())
    assert sum(report["counts"]) == 48 * 64
    assert (vocab / "backbone" / "model.safetensors").is_file()
    ids, image_ids = load_ids(vocab, "train")
    assert ids.shape == (48, 64) and ids.dtype == np.uint16 and image_ids == store.image_ids
    assert int(ids.max()) < 16


def test_val_split_and_a_path_backbone(pipeline, tmp_path, capsys):
    data, bb, _, _ = pipeline
    code = main(
        [
            "features",
            "extract",
            "--data",
            str(data),
            "--split",
            "val",
            "--backbone",
            str(bb),
            "--out",
            str(tmp_path / "f"),
            "--quiet",
        ]
    )
    assert code == 0
    assert "16 images" in capsys.readouterr().out
    assert FeatureStore.open(tmp_path / "f").grid_size == 16  # the shapes-64 preset's grid


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("xlxmert: error: ") and "\n" not in err and "Traceback" not in err
    return err


def _remove_one_image(images: Path) -> str:
    next(images.iterdir()).unlink()
    return "missing"


def _truncate_one_png(images: Path) -> str:
    victim = sorted(images.iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:40])
    return victim.name


@pytest.mark.parametrize("damage", [_remove_one_image, _truncate_one_png], ids=["missing", "corrupt"])
def test_damaged_images_error(pipeline, tmp_path, capsys, damage):
    data, bb, _, _ = pipeline
    copy = tmp_path / "data"
    shutil.copytree(data / "val", copy / "val")
    expected = damage(copy / "val" / "images")
    args = ["--data", str(copy), "--split", "val", "--backbone-dir", str(bb)]
    code = main(["features", "extract", *args, "--out", str(tmp_path / "f"), "--quiet"])
    assert code == 1 and expected in _one_line_error(capsys)


def test_wrong_shape_feature_array_error(pipeline, tmp_path, capsys):
    _, _, feats, vocab = pipeline
    broken = tmp_path / "feats"
    shutil.copytree(feats, broken)
    np.save(broken / "features.npy", np.zeros((48, 8, 8, 3), np.float16))
    assert main(["vocab", "build", "--features", str(broken), "--k", "4", "--out", str(tmp_path / "v")]) == 1
    assert "shape" in _one_line_error(capsys)
    assert main(["vocab", "assign", "--features", str(broken), "--vocab", str(vocab)]) == 1
    assert "shape" in _one_line_error(capsys)


def test_predictions_output(pipeline, tmp_path, capsys):
    data, bb, _, _ = pipeline
    args = ["features", "extract", "--data", str(data), "--split", "val", "--out", str(tmp_path / "f")]
    assert main([*args, "--backbone-dir", str(bb), "--backbone-output", "predictions", "--quiet"]) == 0
    store = FeatureStore.open(tmp_path / "f")
    assert store.dim == 4 + 36  # places + colour×shape coverages
    feats = np.asarray(store.features, dtype=np.float32)
    np.testing.assert_allclose(feats[..., :4].sum(-1), 1.0, atol=2e-3)
    assert feats.min() >= 0 and feats.max() <= 1
    saved = json.loads((tmp_path / "f" / "backbone" / "config.json").read_text())
    assert saved["output"] == "predictions"
    code = main(
        [*args[:-1], str(tmp_path / "r"), "--backbone", "resnet50", "--backbone-output", "predictions"]
    )
    assert code == 1 and "shapes backbones only" in _one_line_error(capsys)


def test_usage_errors(pipeline, tmp_path, capsys):
    data, _, _, _ = pipeline
    code = main(["features", "extract", "--data", str(data), "--out", str(tmp_path / "f"), "--quiet"])
    assert code == 1 and "--backbone-dir" in _one_line_error(capsys)
    with pytest.raises(SystemExit) as exc:
        main(["vocab"])
    assert exc.value.code == 2
