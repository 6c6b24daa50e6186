"""Fine-tuning on VQA v2, GQA and NLVR2 (paper §5 "Finetuning", C.6; LXMERT's recipes).

The whole transformer trains with a fresh task head (:mod:`xlxmert.models.heads`) on its pooled
output: AdamW, the head at ``head_lr`` (5e-4, C.6) and the transformer at ``lr`` (5e-5: LXMERT's
VQA/NLVR2 fine-tuning rate; the paper's 5e-4 is for the head), linear warm-up then linear decay,
``epochs`` passes over the training split, validation after each epoch and the best epoch kept.
VQA/GQA heads start from the pretrained QA head where the answer sets match. ``from_scratch``
gives the control: the same architecture, randomly initialised.

Output: a copy of the model folder with ``heads/<task>/`` (the head, its answers, the fine-tuned
transformer weights and ``report.json``: validation, optional test scores with breakdowns and the
"majority answer" / "question only" baselines). ``OUT/finetune-<task>/`` holds ``checkpoints/``
(:mod:`xlxmert.utils.checkpoint`) and ``metrics.csv``.

Exact resume as in pretraining: batch ``i`` of epoch ``e`` is a slice of a permutation seeded by
``(seed, e)`` and dropout of update ``s`` is seeded by ``(seed, s)``, so a checkpoint (model,
optimiser, scheduler, step, best score) resumes bit for bit.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from xlxmert.errors import XLXMERTError
from xlxmert.evaluation.metrics.tasks import (
    majority_answer,
    question_only_answers,
    score_gqa,
    score_nlvr2,
    score_vqa,
)
from xlxmert.models.families import build_transformer, load_transformer
from xlxmert.models.heads import (
    HEADS_DIR,
    TASKS,
    TaskModel,
    build_head,
    head_dir,
    init_from_qa_head,
    save_task_head,
)
from xlxmert.training.finetune_data import (
    TaskSplit,
    answer_vocabulary,
    encode_images,
    load_task_split,
    targets,
)
from xlxmert.training.pretrain import MetricsLog, _param_groups, _seed_of, linear_warmup_decay
from xlxmert.utils.checkpoint import CHECKPOINT_DIR, load_latest_checkpoint, save_checkpoint
from xlxmert.utils.config import config_to_dict, same_settings
from xlxmert.utils.model_folder import COMPONENTS, OPTIONAL_COMPONENTS, component_dir, update_model_index

RUN_DIR = "finetune-{task}"
REPORT_FILE = "report.json"
MAIN_METRIC = {"vqa": "score", "gqa": "accuracy", "nlvr2": "accuracy"}
LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of one fine-tuning run.

    ``lr``: the transformer's AdamW rate; ``head_lr``: the head's. ``max_train`` / ``max_eval``:
    use only the first N examples of the training / evaluation splits (None: all).
    ``answer_min_count``: a VQA/GQA answer joins the head's vocabulary when it is the training answer
    this often (the paper's VQA vocabulary: 9). ``test_split``: also score the best epoch there.
    ``mixed_precision``: ``"no"`` or ``"bf16"`` (Accelerate).
    """

    task: str = field(metadata={"help": "vqa, gqa or nlvr2"})
    train_split: str = field(default="train", metadata={"help": "training split"})
    val_split: str = field(
        default="val", metadata={"help": "validated after each epoch; the best epoch is kept"}
    )
    test_split: str | None = field(default=None, metadata={"help": "also score the best epoch on this split"})
    epochs: int = field(default=3, metadata={"help": "passes over the training split"})
    batch_size: int = field(default=32, metadata={"help": "examples per update"})
    lr: float = field(default=5e-5, metadata={"help": "the transformer's learning rate"})
    head_lr: float = field(default=5e-4, metadata={"help": "the task head's learning rate (paper C.6)"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "share of updates in linear warm-up"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    from_scratch: bool = field(default=False, metadata={"help": "control: same architecture, random init"})
    max_train: int | None = field(
        default=None, metadata={"help": "use the first N training examples", "metavar": "N"}
    )
    max_eval: int | None = field(
        default=None, metadata={"help": "use the first N validation / test examples", "metavar": "N"}
    )
    answer_min_count: int = field(
        default=1, metadata={"help": "answers this frequent join the head (the paper's VQA vocabulary: 9)"}
    )
    mixed_precision: str = field(
        default="no", metadata={"help": "autocast (Accelerate)", "choices": ("no", "bf16")}
    )
    checkpoint_every: int = field(default=200, metadata={"help": "updates between checkpoints"})
    keep_checkpoints: int = field(default=2, metadata={"help": "checkpoints kept on disk"})

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise XLXMERTError(f"unknown task {self.task!r}; choose one of {TASKS}")
        if self.mixed_precision not in ("no", "bf16"):
            raise XLXMERTError(f"mixed_precision must be 'no' or 'bf16', got {self.mixed_precision!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise XLXMERTError("epochs, batch_size and checkpoint_every must be at least 1")
        if self.lr <= 0 or self.head_lr <= 0:
            raise XLXMERTError("learning rates must be positive")


def _comparable(cfg: FinetuneConfig) -> dict[str, Any]:
    keep = config_to_dict(cfg)
    for name in ("epochs", "checkpoint_every", "keep_checkpoints", "test_split", "max_eval"):
        keep.pop(name)
    return keep


# -- data on tensors -------------------------------------------------------------------------------
@dataclass
class Encoded:
    """A split on tensors: ``input_ids, attention_mask [n, L]``, ``visual`` per image row
    (``[num_images, M]`` ids or ``[num_images, M, D]`` features), ``rows`` ([n] or [n, 2]),
    ``targets`` per example (see :func:`finetune_data.targets`)."""

    split: TaskSplit
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    visual: torch.Tensor
    rows: torch.Tensor
    targets: list[Any]

    def batch(self, index: np.ndarray, num_labels: int, task: str) -> tuple[torch.Tensor, ...]:
        """``(input_ids, attention_mask, visual, target)`` of examples ``index``."""
        idx = torch.as_tensor(index, dtype=torch.long)
        visual = self.visual[self.rows[idx]]
        if visual.is_floating_point():
            visual = visual.float()
        if task == "vqa":
            target = torch.zeros(len(index), num_labels)
            for b, i in enumerate(index):
                for a, score in self.targets[int(i)].items():
                    target[b, a] = score
        else:
            target = torch.as_tensor([self.targets[int(i)] for i in index], dtype=torch.long)
        return self.input_ids[idx], self.attention_mask[idx], visual, target


def _encode(
    split: TaskSplit,
    tokenizer: Any,
    encoder: Any,
    features: bool,
    vocab: Any,
    max_length: int,
    progress: bool,
) -> Encoded:
    tokens = tokenizer(split.texts, max_length=max_length)
    feats, ids = encode_images(encoder, split.images, progress=progress)
    return Encoded(
        split=split,
        input_ids=tokens.input_ids,
        attention_mask=tokens.attention_mask,
        visual=feats if features else ids,
        rows=torch.from_numpy(split.rows),
        targets=targets(split, vocab),
    )


@torch.no_grad()
def predict(model: TaskModel, data: Encoded, batch_size: int, device: Any = "cpu") -> list[Any]:
    """The model's answer (VQA/GQA: a string of the head's answers) or judgement (NLVR2: bool)
    for every example of ``data``."""
    was_training = model.training
    model.eval()
    out: list[Any] = []
    task, n_labels = model.head.config.task, model.head.config.num_labels
    for s in range(0, len(data.split), batch_size):
        index = np.arange(s, min(s + batch_size, len(data.split)))
        ids, mask, visual, _ = data.batch(index, n_labels, task)
        logits = model(ids.to(device), mask.to(device), visual.to(device)).float()
        best = logits.argmax(-1).tolist()
        out.extend(bool(b) for b in best) if task == "nlvr2" else out.extend(
            model.head.answers[b] for b in best
        )
    model.train(was_training)
    return out


def score(task: str, predictions: list[Any], split: TaskSplit) -> dict[str, Any]:
    """The benchmark's scores of ``predictions`` on ``split`` (:mod:`xlxmert.evaluation.metrics.tasks`)."""
    return {"vqa": score_vqa, "gqa": score_gqa, "nlvr2": score_nlvr2}[task](predictions, split.records)


def baselines(task: str, train: TaskSplit, split: TaskSplit) -> dict[str, float]:
    """The "majority answer" and "question only" baselines' main metric on ``split``."""
    majority = majority_answer(train.labels)
    only = question_only_answers(train.texts, train.labels, split.texts)
    key = MAIN_METRIC[task]
    return {
        "majority_answer": score(task, [majority] * len(split), split)[key],
        "question_only": score(task, only, split)[key],
    }


# -- the model folder --------------------------------------------------------------------------------
def _prepare_out(model_dir: Path, out: Path) -> None:
    """Make ``out`` a copy of ``model_dir``'s components (and other tasks' heads)."""
    if out.resolve() == model_dir.resolve():
        return
    out.mkdir(parents=True, exist_ok=True)
    for name in (*COMPONENTS, *OPTIONAL_COMPONENTS, HEADS_DIR):
        src = model_dir / name
        if src.is_dir() and not (out / name).exists():
            shutil.copytree(src, out / name)
    if (model_dir / "model_index.json").is_file() and not (out / "model_index.json").is_file():
        shutil.copy2(model_dir / "model_index.json", out / "model_index.json")


def finetune(
    model_dir: str | Path,
    data_root: str | Path,
    out: str | Path,
    config: FinetuneConfig,
    answers_file: str | Path | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model_dir``'s transformer on ``config.task`` and write ``out`` (module docstring).

    Rerunning the same call resumes from ``out/finetune-<task>/``'s latest checkpoint.
    ``stop_after``: return after that many updates in all (a checkpoint is written there), as an
    interruption would. Returns the report (also in ``out/heads/<task>/report.json``).
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from xlxmert.pipelines.common import ImageEncoder, load_core_components

    cfg = config
    model_dir, out = Path(model_dir), Path(out)
    component_dir(model_dir, "transformer")  # one clear error for a folder without one
    tokenizer, vocabulary, pretrained = load_core_components(model_dir)
    tcfg = pretrained.config
    features = tcfg.exact_features  # LXMERT+Grid (or UNITER+Grid) reads exact grid features
    train = load_task_split(data_root, cfg.task, cfg.train_split).head(cfg.max_train)
    val = load_task_split(data_root, cfg.task, cfg.val_split).head(cfg.max_eval)
    test = load_task_split(data_root, cfg.task, cfg.test_split).head(cfg.max_eval) if cfg.test_split else None
    vocab = None if cfg.task == "nlvr2" else answer_vocabulary(train, cfg.answer_min_count, answers_file)

    encoder = ImageEncoder.from_pretrained(model_dir, tcfg.grid_size, vocabulary)
    enc = {
        name: _encode(split, tokenizer, encoder, features, vocab, tcfg.max_text_length, progress)
        for name, split in (("train", train), ("val", val), ("test", test))
        if split is not None
    }

    torch.manual_seed(cfg.seed)  # initialisation of the head (and of the transformer from scratch)
    if cfg.from_scratch:
        transformer = build_transformer(tcfg, vocabulary.centroids)
    else:
        transformer = pretrained
    head = build_head(
        cfg.task,
        tcfg.hidden_size,
        None if vocab is None else vocab.answers,
        "scratch" if cfg.from_scratch else "pretrained",
    )
    copied = 0
    if not cfg.from_scratch:
        copied = init_from_qa_head(head, pretrained.answer_head, pretrained.answers)
    model = TaskModel(transformer, head).train()

    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.mixed_precision)
    groups = [{**g, "lr": cfg.lr} for g in _param_groups(transformer, cfg.weight_decay)] + [
        {**g, "lr": cfg.head_lr} for g in _param_groups(head, cfg.weight_decay)
    ]
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999))
    per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(total, cfg.warmup_ratio))

    run = out / RUN_DIR.format(task=cfg.task)
    start, best, history = 0, -1.0, []
    latest = load_latest_checkpoint(run / CHECKPOINT_DIR)
    if latest is not None:
        state = latest.state
        if not same_settings(state["config"], _comparable(cfg), FinetuneConfig) or state["model_dir"] != str(
            model_dir.resolve()
        ):
            raise XLXMERTError(
                f"{run} holds a fine-tuning run with other settings ({latest.path.name}); rerun with the "
                "same arguments to resume, or choose another --out"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, best, history = int(state["step"]), float(state["best"]), list(state["history"])
    _prepare_out(model_dir, out)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    device = accelerator.device
    run.mkdir(parents=True, exist_ok=True)
    log = MetricsLog(run, start, enabled=True)

    def checkpoint(step: int) -> None:
        state = {
            "step": step,
            "model": unwrapped.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "best": best,
            "history": history,
            "config": _comparable(cfg),
            "model_dir": str(model_dir.resolve()),
        }
        save_checkpoint(run / CHECKPOINT_DIR, step, state, keep=cfg.keep_checkpoints)

    bar = tqdm(
        total=total, initial=start, disable=not progress, desc=f"finetune {cfg.task}", dynamic_ncols=True
    )
    running = None
    for step in range(start, total if stop_after is None else min(total, stop_after)):
        epoch, i = divmod(step, per_epoch)
        order = np.random.default_rng(_seed_of(cfg.seed, epoch, 11)).permutation(len(train))
        index = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
        torch.manual_seed(_seed_of(cfg.seed, step, 1))  # dropout: a function of the step
        ids, mask, visual, target = enc["train"].batch(index, unwrapped.head.config.num_labels, cfg.task)
        logits = model(ids.to(device), mask.to(device), visual.to(device))
        loss = unwrapped.head.loss(logits, target.to(device))
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        scheduler.step()
        done = step + 1
        value = float(loss.detach())
        running = value if running is None else 0.95 * running + 0.05 * value
        log.log(done, "train", {"loss": value, "lr_head": scheduler.get_last_lr()[-1]})
        bar.update(1)
        bar.set_postfix(loss=f"{running:.3f}", best=f"{best:.3f}")
        if done % per_epoch == 0:
            val_scores = score(cfg.task, predict(unwrapped, enc["val"], 2 * cfg.batch_size, device), val)
            main = float(val_scores[MAIN_METRIC[cfg.task]])
            history.append({"epoch": done // per_epoch, "step": done, "val": main})
            log.log(done, "val", {MAIN_METRIC[cfg.task]: main})
            LOG.info(f"epoch {done // per_epoch}: val {MAIN_METRIC[cfg.task]} {main:.4f}")
            if main > best:
                best = main
                save_task_head(out, unwrapped.head, unwrapped.transformer)
        if done % cfg.checkpoint_every == 0 or done % per_epoch == 0 or done == stop_after:
            checkpoint(done)
    bar.close()
    log.close()
    if stop_after is not None and stop_after < total:
        return {"stopped_at": stop_after}
    return _final_report(out, cfg, train, val, test, enc, history, copied, best, device)


def _final_report(out, cfg, train, val, test, enc, history, copied, best, device) -> dict[str, Any]:
    """Score the best epoch's head (as saved) on val (and test), with the baselines; write report.json."""
    from xlxmert.models.heads import load_task_head

    transformer = load_transformer(out)
    head = load_task_head(out, cfg.task, transformer)
    model = TaskModel(transformer, head).to(device).eval()
    report: dict[str, Any] = {
        "task": cfg.task,
        "config": config_to_dict(cfg),
        "variant": transformer.config.variant,
        "init": head.config.init,
        "answers": head.config.num_labels if cfg.task != "nlvr2" else None,
        "answers_from_qa_head": copied,
        "train_examples": len(train),
        "history": history,
        "best_val": best,
    }
    for name, split in (("val", val), ("test", test)):
        if split is None:
            continue
        scores = score(cfg.task, predict(model, enc[name], 2 * cfg.batch_size, device), split)
        report[name] = {**scores, "baselines": baselines(cfg.task, train, split)}
    (head_dir(out, cfg.task) / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n")
    update_model_index(out)
    return report
