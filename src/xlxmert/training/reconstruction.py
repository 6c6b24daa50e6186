"""How well a generator reproduces images from their ground-truth visual words (paper Fig. 2b).

:func:`reconstruct` paints ground-truth ids; :func:`reconstruction_quality` compares the paintings
with the originals (L1, MSE, PSNR, the perceptual distance and, on ShapeScenes, whether each
cell's shapes and colours survive: :func:`shapes_cell_agreement`). The upper bound of everything
painted later.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from xlxmert.errors import XLXMERTError
from xlxmert.models.generator import SpadeGenerator, features_from_ids
from xlxmert.utils.seeding import torch_generator

if TYPE_CHECKING:
    from xlxmert.training.generator import PerceptualLoss


@torch.no_grad()
def reconstruct(
    generator: SpadeGenerator,
    ids: torch.Tensor,
    centroids: torch.Tensor,
    noise: bool = False,
    seed: int = 0,
    batch_size: int = 32,
) -> torch.Tensor:
    """Paint ground-truth ids: ids LongTensor[B, N*N] → FloatTensor[B, 3, S, S] in [-1, 1] (eval mode)."""
    was_training = generator.training
    generator.eval()
    device = next(generator.parameters()).device
    rng = torch_generator(seed, device)
    out = []
    for start in range(0, len(ids), batch_size):
        feats = features_from_ids(
            ids[start : start + batch_size].to(device), centroids.to(device), generator.config.grid_size
        )
        out.append(generator(feats, noise=noise, generator=rng).float().cpu())
    generator.train(was_training)
    return torch.cat(out)


def shapes_cell_agreement(backbone: nn.Module, grid_size: int, batch_size: int = 64) -> Callable:
    """Do shapes and colours survive? Compare the ShapeScenes backbone's per-cell predictions on
    reconstructions with those on the originals. ``backbone`` needs ``feature_map(images)`` and
    ``predict_cells(cells)`` (:class:`ShapesBackbone`, whatever its ``output`` setting).

    Returns a hook ``(reconstructions, originals) -> dict``: ``place_agreement`` (cells whose
    predicted place matches), ``object_f1`` (F1 of the (cell, colour×shape) labels predicted on the
    reconstruction against those predicted on the original) and ``object_agreement`` (cells whose
    whole predicted colour×shape set matches).
    """
    from xlxmert.visual.grid import grid_pool

    size = int(getattr(backbone, "image_size", 64))

    @torch.no_grad()
    def predict(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        places, objects = [], []
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size]
            if x.shape[-1] != size:
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            heads = backbone.predict_cells(grid_pool(backbone.feature_map(x), grid_size))
            places.append(heads["place"].argmax(-1).flatten(1))
            objects.append((heads["objects"] > 0).flatten(1, 2))
        return torch.cat(places), torch.cat(objects)

    def agreement(reconstructions: torch.Tensor, originals: torch.Tensor) -> dict[str, float]:
        backbone.eval()
        p_rec, o_rec = predict(reconstructions)
        p_org, o_org = predict(originals)
        tp = (o_rec & o_org).sum().item()
        f1 = 2 * tp / max(o_rec.sum().item() + o_org.sum().item(), 1)
        cells_rec = o_rec.reshape(len(o_rec), grid_size * grid_size, -1)
        cells_org = o_org.reshape(len(o_org), grid_size * grid_size, -1)
        return {
            "place_agreement": (p_rec == p_org).float().mean().item(),
            "object_f1": f1,
            "object_agreement": (cells_rec == cells_org).all(-1).float().mean().item(),
        }

    return agreement


@torch.no_grad()
def reconstruction_quality(
    generator: SpadeGenerator,
    centroids: torch.Tensor,
    images: torch.Tensor,
    ids: torch.Tensor,
    perceptual: PerceptualLoss | None = None,
    cell_agreement: Callable[[torch.Tensor, torch.Tensor], dict[str, float]] | None = None,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, float]:
    """How well the generator reproduces held-out images from their ground-truth ids (noise off).

    images: FloatTensor[M, 3, S, S] in [-1, 1]; ids: LongTensor[M, N*N]; centroids: FloatTensor[K, D].
    Returns ``l1``, ``mse`` (in [-1, 1] units), ``psnr`` (dB, pixels in [0, 1]), ``perceptual`` (if a
    :class:`PerceptualLoss` is given) and whatever ``cell_agreement(reconstructions, originals)``
    returns (e.g. :func:`shapes_cell_agreement`).
    """
    if len(images) != len(ids):
        raise XLXMERTError(f"{len(images)} images but {len(ids)} id rows")
    rec = reconstruct(generator, ids, centroids, noise=False, seed=seed, batch_size=batch_size)
    images = images.float()
    mse = F.mse_loss(rec, images).item()
    quality = {
        "num_images": float(len(images)),
        "l1": F.l1_loss(rec, images).item(),
        "mse": mse,
        "psnr": 10 * math.log10(4.0 / max(mse, 1e-12)),  # range 2 in [-1, 1] units
    }
    if perceptual is not None:
        device = next(perceptual.network.parameters()).device
        total = 0.0
        for start in range(0, len(images), batch_size):
            r, o = rec[start : start + batch_size].to(device), images[start : start + batch_size].to(device)
            total += perceptual(r, o).item() * len(r)
        quality["perceptual"] = total / len(images)
    if cell_agreement is not None:
        quality.update(cell_agreement(rec, images))
    return quality
