"""Training the image generator on ground-truth visual words (paper §4.2, appendix D.4–D.5).

Like teacher forcing: the generator paints the centroid features of each training image's own
visual ids (written by ``xlxmert vocab assign``) and learns to reproduce that image. It is never
fine-tuned on the transformer's predictions.

Losses (weights from the paper, pix2pixHD's (1, 1, 10, 10)):

- G = 10·perceptual + 1·hinge (−D(fake)) + 10·feature matching + 1·cluster CE on D's reading of fake
- D = hinge (relu(1 − D(real)) + relu(1 + D(fake))) + 1·(cluster CE on real + cluster CE on fake)

(The paper's equation (2) prints ``max(1 − D(X̂), 0)`` for the fake term; the hinge loss it cites,
and the reference code, use ``1 + D(fake)``.)

One step runs the generator once and the discriminator once, on real and fake images together
(instance norm only, so batching them is the same function as two passes). Both losses are read
off that single forward pass; each backward pass is restricted to its own network's parameters
(``inputs=``), so neither loss leaks into the other network and nothing is recomputed. Both
networks therefore step from the same point (simultaneous updates rather than the
regenerate-then-rescore schedule of SPADE's trainer, which runs D on fakes twice per step).

Run folder ``out/``::

    generator/            config.json + model.safetensors (+ report.json) — the component
    model_index.json      maps generator to its class (update_model_index)
    checkpoints/          step_XXXXXXX/: G and D weights, optimisers, step (utils.checkpoint; resume)
    samples/step_XXXXXX.png   original | reconstruction, from ground-truth ids
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from xlxmert.data.images import image_grid, load_image, pil_to_tensor, tensor_to_pil
from xlxmert.errors import XLXMERTError
from xlxmert.models.generator import (
    Discriminator,
    DiscriminatorConfig,
    GeneratorConfig,
    SpadeGenerator,
    features_from_ids,
)
from xlxmert.training.reconstruction import reconstruct, reconstruction_quality, shapes_cell_agreement
from xlxmert.utils.checkpoint import CHECKPOINT_DIR, load_latest_checkpoint, save_checkpoint
from xlxmert.utils.config import config_to_dict
from xlxmert.utils.model_folder import update_model_index
from xlxmert.utils.seeding import derive_seed, torch_generator
from xlxmert.visual.vocabulary import VisualVocabulary

# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------


def hinge_discriminator_loss(real_score: torch.Tensor, fake_score: torch.Tensor) -> torch.Tensor:
    """``mean(relu(1 − D(real))) + mean(relu(1 + D(fake)))``; scores: FloatTensor[B]."""
    return F.relu(1 - real_score).mean() + F.relu(1 + fake_score).mean()


def hinge_generator_loss(fake_score: torch.Tensor) -> torch.Tensor:
    """``−mean(D(fake))``; fake_score: FloatTensor[B]."""
    return -fake_score.mean()


def cluster_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """AC-GAN per-cell visual-word cross-entropy, averaged over cells and images.

    logits: FloatTensor[B, N*N, K]; ids: LongTensor[B, N*N].
    """
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids.reshape(-1))


def feature_matching_loss(
    fake_features: list[torch.Tensor], real_features: list[torch.Tensor]
) -> torch.Tensor:
    """pix2pixHD feature matching: Huber (SmoothL1) between D's block outputs on fake and on real,
    mean per block, summed over blocks. Pass every block but the last (the heads read that one).
    Real features are targets: no gradient flows into them."""
    return sum(
        F.smooth_l1_loss(f.float(), r.detach().float())
        for f, r in zip(fake_features, real_features, strict=True)
    )


class PerceptualLoss(nn.Module):
    """Huber distance between the stages of a frozen feature network, mean per stage, summed.

    ``network`` needs ``feature_stages(images: FloatTensor[B, 3, H, W] in [-1, 1]) -> list[Tensor]``:
    ImageNet ResNet-50 stages 1–4 (``xlxmert.visual.backbones.ResNetBackbone``) for real images, the
    ShapeScenes backbone (``ShapesBackbone``) for the built-in world, or any module with that method.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        if not callable(getattr(network, "feature_stages", None)):
            raise XLXMERTError(
                f"{type(network).__name__} has no feature_stages(images) method; the perceptual loss needs "
                "a network such as ShapesBackbone or ResNetBackbone"
            )
        self.network = network.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.network.eval()  # frozen: never switch normalisation layers to batch statistics
        return self

    def real_features(self, real: torch.Tensor) -> list[torch.Tensor]:
        """Targets, computed without a graph: real: FloatTensor[B, 3, H, W] in [-1, 1]."""
        with torch.no_grad():
            return [f.detach() for f in self.network.feature_stages(real)]

    def forward(self, fake: torch.Tensor, real: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """fake: FloatTensor[B, 3, H, W] in [-1, 1]; real: the same shape, or its real_features()."""
        targets = self.real_features(real) if isinstance(real, torch.Tensor) else real
        stages = self.network.feature_stages(fake)
        return sum(F.smooth_l1_loss(f.float(), t.float()) for f, t in zip(stages, targets, strict=True))


def load_perceptual_network(folder: str | Path) -> nn.Module:
    """A perceptual network from an xlxmert backbone folder or a local transformers ResNet folder."""
    from xlxmert.visual.backbones import ResNetBackbone, load_backbone

    folder = Path(folder)
    if not folder.is_dir():
        raise XLXMERTError(
            f"perceptual network folder not found: {folder}; pass a backbone folder (e.g. VOCAB/backbone) "
            "or a local ResNet-50 folder"
        )
    config = folder / "config.json"
    kind = json.loads(config.read_text()).get("kind") if config.is_file() else None
    return load_backbone(folder) if kind else ResNetBackbone.from_pretrained(folder)


# ---------------------------------------------------------------------------------------------
# Data: images paired with their ground-truth visual ids
# ---------------------------------------------------------------------------------------------


def _image_files(split_dir: Path, split: str) -> dict[int, str]:
    """image id → file name, from the split's captions (COCO format) or scenes file."""
    for name in (f"captions_{split}.json", f"scenes_{split}.json"):
        path = split_dir / name
        if path.is_file():
            try:
                images = json.loads(path.read_text())["images"]
                return {int(im["id"]): im["file_name"] for im in images}
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise XLXMERTError(f"{path} is not a COCO-style file with an images list ({exc})") from None
    raise XLXMERTError(
        f"no captions_{split}.json or scenes_{split}.json in {split_dir}; generate the split with "
        "`xlxmert data shapes` or point --data at a COCO-format data root"
    )


def load_ground_truth_ids(vocab_dir: str | Path, split: str) -> tuple[np.ndarray, list[int]]:
    """``(ids: uint16 [num_images, N*N], image_ids)`` written by ``xlxmert vocab assign``."""
    from xlxmert.visual.vocabulary import load_ids

    return load_ids(vocab_dir, split)


class GroundTruthGrids:
    """The images of one split with their ground-truth visual ids.

    ``images(indices) -> FloatTensor[B, 3, S, S] in [-1, 1]``; ``ids[indices] -> LongTensor[B, N*N]``.
    Images are decoded on demand (a PNG decode is a small fraction of a GAN step); ids stay in memory.
    """

    def __init__(self, data_root: str | Path, split: str, vocab_dir: str | Path, size: int) -> None:
        ids, image_ids = load_ground_truth_ids(vocab_dir, split)
        split_dir = Path(data_root) / split
        files = _image_files(split_dir, split)
        missing = [i for i in image_ids if i not in files]
        if missing:
            raise XLXMERTError(
                f"{len(missing)} image ids of vocab ids/{split}.json (e.g. {missing[0]}) are not in "
                f"{split_dir}; were the ids assigned for another data root?"
            )
        if not len(image_ids):
            raise XLXMERTError(f"split {split!r} has no images")
        # COCO gives bare file names under images/; ShapeScenes' file_name already starts with images/.
        self.paths = [
            split_dir / files[i] if (split_dir / files[i]).is_file() else split_dir / "images" / files[i]
            for i in image_ids
        ]
        self.image_ids = image_ids
        self.ids = torch.from_numpy(ids.astype(np.int64))
        self.size = size
        self.grid_size = int(round(math.sqrt(ids.shape[1])))
        if self.grid_size**2 != ids.shape[1]:
            raise XLXMERTError(f"ids/{split}.npy has {ids.shape[1]} cells per image, not a square grid")

    def __len__(self) -> int:
        return len(self.paths)

    def images(self, indices: list[int] | torch.Tensor) -> torch.Tensor:
        return torch.stack([pil_to_tensor(load_image(self.paths[int(i)], self.size)) for i in indices])


def batch_indices(step: int, batch_size: int, num_items: int, seed: int) -> torch.Tensor:
    """Indices of batch ``step``: a fresh seeded permutation per epoch, batches running across epoch
    ends. A pure function of the step, so resuming needs no sampler state."""
    positions = torch.arange(step * batch_size, (step + 1) * batch_size)
    epochs, offsets = positions // num_items, positions % num_items
    out = torch.empty(batch_size, dtype=torch.long)
    for epoch in epochs.unique().tolist():
        perm = torch.randperm(num_items, generator=torch_generator(seed * 1_000_003 + epoch))
        mask = epochs == epoch
        out[mask] = perm[offsets[mask]]
    return out


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratorTrainConfig:
    """Generator training (paper appendix D.4). The generator's D and N come from the vocabulary;
    ``channels`` and ``spade_hidden`` override the widths of its ``preset``."""

    output_size: int = field(default=64, metadata={"help": "image side", "choices": (16, 32, 64, 128, 256)})
    preset: str = field(
        default="shapes-64", metadata={"help": "G's widths", "choices": ("shapes-64", "paper")}
    )
    channels: int | None = field(default=None, metadata={"help": "generator width (none: the preset's)"})
    spade_hidden: int | None = field(default=None, metadata={"help": "SPADE width (none: the preset's)"})
    discriminator_channels: int = field(default=64, metadata={"help": "discriminator width"})
    split: str = field(default="train", metadata={"help": "training split"})
    eval_split: str = field(default="val", metadata={"help": "held-out split for the reconstruction report"})
    steps: int = field(default=2000, metadata={"help": "training steps"})
    batch_size: int = field(default=16, metadata={"help": "images per step"})
    lr_generator: float = field(default=4e-4, metadata={"help": "G's Adam learning rate"})
    lr_discriminator: float = field(default=1e-4, metadata={"help": "D's Adam learning rate"})
    betas: tuple[float, float] = field(default=(0.0, 0.999), metadata={"help": "Adam betas"})
    eps: float = field(default=1e-7, metadata={"help": "Adam epsilon"})
    grad_clip: float = field(default=1.0, metadata={"help": "gradient norm clip"})
    perceptual_weight: float = field(default=10.0, metadata={"help": "perceptual loss weight"})
    adversarial_weight: float = field(default=1.0, metadata={"help": "hinge GAN loss weight"})
    feature_matching_weight: float = field(default=10.0, metadata={"help": "D feature-matching loss weight"})
    cluster_weight: float = field(default=1.0, metadata={"help": "visual-word (cluster) loss weight"})
    sample_every: int = field(default=200, metadata={"help": "steps between sample sheets"})
    checkpoint_every: int = field(default=200, metadata={"help": "steps between checkpoints"})
    num_samples: int = field(default=8, metadata={"help": "images per sample sheet"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    bf16: bool = field(default=False, metadata={"help": "bfloat16 autocast"})
    channels_last: bool = field(default=True, metadata={"help": "NHWC layout (faster convs on CPU)"})
    perceptual: str | None = field(
        default=None, metadata={"help": "perceptual network (none: VOCAB/backbone)"}
    )
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "sample_every", "checkpoint_every", "num_samples"):
            if getattr(self, name) < 1:
                raise XLXMERTError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.output_size not in (16, 32, 64, 128, 256):
            raise XLXMERTError(
                f"output size must be one of 64, 128, 256 (16, 32 for tests), got {self.output_size}"
            )

    def generator_config(self, input_dim: int, grid_size: int) -> GeneratorConfig:
        overrides = {k: v for k, v in (("channels", self.channels), ("spade_hidden", self.spade_hidden)) if v}
        return GeneratorConfig.from_preset(
            self.preset, input_dim=input_dim, grid_size=grid_size, output_size=self.output_size, **overrides
        )


# Fields that may change between a run and its resumption (extending or re-scheduling a run).
_RESUMABLE_CHANGES = {"steps", "sample_every", "checkpoint_every", "num_samples", "device"}


@dataclass
class GeneratorTrainResult:
    """What a run did: final step, per-step losses, throughput, reconstruction quality."""

    step: int
    history: list[dict[str, float]] = field(default_factory=list)
    images_per_second: float = float("nan")
    quality: dict[str, float] | None = None
    generator_dir: Path | None = None


class _GanStep:
    """One optimisation step of G and D from a single forward pass of each (see module doc)."""

    def __init__(self, generator, discriminator, perceptual, opt_g, opt_d, config, accelerator) -> None:
        self.g, self.d, self.perceptual = generator, discriminator, perceptual
        self.opt_g, self.opt_d = opt_g, opt_d
        self.cfg, self.acc = config, accelerator
        self.g_params = [p for p in generator.parameters() if p.requires_grad]
        self.d_params = [p for p in discriminator.parameters() if p.requires_grad]

    def __call__(
        self, real: torch.Tensor, features: torch.Tensor, ids: torch.Tensor, noise_rng
    ) -> dict[str, float]:
        cfg, b = self.cfg, real.shape[0]
        with torch.autocast(self.acc.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            fake = self.g(features, noise=True, generator=noise_rng)
            out = self.d(torch.cat([real, fake.to(real.dtype)]))
            perceptual = self.perceptual(fake, real)
        score = out.score.float()
        real_score, fake_score = score[:b], score[b:]
        fake_logits, real_logits = out.cluster_logits[b:], out.cluster_logits[:b]
        matched = out.features[:-1]
        fm = feature_matching_loss([f[b:] for f in matched], [f[:b] for f in matched])
        cls_fake, cls_real = cluster_loss(fake_logits, ids), cluster_loss(real_logits, ids)
        adv_g = hinge_generator_loss(fake_score)
        adv_d = hinge_discriminator_loss(real_score, fake_score)
        loss_g = (
            cfg.perceptual_weight * perceptual
            + cfg.adversarial_weight * adv_g
            + cfg.feature_matching_weight * fm
            + cfg.cluster_weight * cls_fake
        )
        loss_d = cfg.adversarial_weight * adv_d + cfg.cluster_weight * (cls_real + cls_fake)

        self.opt_g.zero_grad(set_to_none=True)
        self.opt_d.zero_grad(set_to_none=True)
        self.acc.backward(loss_g, inputs=self.g_params, retain_graph=True)
        self.acc.backward(loss_d, inputs=self.d_params)
        self.acc.clip_grad_norm_(self.g_params, cfg.grad_clip)
        self.acc.clip_grad_norm_(self.d_params, cfg.grad_clip)
        self.opt_g.step()
        self.opt_d.step()
        with torch.no_grad():
            l1 = (fake.float() - real.float()).abs().mean()
        return {
            "loss_g": loss_g.item(),
            "loss_d": loss_d.item(),
            "perceptual": perceptual.item(),
            "feature_matching": fm.item(),
            "adv_g": adv_g.item(),
            "adv_d": adv_d.item(),
            "cluster_fake": cls_fake.item(),
            "cluster_real": cls_real.item(),
            "l1": l1.item(),
        }


def _checkpoint_state(step_fn: _GanStep, g, d, accelerator, config: GeneratorTrainConfig) -> dict:
    state = {
        "generator": g.state_dict(),
        "discriminator": d.state_dict(),
        "optimizer_g": step_fn.opt_g.state_dict(),
        "optimizer_d": step_fn.opt_d.state_dict(),
        "train_config": json.dumps(config_to_dict(config)),
    }
    if accelerator.scaler is not None:  # fp16 (accelerate launch --mixed_precision fp16)
        state["scaler"] = accelerator.scaler.state_dict()
    return state


def _resume(out: Path, g, d, opt_g, opt_d, accelerator, config: GeneratorTrainConfig) -> int:
    """Load the newest intact checkpoint of ``out`` (see utils.checkpoint); return its step (0: none)."""
    ckpt = load_latest_checkpoint(out / CHECKPOINT_DIR)
    if ckpt is None:
        return 0
    saved, current = json.loads(ckpt.state["train_config"]), config_to_dict(config)
    changed = sorted(k for k in current if k not in _RESUMABLE_CHANGES and saved.get(k) != current[k])
    if changed:
        raise XLXMERTError(
            f"{out} holds a run with different settings ({', '.join(changed)}); "
            "use the same settings to resume, or a new --out"
        )
    g.load_state_dict(ckpt.state["generator"])
    d.load_state_dict(ckpt.state["discriminator"])
    opt_g.load_state_dict(ckpt.state["optimizer_g"])
    opt_d.load_state_dict(ckpt.state["optimizer_d"])
    if accelerator.scaler is not None and "scaler" in ckpt.state:
        accelerator.scaler.load_state_dict(ckpt.state["scaler"])
    return ckpt.step


def sample_grid(originals: torch.Tensor, reconstructions: torch.Tensor, pairs_per_row: int = 4):
    """A PIL grid of (original | reconstruction) pairs, ``pairs_per_row`` pairs per row."""
    tiles = []
    for orig, rec in zip(tensor_to_pil(originals), tensor_to_pil(reconstructions)):
        tiles += [orig, rec]
    return image_grid(tiles, columns=2 * min(pairs_per_row, len(originals)))


def train_generator(
    data_root: str | Path,
    vocab_dir: str | Path,
    out: str | Path,
    config: GeneratorTrainConfig | None = None,
    perceptual_network: nn.Module | None = None,
    progress: bool = True,
) -> GeneratorTrainResult:
    """Train G and D on ``data_root/<split>`` with ground-truth ids from ``vocab_dir``; write ``out``.

    Rerunning with the same ``out`` resumes exactly from the newest intact checkpoint in
    ``out/checkpoints`` (weights, optimisers; the data position and every random draw are
    functions of the step); a larger ``config.steps`` extends a finished run.
    ``perceptual_network`` overrides ``config.perceptual`` (any module with ``feature_stages``).

    Under ``accelerate launch`` or ``torchrun`` each process takes its slice of the global batch
    (``batch_size`` is per process), gradients are averaged across processes (DDP), and only the
    main process writes checkpoints, samples and the component; ``history`` holds the losses
    averaged over the processes.
    """
    from accelerate import Accelerator

    config = config or GeneratorTrainConfig()
    out = Path(out)
    centroids = VisualVocabulary.from_pretrained(vocab_dir).centroids
    data = GroundTruthGrids(data_root, config.split, vocab_dir, config.output_size)
    num_clusters, dim = centroids.shape
    if int(data.ids.max()) >= num_clusters:
        raise XLXMERTError(
            f"ids/{config.split}.npy holds ids ≥ K = {num_clusters}; reassign with this vocabulary"
        )
    g_config = config.generator_config(dim, data.grid_size)
    d_config = DiscriminatorConfig.for_generator(g_config, num_clusters, config.discriminator_channels)

    if perceptual_network is None:
        perceptual_network = load_perceptual_network(config.perceptual or Path(vocab_dir) / "backbone")
    perceptual = PerceptualLoss(perceptual_network)

    torch.manual_seed(config.seed)  # init of G and D
    generator = SpadeGenerator(g_config)
    discriminator = Discriminator(d_config, centroids)
    # bf16 autocast is applied in the step itself rather than through Accelerate's mixed_precision,
    # which is fixed once per process (benchmarks and tests compare both in one process).
    accelerator = Accelerator(cpu=config.device == "cpu")
    device = accelerator.device
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    generator.to(memory_format=memory_format)
    discriminator.to(memory_format=memory_format)
    perceptual.to(device=device, memory_format=memory_format)
    opt_g = torch.optim.Adam(
        generator.parameters(), lr=config.lr_generator, betas=tuple(map(float, config.betas)), eps=config.eps
    )
    opt_d = torch.optim.Adam(
        discriminator.parameters(),
        lr=config.lr_discriminator,
        betas=tuple(map(float, config.betas)),
        eps=config.eps,
    )
    generator, discriminator, opt_g, opt_d = accelerator.prepare(generator, discriminator, opt_g, opt_d)
    raw_g, raw_d = accelerator.unwrap_model(generator), accelerator.unwrap_model(discriminator)
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    noise_rng = torch_generator(config.seed + 1, device)
    centroids_dev = centroids.to(device)

    step = _resume(out, raw_g, raw_d, opt_g, opt_d, accelerator, config)
    if main:
        out.mkdir(parents=True, exist_ok=True)

    eval_data = _eval_data(data_root, vocab_dir, config) or data
    sample_idx = list(range(min(config.num_samples, len(eval_data))))
    sample_real = eval_data.images(sample_idx)
    sample_ids = eval_data.ids[sample_idx]

    train_step = _GanStep(generator, discriminator, perceptual, opt_g, opt_d, config, accelerator)
    generator.train()
    discriminator.train()
    history: list[dict[str, float]] = []
    busy = 0.0
    bar = tqdm(
        total=config.steps,
        initial=step,
        desc="generator",
        disable=not progress or not main,
        dynamic_ncols=True,
    )

    def rank_batch(s: int) -> torch.Tensor:  # this process's slice of global batch s
        return batch_indices(s, config.batch_size * world, len(data), config.seed)[
            rank * config.batch_size : (rank + 1) * config.batch_size
        ]

    # Images of the next batch are decoded in a background thread while this one trains.
    decoder = ThreadPoolExecutor(max_workers=1)
    pending = decoder.submit(data.images, rank_batch(step)) if step < config.steps else None
    while step < config.steps:
        idx = rank_batch(step)
        t0 = time.perf_counter()
        real = pending.result().to(device).contiguous(memory_format=memory_format)
        if step + 1 < config.steps:
            pending = decoder.submit(data.images, rank_batch(step + 1))
        ids = data.ids[idx].to(device)
        feats = features_from_ids(ids, centroids_dev, g_config.grid_size).contiguous(
            memory_format=memory_format
        )
        # Every random draw of a step is a function of (seed, step, rank): resume needs no RNG state.
        noise_rng.manual_seed(derive_seed(config.seed, step, rank, 1))
        torch.manual_seed(derive_seed(config.seed, step, rank, 2))
        losses = train_step(real, feats, ids, noise_rng)
        if world > 1:
            mean = accelerator.reduce(torch.tensor(list(losses.values()), device=device), "mean")
            losses = dict(zip(losses, mean.tolist()))
        busy += time.perf_counter() - t0
        step += 1
        history.append({"step": step, **losses})
        bar.update(1)
        bar.set_postfix(
            g=f"{losses['loss_g']:.3f}",
            d=f"{losses['loss_d']:.3f}",
            perc=f"{losses['perceptual']:.3f}",
            l1=f"{losses['l1']:.3f}",
        )
        if main and (step % config.sample_every == 0 or step == config.steps):
            rec = reconstruct(raw_g, sample_ids, centroids, seed=config.seed)
            (out / "samples").mkdir(exist_ok=True)
            sample_grid(sample_real, rec).save(out / "samples" / f"step_{step:06d}.png")
        if step % config.checkpoint_every == 0 or step == config.steps:
            if main:
                state = _checkpoint_state(train_step, raw_g, raw_d, accelerator, config)
                save_checkpoint(out / CHECKPOINT_DIR, step, state)
            accelerator.wait_for_everyone()
    bar.close()
    decoder.shutdown()

    gen_dir = out / "generator"
    quality = None
    if not main:
        return GeneratorTrainResult(step, history, float("nan"), quality, gen_dir)
    raw_g.save_pretrained(gen_dir)
    update_model_index(out, {"generator": raw_g})
    if eval_data is not data:
        quality = reconstruction_quality(
            raw_g,
            centroids,
            eval_data.images(range(len(eval_data))),
            eval_data.ids,
            perceptual=perceptual,
            cell_agreement=_default_agreement(vocab_dir, data),
        )
        (gen_dir / "report.json").write_text(
            json.dumps({"split": config.eval_split, **quality}, indent=2) + "\n"
        )
    ips = len(history) * config.batch_size / busy if busy else float("nan")
    return GeneratorTrainResult(step, history, ips, quality, gen_dir)


def _eval_data(data_root, vocab_dir, config: GeneratorTrainConfig) -> GroundTruthGrids | None:
    """Held-out scenes with ground-truth ids, if ``xlxmert vocab assign`` was run on the eval split."""
    if not (Path(vocab_dir) / "ids" / f"{config.eval_split}.npy").is_file():
        return None
    return GroundTruthGrids(data_root, config.eval_split, vocab_dir, config.output_size)


def _default_agreement(vocab_dir, data: GroundTruthGrids) -> Callable | None:
    """ShapesBackbone per-cell agreement when the vocabulary was built on one (the built-in world)."""
    from xlxmert.visual.backbones import ShapesBackbone, load_backbone

    folder = Path(vocab_dir) / "backbone"
    if not folder.is_dir():
        return None
    backbone = load_backbone(folder)
    return shapes_cell_agreement(backbone, data.grid_size) if isinstance(backbone, ShapesBackbone) else None


__all__ = [
    "GeneratorTrainConfig",
    "GeneratorTrainResult",
    "GroundTruthGrids",
    "PerceptualLoss",
    "batch_indices",
    "cluster_loss",
    "feature_matching_loss",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "load_perceptual_network",
    "reconstruct",
    "reconstruction_quality",
    "sample_grid",
    "shapes_cell_agreement",
    "train_generator",
]
