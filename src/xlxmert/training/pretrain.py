"""Pretraining X-LXMERT (and the LXMERT+Grid baseline): paper §5, C.5.

One task per batch (C.5): **visual masking** (text intact; CCC, or MVFR regression for the
baseline), **word masking** (image intact; MLM) or **matching** (nothing masked; half of the texts
swapped for another image's; ITM, plus the VQA soft-score QA loss on matched question pairs). The
task cycles (``task_choice="cycle"``) or is drawn uniformly (``"random"``, the paper's wording).

Exact resume: every random draw of step ``s`` (batch masks, swaps, task, dropout) comes from a
seed derived from ``(seed, s, rank)``, and the data position is a cursor per example pool into
epoch permutations seeded by ``(seed, pool, epoch)``. The step number therefore *is* the RNG
state: a checkpoint holds the model, optimiser, scheduler, step and cursors, and a resumed run
repeats the uninterrupted one's losses bit for bit (on any number of processes).

Runs on one CPU process by default; under ``accelerate launch`` (GPUs) or ``torchrun`` (CPUs, gloo)
each process takes its slice of the global batch (``batch_size`` is per process).
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from xlxmert.data.datasets import AnswerVocabulary
from xlxmert.errors import XLXMERTError
from xlxmert.models.families import build_transformer
from xlxmert.models.transformer import (
    XLxmertConfig,
    XLxmertForPreTraining,
    grid_size_of,
)
from xlxmert.training.pretrain_batches import (
    Batch,
    EpochStream,
    PretrainData,
    ccc_class_weights,
    load_pretrain_data,
    make_batch,
    object_cells_of,
)
from xlxmert.training.pretrain_losses import EVAL_MASK_RATIOS, batch_losses, evaluate
from xlxmert.utils.checkpoint import CHECKPOINT_DIR, load_latest_checkpoint, save_checkpoint
from xlxmert.utils.config import PresetConfig, config_to_dict, load_config, same_settings, save_config
from xlxmert.utils.model_folder import copy_component, update_model_index
from xlxmert.utils.seeding import derive_seed as _seed_of
from xlxmert.utils.weights import load_weights
from xlxmert.visual.vocabulary import VisualVocabulary

__all__ = [
    "Batch",
    "EVAL_MASK_RATIOS",
    "EpochStream",
    "PretrainConfig",
    "PretrainData",
    "batch_losses",
    "ccc_class_weights",
    "evaluate",
    "load_pretrain_data",
    "make_batch",
    "object_cells_of",
    "pretrain",
]

TASKS = ("visual", "text", "match")
METRICS_FILE = "metrics.csv"
LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig(PresetConfig):
    """Optimisation and the paper's ablation switches (Table 3).

    ``batch_size`` is per process. ``visual_masking``: ``"uniform"`` (X-LXMERT) or ``"bernoulli"``
    (LXMERT, rate ``mask_prob``). ``ccc_data``: texts the visual-masking task pairs with images,
    ``"captions"`` only (X-LXMERT's "updated pre-training data") or ``"all"`` (questions too).
    ``task_choice``: ``"cycle"`` or ``"random"``. ``task_ratio``: how many visual-masking, word-masking
    and matching batches make one cycle (``"random"``: the tasks' relative probabilities); the paper
    weighs them equally, ``(1, 1, 1)``, and painting only learns from the first. ``qa``: load VQA
    questions (used as texts by the text/matching tasks and for the QA loss). ``answer_min_count``:
    answers kept for the QA head.
    ``mixed_precision``: ``"no"``, ``"bf16"`` or ``"fp16"`` (Accelerate). ``caption_dropout``: in
    visual-masking batches, the probability that a text is replaced by the empty caption
    (``[CLS] [SEP]``), so the model also learns to paint unconditionally and classifier-free
    guidance has a trained unconditional prediction (not in the paper; 0 = off).
    ``full_mask_prob``: in visual-masking batches, the probability that an example has every cell
    masked, the state painting starts from (not in the paper; 0 = off). Where one visible cell
    reveals most of the rest (ShapeScenes' background is one colour), the caption only helps CCC
    when nearly every cell is masked, which uniform masking draws for 1 example in M.
    ``text_masking``: ``"bernoulli"`` (BERT's, rate ``mask_prob``) or ``"uniform"`` (a uniform share
    of each text's words, up to all of them, the state captioning starts from; not in the paper).
    ``ccc_class_balance`` β: weights CCC's cross-entropy by ``(n_k / mean n)^-β`` for target word
    k, n_k its count in the training split's grids (+1), so rare words (objects, where backgrounds
    fill most cells) weigh more; 0 is the paper's unweighted loss, 1 inverse frequency (not in
    the paper).
    """

    steps: int = field(metadata={"help": "optimizer updates"})
    batch_size: int = field(metadata={"help": "examples per update, per process"})
    lr: float = field(metadata={"help": "AdamW peak learning rate"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(default=0.05, metadata={"help": "share of updates in linear warm-up"})
    visual_masking: str = field(
        default="uniform",
        metadata={
            "help": "uniform (X-LXMERT) or bernoulli (LXMERT; --variant grid's default)",
            "choices": ("uniform", "bernoulli"),
        },
    )
    mask_prob: float = field(default=0.15, metadata={"help": "Bernoulli and BERT masking rate"})
    text_masking: str = field(
        default="bernoulli",
        metadata={
            "help": "word masking: BERT's at --mask-prob or a uniform share of the words, up to all",
            "choices": ("bernoulli", "uniform"),
        },
    )
    ccc_data: str = field(
        default="captions",
        metadata={
            "help": "texts for visual masking: captions only or questions too",
            "choices": ("captions", "all"),
        },
    )
    caption_dropout: float = field(
        default=0.0, metadata={"help": "visual masking: probability of the empty caption (for guidance)"}
    )
    full_mask_prob: float = field(
        default=0.0, metadata={"help": "visual masking: probability that every cell is masked"}
    )
    ccc_class_balance: float = field(
        default=0.0,
        metadata={
            "help": "weight CCC by (word frequency)^-BETA, BETA in [0, 1] (0: the paper)",
            "metavar": "BETA",
        },
    )
    task_choice: str = field(
        default="cycle", metadata={"help": "task per batch", "choices": ("cycle", "random")}
    )
    task_ratio: tuple[int, int, int] = field(
        default=(1, 1, 1),
        metadata={
            "help": "visual-masking, word-masking and matching batches per cycle (1,1,1: the paper)",
            "metavar": "V,T,M",
        },
    )
    qa: bool = field(default=True, metadata={"help": "use VQA questions (texts and the QA loss)"})
    answer_min_count: int = field(default=1, metadata={"help": "answers this frequent join the QA head"})
    checkpoint_every: int = field(default=500, metadata={"help": "updates between checkpoints"})
    eval_every: int = field(default=500, metadata={"help": "updates between validations"})
    eval_samples: int = field(default=256, metadata={"help": "validation captions"})
    keep_checkpoints: int = field(default=2, metadata={"help": "checkpoints kept on disk"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    mixed_precision: str = field(
        default="no", metadata={"help": "autocast (Accelerate)", "choices": ("no", "bf16", "fp16")}
    )
    split: str = field(default="train", metadata={"help": "training split"})
    val_split: str = field(default="val", metadata={"help": "validation split"})

    PRESET_KIND: ClassVar[str] = "pretraining"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # C.5: 20 epochs of ~9.2M sentences at batch 920 (4 GPUs × 230), lr 1e-5, fp16 (Apex O1).
        "paper": dict(
            steps=200_000,
            batch_size=230,
            lr=1e-5,
            answer_min_count=9,
            checkpoint_every=5000,
            eval_every=5000,
            mixed_precision="fp16",
        ),
        # From scratch on ShapeScenes on a CPU: a smaller model tolerates (and needs) a larger lr.
        "shapes-64": dict(steps=3000, batch_size=64, lr=3e-4, checkpoint_every=250, eval_every=250),
        # The same on one GPU (scripts/pretrain_gpu.sh): 8× the batch, bf16.
        "shapes-64-large": dict(
            steps=6000,
            batch_size=256,
            lr=5e-4,
            checkpoint_every=500,
            eval_every=500,
            eval_samples=512,
            mixed_precision="bf16",
        ),
    }

    def __post_init__(self) -> None:
        checks = {
            "visual_masking": ("uniform", "bernoulli"),
            "text_masking": ("bernoulli", "uniform"),
            "ccc_data": ("captions", "all"),
            "task_choice": ("cycle", "random"),
            "mixed_precision": ("no", "bf16", "fp16"),
        }
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise XLXMERTError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise XLXMERTError(
                f"steps and batch_size must be positive, got {self.steps} and {self.batch_size}"
            )
        if not 0.0 <= self.caption_dropout < 1.0:
            raise XLXMERTError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")
        if not 0.0 <= self.full_mask_prob <= 1.0:
            raise XLXMERTError(f"full_mask_prob must be in [0, 1], got {self.full_mask_prob}")
        if not 0.0 <= self.ccc_class_balance <= 1.0:
            raise XLXMERTError(f"ccc_class_balance must be in [0, 1], got {self.ccc_class_balance}")
        if not 0.0 < self.mask_prob <= 1.0:
            raise XLXMERTError(f"mask_prob must be in (0, 1], got {self.mask_prob}")
        ratio = tuple(self.task_ratio)
        if len(ratio) != len(TASKS) or any(int(r) != r or r < 0 for r in ratio) or sum(ratio) == 0:
            raise XLXMERTError(
                f"task_ratio must be {len(TASKS)} non-negative whole numbers (visual, text, match) "
                f"with a positive sum, got {self.task_ratio}"
            )
        object.__setattr__(self, "task_ratio", tuple(int(r) for r in ratio))
        if self.checkpoint_every < 1 or self.eval_every < 1 or self.keep_checkpoints < 1:
            raise XLXMERTError("checkpoint_every, eval_every and keep_checkpoints must be at least 1")


# -- the loop --------------------------------------------------------------------------------------
def linear_warmup_decay(steps: int, warmup_ratio: float):
    """LR factor of update ``s`` (0-based): linear warm-up over ``warmup_ratio·steps`` updates, then
    linear decay to 0 at ``steps`` (paper C.5)."""
    warmup = max(1, int(round(warmup_ratio * steps)))

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        return max(0.0, (steps - s) / max(1, steps - warmup))

    return factor


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # BERT's recipe: no decay on biases and LayerNorm weights (nor on the mask feature).
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _task_of(step: int, config: PretrainConfig) -> str:
    """The task of update ``step``: the ``task_ratio`` cycle, or a draw weighted by it."""
    cycle = [task for task, n in zip(TASKS, config.task_ratio) for _ in range(n)]
    if config.task_choice == "cycle":
        return cycle[step % len(cycle)]
    return cycle[int(np.random.default_rng(_seed_of(config.seed, step, 7)).integers(len(cycle)))]


def _comparable(cfg: PretrainConfig) -> dict[str, Any]:
    keep = config_to_dict(cfg)
    for name in ("steps", "checkpoint_every", "eval_every", "eval_samples", "keep_checkpoints"):
        keep.pop(name)
    return keep


class MetricsLog:
    """``out/metrics.csv`` (columns step, split, metric, value), plus TensorBoard when installed."""

    def __init__(self, out: Path, resume_step: int, enabled: bool) -> None:
        self.path = out / METRICS_FILE
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        if self.path.is_file():
            # Rows logged after the checkpoint we resume from would be repeated: drop them.
            with self.path.open() as f:
                rows = [r for r in csv.reader(f)][1:]
            rows = [r for r in rows if r and r[0].isdigit() and int(r[0]) <= resume_step]
        else:
            rows = []
        with self.path.open("w", newline="") as f:
            csv.writer(f).writerows([["step", "split", "metric", "value"], *rows])
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step + 1)
        except ImportError:
            self.writer = None

    def log(self, step: int, split: str, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerows([[step, split, k, f"{v:.9g}"] for k, v in metrics.items()])
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _write_model_folder(
    out: Path, model: XLxmertForPreTraining, vocab_dir: Path, tokenizer: Any, config: PretrainConfig
) -> None:
    """Make ``out`` a model folder: transformer/ + tokenizer/, vocabulary/ (config + centroids),
    backbone/ (if the vocabulary has one)."""
    vocab_out = out / "vocabulary"
    vocab_out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "centroids.safetensors"):
        if (vocab_dir / name).is_file():
            shutil.copy2(vocab_dir / name, vocab_out / name)
    if (vocab_dir / "backbone").is_dir():
        copy_component(vocab_dir / "backbone", out, "backbone")
    tokenizer.save_pretrained(out / "tokenizer")
    model.save_pretrained(out / "transformer")
    save_config(config, out, name="pretrain_config.json")
    update_model_index(out, {"transformer": model, "tokenizer": tokenizer}, variant=model.config.variant)


def pretrain(
    data_root: str | Path,
    vocab_dir: str | Path,
    tokenizer: Any,
    out: str | Path,
    transformer_config: XLxmertConfig,
    pretrain_config: PretrainConfig,
    features_dir: str | Path | None = None,
    progress: bool = True,
    init_from: str | Path | None = None,
) -> XLxmertForPreTraining:
    """Pretrain on ``data_root/<split>`` and write the model folder ``out`` (see module docstring).

    ``init_from``: a model folder whose transformer weights start the run (continued pretraining,
    e.g. with new settings); its transformer config must equal this run's. A checkpoint in
    ``out/checkpoints`` wins over it (resume).

    ``tokenizer``: a ``TextTokenizer`` or its folder. ``transformer_config``'s data-decided sizes
    (vocab_size, grid_size, num_clusters, feature_dim, num_answers) are replaced by those of the
    tokenizer, vocabulary and answer list. Rerunning the same call resumes from the latest
    checkpoint in ``out/checkpoints``. Returns the trained model (unwrapped, eval mode).
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState

    from xlxmert.data.tokenizer import TextTokenizer

    pc = pretrain_config
    out, vocab_dir = Path(out), Path(vocab_dir)
    if not isinstance(tokenizer, TextTokenizer) and isinstance(tokenizer, (str, Path)):
        tokenizer = TextTokenizer.from_pretrained(tokenizer)
    if transformer_config.exact_features and features_dir is None:
        raise XLXMERTError(
            "the +Grid variants read exact features: pass --features FEATS (xlxmert features extract)"
        )

    # Accelerate keeps its precision setting in a process-wide singleton; a second pretrain() call in
    # the same process (notebook, tests) may want another one. The distributed state is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    # Some heads are idle in some tasks (e.g. MLM during visual masking): DDP must allow that.
    # cpu=True without CUDA lets torchrun's processes form a gloo group (Accelerate only builds a
    # multi-CPU group when told it is on CPU).
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=pc.mixed_precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    rank, world = accelerator.process_index, accelerator.num_processes
    main = accelerator.is_main_process

    answers = None
    annotations = Path(data_root) / pc.split / f"annotations_{pc.split}.json"
    if pc.qa and annotations.is_file():
        answers = AnswerVocabulary.build(annotations, min_count=pc.answer_min_count)
    data = load_pretrain_data(data_root, vocab_dir, pc.split, answers, features_dir)
    centroids = VisualVocabulary.from_pretrained(vocab_dir).centroids
    cfg = dataclasses.replace(
        transformer_config,
        vocab_size=tokenizer.vocab_size,
        grid_size=grid_size_of(data.visual_ids.shape[1]),
        num_clusters=centroids.shape[0],
        feature_dim=centroids.shape[1] if data.features is None else data.features.shape[-1],
        num_answers=len(answers) if answers is not None else transformer_config.num_answers,
        max_text_length=tokenizer.max_length,
    )
    if int(data.visual_ids.max()) >= cfg.num_clusters:
        raise XLXMERTError(
            f"visual ids reach {int(data.visual_ids.max())} but the vocabulary has {cfg.num_clusters}"
        )
    if data.features is not None and data.features.shape[-1] != centroids.shape[1]:
        raise XLXMERTError(
            f"features are {data.features.shape[-1]}-d but the centroids {centroids.shape[1]}-d: "
            "use the feature store the vocabulary was built from"
        )

    # Validation: the val split when it has visual ids and needs no exact features, else train captions.
    val_data, val_examples = data, data.pool(captions_only=True)[: pc.eval_samples]
    val_ids = vocab_dir / "ids" / f"{pc.val_split}.npy"
    val_caps = Path(data_root) / pc.val_split / f"captions_{pc.val_split}.json"
    if pc.val_split != pc.split and val_ids.is_file() and val_caps.is_file() and not cfg.exact_features:
        val_data = load_pretrain_data(data_root, vocab_dir, pc.val_split, None, object_cells=True)
        val_examples = np.arange(min(pc.eval_samples, len(val_data.texts)))
    majority = int(torch.bincount(data.visual_ids.flatten()).argmax())
    ccc_weights = ccc_class_weights(data.visual_ids, cfg.num_clusters, pc.ccc_class_balance)

    torch.manual_seed(pc.seed)  # initialisation
    model = build_transformer(cfg, centroids)
    if init_from is not None:
        init_dir = Path(init_from) / "transformer"
        init_cfg = load_config(type(cfg), init_dir)
        # Switching CCC's output to the standardized centroids keeps every weight's meaning.
        init_cfg = dataclasses.replace(init_cfg, standardize_ccc_output=cfg.standardize_ccc_output)
        if init_cfg != cfg:
            diff = {
                k: (v, getattr(cfg, k))
                for k, v in config_to_dict(init_cfg).items()
                if v != getattr(cfg, k, None)
            }
            raise XLXMERTError(f"{init_from} has another transformer config than this run: {diff}")
        load_weights(model, init_dir)
    model.answers = None if answers is None else list(answers.answers)
    model.train()
    optimizer = torch.optim.AdamW(_param_groups(model, pc.weight_decay), lr=pc.lr, betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(pc.steps, pc.warmup_ratio))

    captions_only = pc.ccc_data == "captions"
    streams = {
        "visual": EpochStream(data.pool(captions_only), pc.seed, 0),
        "all": EpochStream(data.pool(False), pc.seed, 1),
    }
    start = 0
    resumed = load_latest_checkpoint(out / CHECKPOINT_DIR)
    if resumed is not None:
        state = resumed.state
        same_model = same_settings(state["transformer_config"], config_to_dict(cfg), type(cfg))
        if not same_model or not same_settings(state["pretrain_config"], _comparable(pc), PretrainConfig):
            raise XLXMERTError(
                f"{out} holds a run with other settings ({resumed.path.name}); resume with the same "
                "arguments or choose another --out"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        for name, cursor in state["cursors"].items():
            streams[name].cursor = int(cursor)
        start = resumed.step
    model, optimizer = accelerator.prepare(model, optimizer)
    if resumed is not None and accelerator.scaler is not None and "scaler" in resumed.state:
        accelerator.scaler.load_state_dict(resumed.state["scaler"])
    if ccc_weights is not None:
        ccc_weights = ccc_weights.to(accelerator.device)
    unwrapped = accelerator.unwrap_model(model)

    if main:
        out.mkdir(parents=True, exist_ok=True)
    log = MetricsLog(out, start, enabled=main)
    running: dict[str, float] = {}
    bar = tqdm(
        total=pc.steps, initial=start, disable=not progress or not main, desc="pretrain", dynamic_ncols=True
    )
    for step in range(start, pc.steps):
        task = _task_of(step, pc)
        stream = streams["visual" if task == "visual" else "all"]
        examples = stream.take(pc.batch_size * world)[rank * pc.batch_size : (rank + 1) * pc.batch_size]
        step_seed = _seed_of(pc.seed, step, rank)
        gen = torch.Generator().manual_seed(step_seed)
        torch.manual_seed(step_seed + 1)  # dropout: a function of the step, so resume repeats it
        batch = make_batch(task, examples, data, tokenizer, pc, cfg.num_cells, cfg.num_answers, gen)
        batch = batch.to(accelerator.device)
        losses = batch_losses(model, batch, cfg, ccc_weights)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()

        values = {k: float(v.detach()) for k, v in losses.items()}
        for k, v in values.items():
            running[k] = v if k not in running else 0.95 * running[k] + 0.05 * v
        done = step + 1
        log.log(
            done, "train", {**{f"loss_{k}": v for k, v in values.items()}, "lr": scheduler.get_last_lr()[0]}
        )
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in sorted(running.items())})

        if done % pc.eval_every == 0 or done == pc.steps:
            if main:
                metrics = evaluate(
                    unwrapped,
                    val_data,
                    tokenizer,
                    val_examples,
                    pc.batch_size,
                    pc.seed + 1,
                    majority if cfg.visual_target == "clusters" else None,
                )
                log.log(done, "val", metrics)
                LOG.info(f"step {done}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        if done % pc.checkpoint_every == 0 or done == pc.steps:
            accelerator.wait_for_everyone()
            if main:
                state = {
                    "model": unwrapped.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "cursors": {name: s.cursor for name, s in streams.items()},
                    "transformer_config": config_to_dict(cfg),
                    "pretrain_config": _comparable(pc),
                }
                if accelerator.scaler is not None:  # fp16: the loss scale resumes too
                    state["scaler"] = accelerator.scaler.state_dict()
                save_checkpoint(out / CHECKPOINT_DIR, done, state, keep=pc.keep_checkpoints)
                _write_model_folder(out, unwrapped, vocab_dir, tokenizer, pc)
            accelerator.wait_for_everyone()
    bar.close()
    log.close()
    if main and (start >= pc.steps or not (out / "transformer").is_dir()):
        _write_model_folder(out, unwrapped, vocab_dir, tokenizer, pc)
    accelerator.wait_for_everyone()
    unwrapped.eval()
    return unwrapped
