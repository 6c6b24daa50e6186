"""Grid features: pooling equals a direct per-cell computation; backbones and their folders."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from xlxmert.errors import XLXMERTError
from xlxmert.visual.backbones import (
    ResNetBackbone,
    ShapesBackbone,
    ShapesBackboneConfig,
    load_backbone,
)
from xlxmert.visual.grid import GridFeatureExtractor, cell_boxes, grid_pool, roi_align_weights

TINY = ShapesBackboneConfig(widths=(4, 8, 8), feature_dim=12)


def _images(b: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_cell_boxes_row_major():
    boxes = cell_boxes(2)
    assert boxes.shape == (4, 4)
    expected = torch.tensor([[0, 0, 0.5, 0.5], [0.5, 0, 1, 0.5], [0, 0.5, 0.5, 1], [0.5, 0.5, 1, 1]])
    assert torch.equal(boxes, expected)
    assert cell_boxes(8)[8 * 3 + 5].tolist() == [5 / 8, 3 / 8, 6 / 8, 4 / 8]


def test_pooled_features_equal_per_cell_average_of_the_feature_map():
    torch.manual_seed(0)
    backbone = ShapesBackbone(TINY).eval()
    images = _images()
    with torch.no_grad():
        fmap = backbone(images)
        grid = GridFeatureExtractor(backbone, 8)(images)
    assert fmap.shape == (2, 12, 16, 16) and grid.shape == (2, 8, 8, 12)
    for i in range(8):
        for j in range(8):
            direct = fmap[:, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean(dim=(2, 3))
            torch.testing.assert_close(grid[:, i, j], direct)


def test_pooled_features_equal_the_backbone_run_on_each_cell_crop():
    # A pointwise backbone sees each cell in isolation, so running it on the crop of cell (i, j)
    # and averaging must give exactly that cell's grid feature.
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 5, 1), nn.Tanh())
    images = _images(size=24)
    with torch.no_grad():
        grid = GridFeatureExtractor(backbone, 8)(images)
        for i in range(8):
            for j in range(8):
                crop = images[:, :, 3 * i : 3 * i + 3, 3 * j : 3 * j + 3]
                torch.testing.assert_close(grid[:, i, j], backbone(crop).mean(dim=(2, 3)))


def _naive_roi_align(fmap: torch.Tensor, n: int) -> torch.Tensor:
    """torchvision-style RoIAlign (aligned=True, adaptive sampling), one sample at a time."""
    b, d, h, w = fmap.shape
    out = torch.zeros(b, n, n, d, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            y0, x0, bh, bw = i * h / n, j * w / n, h / n, w / n
            sy, sx = math.ceil(bh), math.ceil(bw)
            acc = torch.zeros(b, d, dtype=torch.float64)
            for a in range(sy):
                for c in range(sx):
                    y = min(max(y0 + (a + 0.5) * bh / sy - 0.5, 0.0), h - 1.0)
                    x = min(max(x0 + (c + 0.5) * bw / sx - 0.5, 0.0), w - 1.0)
                    yl, xl = int(y), int(x)
                    yh, xh = min(yl + 1, h - 1), min(xl + 1, w - 1)
                    ly, lx = y - yl, x - xl
                    acc += (
                        (1 - ly) * (1 - lx) * fmap[:, :, yl, xl].double()
                        + (1 - ly) * lx * fmap[:, :, yl, xh].double()
                        + ly * (1 - lx) * fmap[:, :, yh, xl].double()
                        + ly * lx * fmap[:, :, yh, xh].double()
                    )
            out[:, i, j] = acc / (sy * sx)
    return out.float()


def test_roi_align_when_cells_do_not_tile_the_map():
    fmap = torch.randn(2, 3, 10, 7, generator=torch.Generator().manual_seed(1))
    pooled = grid_pool(fmap, 4)
    assert pooled.shape == (2, 4, 4, 3)
    torch.testing.assert_close(pooled, _naive_roi_align(fmap, 4))
    # On a linear ramp, an interior cell's RoIAlign average is the ramp at the cell's centre.
    ramp = torch.arange(10.0).view(1, 1, 1, 10).expand(1, 1, 10, 10)
    pooled = grid_pool(ramp, 4)[0, :, :, 0]
    for j in (1, 2):
        torch.testing.assert_close(pooled[:, j], torch.full((4,), (j + 0.5) * 10 / 4 - 0.5))


def test_roi_align_reduces_to_exact_average_on_a_tiling_grid():
    exact = torch.kron(torch.eye(4), torch.full((1, 4), 0.25))  # cell k averages rows 4k..4k+3
    torch.testing.assert_close(roi_align_weights(16, 4), exact)


def test_grid_pool_rejects_a_non_map():
    with pytest.raises(XLXMERTError, match="feature map"):
        grid_pool(torch.zeros(2, 5, 7), 2)


def test_shapes_backbone_stages_and_folder_round_trip(tmp_path):
    torch.manual_seed(0)
    extractor = GridFeatureExtractor(ShapesBackbone(TINY).eval(), grid_size=16)
    stages = extractor.backbone.feature_stages(_images())
    assert [tuple(s.shape) for s in stages] == [(2, 4, 64, 64), (2, 8, 32, 32), (2, 8, 16, 16)]
    extractor.save_pretrained(tmp_path / "bb")
    loaded = GridFeatureExtractor.from_pretrained(tmp_path / "bb")
    assert loaded.grid_size == 16 and loaded.image_size == 64
    assert isinstance(load_backbone(tmp_path / "bb"), ShapesBackbone)
    with torch.no_grad():
        torch.testing.assert_close(loaded(_images()), extractor(_images()))


def test_presets():
    assert ShapesBackboneConfig.from_preset("paper").feature_dim == 2048
    assert ShapesBackboneConfig.from_preset("shapes-64").image_size == 64
    with pytest.raises(XLXMERTError, match="unknown backbone preset"):
        ShapesBackboneConfig.from_preset("huge")


def test_resnet_backbone_from_a_tiny_random_config(tmp_path):
    from transformers import ResNetConfig

    torch.manual_seed(0)
    config = ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], layer_type="bottleneck"
    )
    backbone = ResNetBackbone.from_config(config, image_size=64).eval()
    images = _images()
    with torch.no_grad():
        fmap = backbone(images)
        stages = backbone.feature_stages(images)
    assert fmap.shape == (2, 32, 2, 2)  # C5: stride 32
    assert [s.shape[1] for s in stages] == [8, 16, 24, 32]
    torch.testing.assert_close(stages[-1], fmap)
    backbone.save_pretrained(tmp_path / "rn")
    loaded = load_backbone(tmp_path / "rn")
    assert isinstance(loaded, ResNetBackbone) and loaded.image_size == 64
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), fmap)
        # ImageNet normalisation happens inside: images in [-1, 1] map to (x01 - mean) / std.
        grid = GridFeatureExtractor(loaded, 2)(images)
    assert grid.shape == (2, 2, 2, 32)


def test_any_module_returning_a_feature_map_is_a_backbone(tmp_path):
    backbone = nn.Sequential(nn.AvgPool2d(4), nn.Conv2d(3, 6, 1))
    grid = GridFeatureExtractor(backbone, 4)(_images())
    assert grid.shape == (2, 4, 4, 6)
    assert GridFeatureExtractor(backbone, 4).image_size == 64
    with pytest.raises(XLXMERTError, match="save_pretrained"):
        GridFeatureExtractor(backbone, 4).save_pretrained(tmp_path / "x")


def test_load_backbone_errors(tmp_path):
    with pytest.raises(XLXMERTError, match="not found"):
        load_backbone(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(XLXMERTError, match="not an xlxmert backbone"):
        load_backbone(tmp_path / "empty")
