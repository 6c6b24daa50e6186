"""Train the ``shapes`` backbone: supervised per grid cell on what the cell holds.

Our analogue of the paper's detector trained on Visual Genome (§4.1, C.4): the grid features
k-means quantises should carry the cell's semantics, not its pixels. For every cell of every grid
in ``config.train_grid_sizes`` the per-cell heads of :class:`ShapesBackbone` predict

- ``place``: the scene's background (4-way softmax),
- ``objects``: for each (colour, shape) pair, whether an object of it overlaps the cell (sigmoid),
  and factorised, ``colors`` and ``shapes``: whether an object of that colour / shape does,
- ``coverage``: for each pair, the fraction of the cell's pixels its objects cover (sigmoid, soft
  binary cross-entropy), computed from ``render.object_mask``.

Targets come from the scene graph, never from pixels, and every batch gets fresh uniform noise
of the world's amplitude (±6/255) on top of the rendered noise, so the features learn to ignore it.
Horizontal flips (image and label map together) double the layouts seen.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from tqdm.auto import trange

from xlxmert.data.images import load_image
from xlxmert.data.shapes import load_scenes
from xlxmert.data.shapes.render import object_mask
from xlxmert.errors import XLXMERTError
from xlxmert.utils.checkpoint import CHECKPOINT_DIR, LoopCheckpoints
from xlxmert.utils.config import config_to_dict
from xlxmert.utils.seeding import torch_generator
from xlxmert.visual.backbones import COLORS, PLACES, SHAPES, ShapesBackbone, ShapesBackboneConfig
from xlxmert.visual.grid import grid_pool
from xlxmert.visual.store import split_images

METRICS_NAME = "training.json"
NOISE = 6 / 127.5  # WORLD.md: integer noise in [-6, 6] on 0..255, in our [-1, 1] units


def object_class(color: str, shape: str) -> int:
    """Index of a (colour, shape) pair in the ``objects``/``coverage`` heads: ``c * len(SHAPES) + s``."""
    return COLORS.index(color) * len(SHAPES) + SHAPES.index(shape)


def scene_label_map(scene, size: int) -> np.ndarray:
    """``int16 [size, size]``: each pixel's (colour, shape) class, ``-1`` for background.

    Objects never overlap (WORLD.md keeps their boxes apart), so one class per pixel is exact.
    """
    labels = np.full((size, size), -1, dtype=np.int16)
    for obj in scene.objects:
        labels[object_mask(obj, size)] = object_class(obj.color, obj.shape)
    return labels


class CellTargets:
    """A split in memory: ``images: uint8 [M, 3, S, S]``, ``labels: int16 [M, S, S]``, ``places: [M]``."""

    def __init__(self, data_root: str | Path, split: str, size: int, limit: int | None = None) -> None:
        split_dir = Path(data_root) / split
        scenes = load_scenes(split_dir)[:limit]
        if not scenes:
            raise XLXMERTError(f"{split_dir} has no scenes")
        ids, _, paths = split_images(data_root, split)
        path_of = dict(zip(ids, paths))
        images = np.stack([np.asarray(load_image(path_of[s.id], size)) for s in scenes])
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.from_numpy(np.stack([scene_label_map(s, size) for s in scenes]))
        self.places = torch.tensor([PLACES.index(s.place) for s in scenes])

    def __len__(self) -> int:
        return len(self.places)

    def batch(self, rows: torch.Tensor, augment: bool, gen: torch.Generator | None = None):
        """``(images FloatTensor[B, 3, S, S] in [-1, 1], labels LongTensor[B, S, S], places [B])``."""
        images = self.images[rows].float().div(127.5).sub(1.0)
        labels = self.labels[rows].long()
        if augment:
            flip = torch.rand(len(rows), generator=gen) < 0.5
            images[flip] = images[flip].flip(-1)
            labels[flip] = labels[flip].flip(-1)
            images = (images + (torch.rand(images.shape, generator=gen) * 2 - 1) * NOISE).clamp(-1, 1)
        return images, labels, self.places[rows]


def cell_targets(labels: torch.Tensor, grid_size: int, num_objects: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cell targets from a pixel label map.

    ``labels: LongTensor[B, S, S]`` (-1 = background) → ``coverage: FloatTensor[B, N, N, C*S]`` (the
    fraction of each cell covered by each (colour, shape) class) and ``present: BoolTensor`` (same
    shape, coverage > 0).
    """
    onehot = F.one_hot(labels + 1, num_objects + 1)[..., 1:].float()  # drop the background channel
    coverage = grid_pool(onehot.permute(0, 3, 1, 2), grid_size)
    return coverage, coverage > 0


def _multilabel_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # Summed over labels, averaged over cells: a mean over 36 mostly-absent labels scales the
    # gradient down 36-fold and training stalls at the label prior.
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(-1).mean()


def cell_losses(
    model: ShapesBackbone,
    images: torch.Tensor,
    labels: torch.Tensor,
    places: torch.Tensor,
    grid_sizes: tuple[int, ...],
) -> torch.Tensor:
    """Sum over grids of place CE + presence BCEs (pairs, colours, shapes) + coverage soft-BCE."""
    fmap = model.feature_map(images)
    c, s = model.config.num_colors, model.config.num_shapes
    total = images.new_zeros(())
    for n in grid_sizes:
        logits = model.predict_cells(grid_pool(fmap, n))
        coverage, present = cell_targets(labels, n, c * s)
        pairs = present.unflatten(-1, (c, s))
        total = total + F.cross_entropy(logits["place"].flatten(0, 2), places.repeat_interleave(n * n))
        total = total + _multilabel_bce(logits["colors"], pairs.any(-1).float())
        total = total + _multilabel_bce(logits["shapes"], pairs.any(-2).float())
        # The 36-label pair heads weigh like one 6-label head: at full weight their gradient
        # drowns the colour and shape heads and colour is learnt several times slower (measured).
        pair_weight = 1.0 / s
        total = total + pair_weight * _multilabel_bce(logits["objects"], present.float())
        total = total + pair_weight * _multilabel_bce(logits["coverage"], coverage)
    return total


@torch.no_grad()
def evaluate_cells(model: ShapesBackbone, data: CellTargets, grid_size: int, batch_size: int = 64) -> dict:
    """Per-cell accuracy on ``data`` at ``grid_size``.

    ``place_acc`` (chance 0.25); ``occupied_auc`` (ROC AUC of "an object overlaps this cell" from
    the largest presence logit; chance 0.5); ``objects_auc`` (ROC AUC of the presence logits over
    all cells and (colour, shape) pairs); ``objects_exact`` (all presence bits right);
    ``dominant_acc`` (the class covering most of the cell, background included, predicted by argmax
    of the coverage head, with ``dominant_chance`` the majority-class rate to beat); on cells where
    an object covers at least a quarter of the cell, ``color_acc`` and ``shape_acc`` of the colour
    and shape heads' argmax against the largest object's (chance about 1/6 each).
    """
    model.eval()
    place_ok = exact = dom_ok = cells = 0
    color_ok = shape_ok = covered = 0
    scores, truth, occ_scores, occ_truth = [], [], [], []
    dom_counts = torch.zeros(model.config.num_objects + 1)
    for s in range(0, len(data), batch_size):
        images, labels, places = data.batch(torch.arange(s, min(s + batch_size, len(data))), augment=False)
        logits = model.predict_cells(grid_pool(model.feature_map(images), grid_size))
        coverage, present = cell_targets(labels, grid_size, model.config.num_objects)
        place_ok += (logits["place"].argmax(-1) == places[:, None, None]).sum().item()
        exact += ((logits["objects"] > 0) == present).all(-1).sum().item()
        scores.append(logits["objects"].flatten())
        truth.append(present.flatten())
        occ_scores.append(logits["objects"].amax(-1).flatten())
        occ_truth.append(present.any(-1).flatten())
        big = coverage.amax(-1) >= 0.25
        true_cls = coverage.argmax(-1)[big]
        n_shapes = model.config.num_shapes
        color_ok += (true_cls // n_shapes == logits["colors"].argmax(-1)[big]).sum().item()
        shape_ok += (true_cls % n_shapes == logits["shapes"].argmax(-1)[big]).sum().item()
        covered += int(big.sum())
        background = 1 - coverage.sum(-1, keepdim=True)
        dominant = torch.cat([background, coverage], -1).argmax(-1)
        pred_cov = torch.sigmoid(logits["coverage"])
        pred = torch.cat([1 - pred_cov.sum(-1, keepdim=True), pred_cov], -1).argmax(-1)
        dom_ok += (pred == dominant).sum().item()
        dom_counts += torch.bincount(dominant.flatten(), minlength=len(dom_counts)).float()
        cells += dominant.numel()
    return {
        "grid_size": grid_size,
        "place_acc": place_ok / cells,
        "occupied_auc": roc_auc(torch.cat(occ_scores), torch.cat(occ_truth)),
        "objects_auc": roc_auc(torch.cat(scores), torch.cat(truth)),
        "objects_exact": exact / cells,
        "dominant_acc": dom_ok / cells,
        "dominant_chance": float(dom_counts.max() / cells),
        "color_acc": color_ok / max(covered, 1),
        "shape_acc": shape_ok / max(covered, 1),
    }


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve (Mann–Whitney U with average ranks for ties); NaN without both classes."""
    labels = labels.bool().numpy()
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(scores.double().numpy())
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def train_backbone(
    data_root: str | Path,
    config: ShapesBackboneConfig,
    out: str | Path,
    steps: int = 1500,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    lr: float = 2e-3,
    val_split: str | None = "val",
    max_images: int | None = None,
    checkpoint_every: int = 250,
) -> dict:
    """Train a :class:`ShapesBackbone` on ``DATA/train``; save it to ``out``; return val metrics.

    ``out`` gets ``config.json`` + ``model.safetensors`` and ``training.json`` (the loss of every
    step, its ends and per-cell val accuracy for each training grid). ``max_images`` caps the
    images loaded per split. Every ``checkpoint_every`` steps a checkpoint goes to
    ``out/checkpoints`` (utils.checkpoint); rerunning a killed run resumes it exactly, and the
    checkpoints are deleted once the backbone is saved.
    """
    size = config.image_size
    if any(size % n for n in config.train_grid_sizes) or size % config.stride:
        raise XLXMERTError(
            f"image_size {size} must be a multiple of the stride and of every grid in "
            f"{config.train_grid_sizes}"
        )
    torch.manual_seed(seed)  # weight init; data order and augmentation use their own generator
    gen = torch_generator(seed)
    train = CellTargets(data_root, "train", size, max_images)
    val = CellTargets(data_root, val_split, size, max_images) if val_split else None
    model = ShapesBackbone(config)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps), pct_start=0.1)
    parts = dict(model=model, optimizer=opt, scheduler=sched, generator=gen)
    settings = dict(config=config_to_dict(config), steps=steps, batch_size=batch_size, seed=seed, lr=lr)
    ckpt = LoopCheckpoints(
        Path(out) / CHECKPOINT_DIR, checkpoint_every, {**settings, "max_images": max_images}, **parts
    )
    start, extra = ckpt.resume()
    losses = list(extra.get("losses", []))
    bar = trange(start, steps, initial=start, total=steps, desc="backbone", disable=not progress)
    for step in bar:
        model.train()
        rows = torch.randint(len(train), (batch_size,), generator=gen)
        loss = cell_losses(model, *train.batch(rows, augment=True, gen=gen), config.train_grid_sizes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
        ckpt.maybe_save(step + 1, steps, losses=losses)
    model.eval()
    k = max(1, min(20, len(losses) // 10))
    metrics = {
        "steps": steps,
        "first_loss": float(np.mean(losses[:k])) if losses else None,
        "last_loss": float(np.mean(losses[-k:])) if losses else None,
        "val": [evaluate_cells(model, val, n) for n in config.train_grid_sizes] if val is not None else [],
        "losses": losses,
    }
    model.save_pretrained(out)
    (Path(out) / METRICS_NAME).write_text(json.dumps(metrics, indent=1) + "\n")
    ckpt.remove()
    return metrics
