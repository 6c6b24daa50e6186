"""Image quality (paper §6.1): Fréchet distance (FID) and Inception Score (IS) in a feature space.

The paper computes both with Inception-v3 on COCO. On ShapeScenes an ImageNet network says little
about shapes on flat backgrounds, so the default feature space is the ShapeScenes evaluator's
(:mod:`xlxmert.evaluation.graders.evaluator`): its penultimate features for FID and its class logits for
IS. Both metrics are torchmetrics' own implementations given a custom feature module.

Real images (COCO): torchmetrics' bundled Inception-v3 needs ``torch-fidelity`` (which we must not
install) and its weights (which we must not download), so the standard network comes from a file
the user supplies (:func:`load_feature_network`): Inception-v3 with the FID weights, exported with
``torch.export`` on a machine that has them. Any module mapping ``FloatTensor[B, 3, H, W] in
[-1, 1]`` to ``FloatTensor[B, F]`` (features) or ``[B, C]`` (logits, for IS) works the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore

from xlxmert.data.images import pil_to_tensor
from xlxmert.errors import XLXMERTError


def images_to_batches(
    images: Sequence[Image.Image] | torch.Tensor, batch_size: int = 64
) -> Iterable[torch.Tensor]:
    """Yield ``FloatTensor[b, 3, H, W] in [-1, 1]`` batches from PIL images or one tensor."""
    if isinstance(images, torch.Tensor):
        for start in range(0, images.shape[0], batch_size):
            yield images[start : start + batch_size].float()
        return
    for start in range(0, len(images), batch_size):
        yield torch.stack([pil_to_tensor(img) for img in images[start : start + batch_size]])


class _FloatInput(nn.Module):
    """Adapts a feature network to torchmetrics, which may probe it with ``uint8`` images."""

    def __init__(self, network: nn.Module, num_features: int | None = None):
        super().__init__()
        self.network = network
        if num_features is not None:
            self.num_features = num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = images.float().div(127.5).sub(1.0)
        out = self.network(images)
        return out.flatten(1) if out.dim() > 2 else out


@torch.no_grad()
def frechet_distance(
    real: Sequence[Image.Image] | torch.Tensor,
    fake: Sequence[Image.Image] | torch.Tensor,
    feature: nn.Module,
    num_features: int | None = None,
    batch_size: int = 64,
) -> float:
    """FID between two image sets in the feature space of ``feature``.

    ``feature`` (in eval mode) maps ``FloatTensor[B, 3, H, W] in [-1, 1]`` to ``FloatTensor[B, F]``;
    both sets need at least two images (FID compares covariance matrices).
    """
    if len(real) < 2 or len(fake) < 2:
        raise XLXMERTError(f"FID needs at least 2 images per set (got {len(real)} real, {len(fake)} fake)")
    if num_features is None:
        num_features = getattr(feature, "num_features", None)
    if num_features is None:
        # torchmetrics would probe the network with a 299×299 image; probe it with real ones instead.
        probe = next(iter(images_to_batches(real, 2)))
        num_features = int(_FloatInput(feature)(probe).shape[-1])
    metric = FrechetInceptionDistance(feature=_FloatInput(feature, num_features), reset_real_features=True)
    for batch in images_to_batches(real, batch_size):
        metric.update(batch, real=True)
    for batch in images_to_batches(fake, batch_size):
        metric.update(batch, real=False)
    return max(float(metric.compute()), 0.0)


@torch.no_grad()
def inception_score(
    images: Sequence[Image.Image] | torch.Tensor,
    classifier: nn.Module,
    splits: int = 10,
    seed: int = 0,
    batch_size: int = 64,
) -> tuple[float, float]:
    """IS (mean, std over ``splits``) of ``images`` under ``classifier``'s class logits ``[B, C]``.

    torchmetrics shuffles before splitting with the global RNG; it is forked and seeded here so the
    score is reproducible without touching the caller's random state.
    """
    if len(images) < splits:
        splits = max(1, len(images))
    metric = InceptionScore(feature=_FloatInput(classifier), splits=splits)
    for batch in images_to_batches(images, batch_size):
        metric.update(batch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    std_value = float(std) if splits > 1 else 0.0
    return float(mean), std_value


def load_feature_network(path: str | Path) -> nn.Module:
    """A user-supplied feature network saved with ``torch.export`` (e.g. Inception-v3 for real images).

    Export it where the weights are (e.g. pytorch-fid's ``pt_inception-2015-12-05`` in its network)::

        ep = torch.export.export(net, (torch.zeros(2, 3, 299, 299),),
                                 dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
        torch.export.save(ep, "inception_fid.pt2")

    It must map ``FloatTensor[B, 3, H, W] in [-1, 1]`` to ``FloatTensor[B, F]`` (resizing inside if it
    needs 299×299). Nothing is downloaded: point at the ``.pt2`` file.
    """
    path = Path(path)
    if not path.is_file():
        raise XLXMERTError(f"feature network not found: {path} (save one with torch.export.save)")
    if path.suffix != ".pt2":
        raise XLXMERTError(f"{path} is not a .pt2 file; save the network with torch.export.save(ep, 'x.pt2')")
    try:
        network = torch.export.load(str(path)).module()
    except Exception as exc:  # noqa: BLE001 - any unreadable archive is the same user error
        kind = type(exc).__name__
        raise XLXMERTError(f"cannot load {path} as a torch.export archive ({kind}); re-export it") from None
    return network
