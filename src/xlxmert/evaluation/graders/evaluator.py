"""The ShapeScenes evaluator: an image classifier/detector that grades generated pictures.

It plays the role Inception-v3 plays in the paper (§6.1), for the built-in world: a network trained
on original ShapeScenes images only, with its own seed and its own architecture (a small residual
CNN, unlike the grid-feature backbone), never a training signal for the models it grades. From an
image it predicts

- the place (4-way),
- for every colour–shape pair, how many such objects there are (0..4),
- a dense centre map (CenterNet-style, stride 4): per cell "no object" or one colour–shape pair,
  with the centre's offset inside the cell and the object's size; decoded into a predicted
  :class:`Scene`, which is what caption facts are checked against.

Its pooled penultimate features are the FID feature space, and the joint distribution
p(place) × p(colour–shape pair) its IS classes (:class:`EvaluatorFeatures`,
:class:`EvaluatorClassLogits`).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from xlxmert.data.shapes import world
from xlxmert.data.shapes.scene import Scene, SceneObject
from xlxmert.errors import XLXMERTError
from xlxmert.evaluation.split import EvalExample, images_uint8, load_example_images, load_examples, to_float
from xlxmert.utils.checkpoint import CHECKPOINT_DIR, LoopCheckpoints
from xlxmert.utils.config import PresetConfig, config_to_dict
from xlxmert.utils.seeding import torch_generator
from xlxmert.utils.weights import PretrainedMixin


@dataclass(frozen=True)
class EvaluatorConfig(PresetConfig):
    """Architecture and class vocabulary of the evaluator (class names are stored with the weights)."""

    image_size: int = 64
    widths: tuple[int, ...] = (32, 64, 128, 256)  # residual stages; stage 0 at full resolution
    places: tuple[str, ...] = tuple(world.PLACES)
    colors: tuple[str, ...] = tuple(world.COLORS)
    shapes: tuple[str, ...] = tuple(world.SHAPES)
    max_count: int = 4
    seed: int = 20201  # the evaluator's own seed, unrelated to any model it grades

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """(colour, shape) classes, colour-major."""
        return tuple((c, s) for c in self.colors for s in self.shapes)

    @property
    def detection_stride(self) -> int:
        """Pixels per centre-map cell: the map is taken after the third stage (two downsamplings)."""
        return 4

    PRESET_KIND: ClassVar[str] = "evaluator"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "shapes-64": {},
        # ShapeScenes at the paper's 256 px output size: one more downsampling stage.
        "paper": {"image_size": 256, "widths": (32, 64, 128, 256, 256)},
    }


def _norm(channels: int) -> nn.GroupNorm:
    # GroupNorm, not BatchNorm: scores must not depend on which images share a batch.
    return nn.GroupNorm(min(8, channels), channels)


class ResidualBlock(nn.Module):
    """Two 3×3 convs with a skip connection (1×1 projection when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = _norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = _norm(cout)
        self.skip = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(h)) + self.skip(x))


class ResidualCNN(nn.Module):
    """Stem + one residual block per stage; stage i>0 halves the resolution.

    ``forward(x: FloatTensor[B, 3, S, S]) -> list[FloatTensor[B, widths[i], S/2^i, S/2^i]]``.
    """

    def __init__(self, widths: tuple[int, ...]):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), _norm(widths[0]), nn.ReLU())
        blocks = []
        cin = widths[0]
        for i, w in enumerate(widths):
            blocks.append(ResidualBlock(cin, w, 1 if i == 0 else 2))
            cin = w
        self.stages = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem(x)
        maps = []
        for stage in self.stages:
            h = stage(h)
            maps.append(h)
        return maps


@dataclass
class EvaluatorOutput:
    """Outputs for a batch of B images (G = image_size / 4, P = number of colour–shape pairs)."""

    features: torch.Tensor  # FloatTensor[B, F]: pooled penultimate features (FID space)
    place_logits: torch.Tensor  # FloatTensor[B, 4]
    count_logits: torch.Tensor  # FloatTensor[B, P, max_count + 1]
    center_logits: torch.Tensor  # FloatTensor[B, P + 1, G, G]; class 0 = no object centre here
    offsets: torch.Tensor  # FloatTensor[B, 2, G, G]: centre (x, y) inside the cell, in [0, 1]
    size_logits: torch.Tensor  # FloatTensor[B, G, G]: > 0 means "large"


class ShapeSceneEvaluator(PretrainedMixin, nn.Module):
    """Reads a ShapeScenes image and predicts its content (see the module docstring)."""

    config_class = EvaluatorConfig
    missing_hint = "train one: xlxmert evaluator train"

    def __init__(self, config: EvaluatorConfig):
        super().__init__()
        if len(config.widths) < 3:
            raise XLXMERTError(
                "EvaluatorConfig.widths needs at least 3 stages (the centre map sits after stage 3)"
            )
        self.config = config
        num_pairs = len(config.pairs)
        self.backbone = ResidualCNN(config.widths)
        feat = config.widths[-1]
        self.place_head = nn.Linear(feat, len(config.places))
        self.count_head = nn.Linear(feat, num_pairs * (config.max_count + 1))
        mid = config.widths[2]
        # The centre map also sees the coarse global features (upsampled), so a cell knows the place
        # and the neighbouring objects when it decides colour and shape.
        self.center_head = nn.Sequential(
            nn.Conv2d(mid + feat, mid, 3, 1, 1), nn.ReLU(), nn.Conv2d(mid, num_pairs + 1 + 2 + 1, 1)
        )

    @property
    def num_features(self) -> int:
        return self.config.widths[-1]

    def forward(self, images: torch.Tensor) -> EvaluatorOutput:
        """``images: FloatTensor[B, 3, H, W] in [-1, 1]`` (resized to ``image_size`` if needed)."""
        size = self.config.image_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(
                images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
        maps = self.backbone(images)
        top = maps[-1]
        features = top.mean(dim=(2, 3))
        mid = maps[2]
        context = F.interpolate(top, size=mid.shape[-2:], mode="nearest")
        dense = self.center_head(torch.cat([mid, context], dim=1))
        num_pairs = len(self.config.pairs)
        return EvaluatorOutput(
            features=features,
            place_logits=self.place_head(features),
            count_logits=self.count_head(features).view(-1, num_pairs, self.config.max_count + 1),
            center_logits=dense[:, : num_pairs + 1],
            offsets=torch.sigmoid(dense[:, num_pairs + 1 : num_pairs + 3]),
            size_logits=dense[:, num_pairs + 3],
        )

    # ------------------------------------------------------------------ decoding
    @torch.no_grad()
    def predict_scenes(
        self, images: torch.Tensor, ids: list[int] | None = None, threshold: float = 0.5
    ) -> list[Scene]:
        """Predicted scenes of ``images: FloatTensor[B, 3, H, W] in [-1, 1]``.

        An object is a local maximum (3×3) of the centre map whose "some object" probability exceeds
        ``threshold``; its colour and shape are the cell's most likely pair.
        """
        self.eval()
        out = self(images)
        probs = out.center_logits.softmax(dim=1)
        objectness = 1.0 - probs[:, 0]
        peaks = objectness == F.max_pool2d(objectness.unsqueeze(1), 3, 1, 1).squeeze(1)
        keep = peaks & (objectness > threshold)
        grid = objectness.shape[-1]
        pair_idx = probs[:, 1:].argmax(dim=1)
        places = out.place_logits.argmax(dim=1)
        scenes = []
        for b in range(images.shape[0]):
            objects = []
            for i, j in keep[b].nonzero().tolist():
                color, shape = self.config.pairs[int(pair_idx[b, i, j])]
                cx = (j + float(out.offsets[b, 0, i, j])) / grid
                cy = (i + float(out.offsets[b, 1, i, j])) / grid
                size = "large" if float(out.size_logits[b, i, j]) > 0 else "small"
                objects.append(SceneObject(shape=shape, color=color, size=size, cx=cx, cy=cy))
            scene_id = ids[b] if ids is not None else b
            scenes.append(
                Scene(id=scene_id, place=self.config.places[int(places[b])], objects=tuple(objects))
            )
        return scenes


class EvaluatorFeatures(nn.Module):
    """FID feature space: ``FloatTensor[B, 3, H, W] in [-1, 1] -> FloatTensor[B, F]``."""

    def __init__(self, evaluator: ShapeSceneEvaluator):
        super().__init__()
        self.evaluator = evaluator
        self.num_features = evaluator.num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.evaluator(images).features


class EvaluatorClassLogits(nn.Module):
    """IS classes: log p(place) + log q(pair), ``FloatTensor[B, 4 · P]``.

    q(pair) is the share of the image's expected objects that are of that colour–shape pair, so an
    image of one red circle in the snow is confidently one class and a varied set of images spreads
    over many classes.
    """

    def __init__(self, evaluator: ShapeSceneEvaluator):
        super().__init__()
        self.evaluator = evaluator

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.evaluator(images)
        counts = torch.arange(out.count_logits.shape[-1], dtype=out.count_logits.dtype)
        expected = (out.count_logits.softmax(-1) * counts).sum(-1) + 1e-4  # [B, P]
        log_pair = (expected / expected.sum(-1, keepdim=True)).log()
        log_place = out.place_logits.log_softmax(-1)
        return (log_place[:, :, None] + log_pair[:, None, :]).flatten(1)


# ---------------------------------------------------------------------- targets and training
@dataclass(frozen=True)
class EvaluatorTargets:
    """Training targets for B scenes (see :class:`EvaluatorOutput` for shapes)."""

    place: torch.Tensor  # LongTensor[B]
    counts: torch.Tensor  # LongTensor[B, P]
    centers: torch.Tensor  # LongTensor[B, G, G] (0 = none, 1 + pair index)
    offsets: torch.Tensor  # FloatTensor[B, 2, G, G]
    large: torch.Tensor  # FloatTensor[B, G, G]


def scene_targets(scenes: list[Scene], config: EvaluatorConfig) -> EvaluatorTargets:
    """Ground-truth targets of ``scenes`` for :class:`ShapeSceneEvaluator`."""
    pair_index = {p: i for i, p in enumerate(config.pairs)}
    grid = config.image_size // config.detection_stride
    n = len(scenes)
    place = torch.zeros(n, dtype=torch.long)
    counts = torch.zeros(n, len(pair_index), dtype=torch.long)
    centers = torch.zeros(n, grid, grid, dtype=torch.long)
    offsets = torch.zeros(n, 2, grid, grid)
    large = torch.zeros(n, grid, grid)
    for b, scene in enumerate(scenes):
        place[b] = config.places.index(scene.place)
        for obj in scene.objects:
            k = pair_index[(obj.color, obj.shape)]
            counts[b, k] = min(counts[b, k] + 1, config.max_count)
            gx, gy = obj.cx * grid, obj.cy * grid
            j, i = min(int(gx), grid - 1), min(int(gy), grid - 1)
            centers[b, i, j] = k + 1
            offsets[b, 0, i, j] = gx - j
            offsets[b, 1, i, j] = gy - i
            large[b, i, j] = float(obj.size == "large")
    return EvaluatorTargets(place, counts, centers, offsets, large)


def evaluator_loss(out: EvaluatorOutput, tgt: EvaluatorTargets) -> torch.Tensor:
    """Place CE + per-pair count CE + centre-map CE (background down-weighted) + offset/size on centres."""
    num_classes = out.center_logits.shape[1]
    # About 2 of 256 cells hold a centre: weight the background so both kinds matter equally-ish.
    weight = torch.ones(num_classes)
    weight[0] = 0.05
    loss = F.cross_entropy(out.place_logits, tgt.place)
    loss = loss + F.cross_entropy(out.count_logits.flatten(0, 1), tgt.counts.flatten())
    loss = loss + F.cross_entropy(out.center_logits, tgt.centers, weight=weight)
    pos = tgt.centers > 0
    if pos.any():
        off_err = (out.offsets - tgt.offsets).abs().sum(1)
        loss = loss + off_err[pos].mean()
        loss = loss + F.binary_cross_entropy_with_logits(out.size_logits[pos], tgt.large[pos])
    return loss


@dataclass(frozen=True)
class EvaluatorTrainingConfig:
    """How the evaluator is trained (its own seed; nothing shared with X-LXMERT's training)."""

    steps: int = 3000
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    noise_std: float = 0.03  # pixel noise in [-1, 1] units, so generated images' artefacts matter less
    seed: int = 20201


def train_evaluator(
    data_root: str | Path,
    out: str | Path,
    steps: int | None = None,
    split: str = "train",
    config: EvaluatorConfig | None = None,
    training: EvaluatorTrainingConfig | None = None,
    n: int | None = None,
    progress: bool = True,
    checkpoint_every: int = 500,
) -> ShapeSceneEvaluator:
    """Train the evaluator on ``data_root/split`` and save it to ``out`` (config + safetensors, and
    ``training.json``: the loss of every step).

    Returns the trained (eval-mode) network. ``steps`` overrides ``training.steps``. A killed run
    resumes exactly from ``out/checkpoints`` (deleted once the network is saved).
    """
    config = config or EvaluatorConfig()
    training = training or EvaluatorTrainingConfig()
    if steps is not None:
        training = dataclasses.replace(training, steps=steps)
    examples = load_examples(data_root, split, n)
    images = images_uint8(load_example_images(examples), config.image_size)
    targets = scene_targets([ex.scene for ex in examples], config)
    ckpt_dir = Path(out) / CHECKPOINT_DIR
    model, losses = train_on_tensors(images, targets, config, training, progress, ckpt_dir, checkpoint_every)
    model.save_pretrained(out)
    (Path(out) / "training.json").write_text(json.dumps({"losses": losses}) + "\n")
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return model


def train_on_tensors(
    images: torch.Tensor,
    targets: EvaluatorTargets,
    config: EvaluatorConfig,
    training: EvaluatorTrainingConfig,
    progress: bool = True,
    checkpoint_dir: Path | None = None,
    checkpoint_every: int = 500,
) -> tuple[ShapeSceneEvaluator, list[float]]:
    """The training loop: ``images: ByteTensor[N, 3, S, S]`` and their targets. Returns the network
    and the loss of every step; with ``checkpoint_dir``, checkpoints there (and resumes)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # init only; the caller's RNG is left as it was
        model = ShapeSceneEvaluator(config)
    gen = torch_generator(training.seed)
    opt = torch.optim.AdamW(
        model.parameters(), lr=training.lr, weight_decay=training.weight_decay, betas=(0.9, 0.99)
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=training.lr, total_steps=max(training.steps, 1), pct_start=0.1
    )
    model.train()
    n = images.shape[0]
    start, losses = 0, []
    if checkpoint_dir is not None:
        settings = dict(config=config_to_dict(config), training=config_to_dict(training), n=n)
        ckpt = LoopCheckpoints(
            checkpoint_dir, checkpoint_every, settings, model=model, opt=opt, sched=sched, gen=gen
        )
        start, extra = ckpt.resume()
        losses = list(extra.get("losses", []))
    bar = tqdm(
        range(start, training.steps),
        initial=start,
        total=training.steps,
        desc="evaluator",
        disable=not progress,
    )
    for step in bar:
        idx = torch.randint(0, n, (min(training.batch_size, n),), generator=gen)
        x = to_float(images[idx])
        if training.noise_std > 0:
            x = x + training.noise_std * torch.randn(x.shape, generator=gen)
        tgt = EvaluatorTargets(*(t[idx] for t in dataclasses.astuple(targets)))
        loss = evaluator_loss(model(x), tgt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        losses.append(loss.item())
        if checkpoint_dir is not None:
            ckpt.maybe_save(step + 1, training.steps, losses=losses)
    model.eval()
    return model, losses


# ---------------------------------------------------------------------- accuracy on original images
def scene_signature(scene: Scene) -> tuple:
    """What an exact prediction must get right: the place and the multiset of (colour, shape, size)."""
    return scene.place, tuple(sorted((o.color, o.shape, o.size) for o in scene.objects))


@torch.no_grad()
def evaluator_accuracy(
    model: ShapeSceneEvaluator, examples: list[EvalExample], batch_size: int = 64
) -> dict[str, float]:
    """How well the evaluator reads original images (its own ceiling; chance in brackets).

    - ``place``: place accuracy (chance 0.25);
    - ``pair_counts``: share of images whose 36 per-pair counts are all right;
    - ``scene_exact``: share of images whose decoded scene has the right place and multiset of
      (colour, shape, size) (chance ≈ 0);
    - ``object_recall`` / ``object_precision``: decoded objects matched to true ones by colour,
      shape and a centre within 0.1.
    """
    start = time.time()
    images = images_uint8(load_example_images(examples), model.config.image_size)
    targets = scene_targets([ex.scene for ex in examples], model.config)
    place_ok = counts_ok = exact = matched = n_true = n_pred = 0
    for s in range(0, len(examples), batch_size):
        x = to_float(images[s : s + batch_size])
        batch = examples[s : s + batch_size]
        out = model(x)
        place_ok += int((out.place_logits.argmax(1) == targets.place[s : s + batch_size]).sum())
        counts_ok += int((out.count_logits.argmax(-1) == targets.counts[s : s + batch_size]).all(1).sum())
        predicted = model.predict_scenes(x, [ex.image_id for ex in batch])
        for ex, pred in zip(batch, predicted):
            exact += int(scene_signature(ex.scene) == scene_signature(pred))
            free = list(pred.objects)
            for obj in ex.scene.objects:
                for k, cand in enumerate(free):
                    if (
                        (cand.color, cand.shape) == (obj.color, obj.shape)
                        and abs(cand.cx - obj.cx) < 0.1
                        and abs(cand.cy - obj.cy) < 0.1
                    ):
                        matched += 1
                        free.pop(k)
                        break
            n_true += len(ex.scene.objects)
            n_pred += len(pred.objects)
    total = len(examples)
    return {
        "place": place_ok / total,
        "pair_counts": counts_ok / total,
        "scene_exact": exact / total,
        "object_recall": matched / max(n_true, 1),
        "object_precision": matched / max(n_pred, 1),
        "num_images": float(total),
        "seconds": time.time() - start,
    }
