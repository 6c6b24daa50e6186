"""The shapes backbone: per-cell targets from the scene graph; brief training beats chance."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from xlxmert.data.shapes import SceneObject, load_scenes
from xlxmert.data.shapes.render import object_mask
from xlxmert.errors import XLXMERTError
from xlxmert.training.backbone import (
    cell_targets,
    object_class,
    roc_auc,
    scene_label_map,
    train_backbone,
)
from xlxmert.visual.backbones import ShapesBackbone, ShapesBackboneConfig, load_backbone

SMALL = ShapesBackboneConfig(widths=(8, 16, 32), feature_dim=32, train_grid_sizes=(8,))


def test_cell_targets_match_the_object_masks(tiny_shapes):
    scene = next(s for s in load_scenes(tiny_shapes / "train") if len(s.objects) >= 2)
    labels = torch.from_numpy(scene_label_map(scene, 64)).long()[None]
    coverage, present = cell_targets(labels, 8, 36)
    assert coverage.shape == (1, 8, 8, 36)
    for obj in scene.objects:
        mask = torch.from_numpy(object_mask(obj, 64)).float()
        per_cell = mask.reshape(8, 8, 8, 8).mean(dim=(1, 3))
        k = object_class(obj.color, obj.shape)
        same = [o for o in scene.objects if object_class(o.color, o.shape) == k]
        if len(same) == 1:
            torch.testing.assert_close(coverage[0, :, :, k], per_cell)
            assert torch.equal(present[0, :, :, k], per_cell > 0)
    assert float(coverage.sum(-1).max()) <= 1.0 + 1e-6


def test_object_class_layout():
    assert object_class("red", "circle") == 0
    assert object_class("purple", "cross") == 35
    obj = SceneObject("star", "blue", "large", 0.5, 0.5)
    assert object_class(obj.color, obj.shape) == 4 * 6 + 4


def test_roc_auc():
    assert roc_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    assert np.isnan(roc_auc(torch.tensor([0.1]), torch.tensor([1])))


def test_brief_training_predicts_cell_contents_above_chance(tiny_shapes, tmp_path):
    torch.set_num_threads(1)
    metrics = train_backbone(
        tiny_shapes, SMALL, tmp_path / "bb", steps=80, batch_size=16, seed=0, progress=False, lr=5e-3
    )
    assert metrics["last_loss"] < 0.6 * metrics["first_loss"]
    (val,) = metrics["val"]
    assert val["grid_size"] == 8
    assert val["place_acc"] > 0.6  # chance 0.25
    assert val["occupied_auc"] > 0.8  # chance 0.5
    assert val["objects_auc"] > 0.7  # chance 0.5
    saved = json.loads((tmp_path / "bb" / "training.json").read_text())
    assert saved["val"][0]["place_acc"] == val["place_acc"]
    model = load_backbone(tmp_path / "bb")
    assert isinstance(model, ShapesBackbone) and model.config == SMALL


def test_training_is_seeded(tiny_shapes, tmp_path):
    for name in ("a", "b"):
        train_backbone(
            tiny_shapes, SMALL, tmp_path / name, steps=2, batch_size=4, seed=3, progress=False, val_split=None
        )
    a, b = ShapesBackbone.from_pretrained(tmp_path / "a"), ShapesBackbone.from_pretrained(tmp_path / "b")
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), key


def test_grid_sizes_must_tile_the_image(tiny_shapes, tmp_path):
    bad = ShapesBackboneConfig(widths=(8, 16, 32), feature_dim=32, train_grid_sizes=(7,))
    with pytest.raises(XLXMERTError, match="multiple"):
        train_backbone(tiny_shapes, bad, tmp_path / "bb", steps=1, progress=False)


def test_predictions_output_is_the_heads_probabilities(tmp_path):
    torch.manual_seed(0)
    features = ShapesBackbone(SMALL).eval()
    predictions = features.with_output("predictions")
    assert features.config.output == "features" and predictions.config.output == "predictions"
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        fmap = features(images)
        probs = predictions(images)
        heads = features.predict_cells(fmap.permute(0, 2, 3, 1))
    c = SMALL.num_places + SMALL.num_objects
    assert fmap.shape == (2, 32, 16, 16) and probs.shape == (2, c, 16, 16)
    assert predictions.feature_dim == c and features.feature_dim == 32
    place, coverage = probs[:, : SMALL.num_places], probs[:, SMALL.num_places :]
    torch.testing.assert_close(place.sum(1), torch.ones(2, 16, 16))
    torch.testing.assert_close(place.permute(0, 2, 3, 1), heads["place"].softmax(-1))
    torch.testing.assert_close(coverage.permute(0, 2, 3, 1), heads["coverage"].sigmoid())
    # Saved and loaded with its output setting; a config written before the field existed
    # loads as "features".
    predictions.save_pretrained(tmp_path / "p")
    loaded = load_backbone(tmp_path / "p")
    assert loaded.config.output == "predictions"
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), probs)
    features.save_pretrained(tmp_path / "f")
    cfg = json.loads((tmp_path / "f" / "config.json").read_text())
    del cfg["output"]
    (tmp_path / "f" / "config.json").write_text(json.dumps(cfg))
    assert load_backbone(tmp_path / "f").config.output == "features"
    with pytest.raises(XLXMERTError, match="output"):
        ShapesBackboneConfig(output="logits")
