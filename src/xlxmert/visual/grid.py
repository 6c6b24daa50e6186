"""Grid features (paper §4.1): a backbone's feature map pooled over the N×N equal cells of the image.

Pooling rule (documented choice):

- When the cells tile the feature map (``h % N == 0`` and ``w % N == 0``), each cell's feature is
  the exact average of the feature-map positions inside it (adaptive average pooling).
- Otherwise it is **RoIAlign** (bilinear, ``aligned=True`` pixel-centre convention, sampling ratio
  ``ceil(cell size)`` samples per axis, as torchvision's ``roi_align(..., sampling_ratio=-1,
  aligned=True)``), implemented here because torchvision is not a dependency. Because the N×N boxes
  form a regular grid, bilinear sampling is separable: pooling is ``A_y · F · A_xᵀ`` with two small
  interpolation matrices. On a tiling grid RoIAlign reduces to the exact average, so both rules
  agree where both apply.

Cell ``(i, j)`` (row i, column j) has box ``[j/N, i/N, (j+1)/N, (i+1)/N]`` and index ``i*N + j``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from xlxmert.errors import XLXMERTError
from xlxmert.visual.backbones import backbone_image_size, load_backbone

GRID_NAME = "grid.json"


def cell_boxes(grid_size: int) -> torch.Tensor:
    """Normalised boxes of the N×N cells, row-major: ``FloatTensor[N*N, 4]`` of ``[x0, y0, x1, y1]``."""
    n = int(grid_size)
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    i, j = i.reshape(-1).float(), j.reshape(-1).float()
    return torch.stack([j / n, i / n, (j + 1) / n, (i + 1) / n], dim=1)


def roi_align_weights(length: int, grid_size: int) -> torch.Tensor:
    """Bilinear RoIAlign weights along one axis: ``FloatTensor[N, length]``, rows sum to 1.

    Row ``k`` averages ``ceil(length / N)`` bilinear samples spread evenly over cell ``k``'s extent
    ``[k·length/N, (k+1)·length/N)`` in feature-map coordinates (pixel centres at ``x + 0.5``).
    """
    n = int(grid_size)
    bin_size = length / n
    samples = max(1, math.ceil(bin_size))
    weights = torch.zeros(n, length, dtype=torch.float64)
    for k in range(n):
        for s in range(samples):
            x = k * bin_size + (s + 0.5) * bin_size / samples - 0.5  # aligned: to pixel-index space
            x = min(max(x, 0.0), length - 1.0)
            lo = int(math.floor(x))
            hi = min(lo + 1, length - 1)
            frac = x - lo
            weights[k, lo] += (1.0 - frac) / samples
            weights[k, hi] += frac / samples
    return weights.float()


def grid_pool(feature_map: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Pool ``feature_map: FloatTensor[B, D, h, w]`` over N×N equal cells → ``FloatTensor[B, N, N, D]``."""
    if feature_map.dim() != 4:
        raise XLXMERTError(
            f"a backbone must return a feature map [B, D, h, w]; got shape {tuple(feature_map.shape)}"
        )
    b, d, h, w = feature_map.shape
    n = int(grid_size)
    if h % n == 0 and w % n == 0:
        cells = feature_map.reshape(b, d, n, h // n, n, w // n).mean(dim=(3, 5))
        return cells.permute(0, 2, 3, 1).contiguous()
    wy = roi_align_weights(h, n).to(feature_map)
    wx = roi_align_weights(w, n).to(feature_map)
    return torch.einsum("iy,bdyx,jx->bijd", wy, feature_map, wx).contiguous()


class GridFeatureExtractor(nn.Module):
    """``images: FloatTensor[B, 3, H, W] in [-1, 1]`` → grid features ``FloatTensor[B, N, N, D]``.

    ``backbone``: any module returning a feature map ``[B, D, h, w]`` (see
    :mod:`xlxmert.visual.backbones` for the hook). Images are resized to the backbone's
    ``image_size`` by the caller (the feature store does it when loading).
    """

    def __init__(self, backbone: nn.Module, grid_size: int = 8) -> None:
        super().__init__()
        if int(grid_size) < 1:
            raise XLXMERTError(f"grid_size must be a positive integer, got {grid_size}")
        self.backbone = backbone
        self.grid_size = int(grid_size)

    @property
    def image_size(self) -> int:
        return backbone_image_size(self.backbone)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return grid_pool(self.backbone(images), self.grid_size)

    def save_pretrained(self, folder: str | Path) -> Path:
        """The backbone's folder plus ``grid.json`` (``{"grid_size": N}``)."""
        if not hasattr(self.backbone, "save_pretrained"):
            raise XLXMERTError(
                f"{type(self.backbone).__name__} has no save_pretrained(dir); "
                "give your backbone one to save it"
            )
        folder = Path(folder)
        self.backbone.save_pretrained(folder)
        (folder / GRID_NAME).write_text(json.dumps({"grid_size": self.grid_size}) + "\n")
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, grid_size: int | None = None) -> GridFeatureExtractor:
        """Load a backbone folder; ``grid_size`` defaults to its ``grid.json``, else 8."""
        folder = Path(folder)
        backbone = load_backbone(folder)
        return cls(backbone, grid_size or saved_grid_size(folder) or 8).eval()


def saved_grid_size(folder: str | Path) -> int | None:
    """N of the grid a backbone folder was used with (its ``grid.json``, written by
    :meth:`GridFeatureExtractor.save_pretrained`), or None when it has none."""
    path = Path(folder) / GRID_NAME
    if not path.is_file():
        return None
    try:
        return int(json.loads(path.read_text())["grid_size"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise XLXMERTError(f'{path} is not a grid file ({{"grid_size": N}}); remove or fix it') from None
