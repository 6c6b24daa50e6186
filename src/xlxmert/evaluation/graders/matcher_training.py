"""Training the R-precision matcher (:class:`~xlxmert.evaluation.graders.matcher.ImageTextMatcher`).

Contrastive: each image's caption against captions of the batch's other images and one-word swaps
of its own caption that are false of its scene (``negatives.hard_negative_pool``). A killed run
resumes exactly from the checkpoints in ``out/checkpoints`` (utils.checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from xlxmert.errors import XLXMERTError
from xlxmert.evaluation.graders.matcher import SPECIAL_TOKENS, ImageTextMatcher, MatcherConfig
from xlxmert.evaluation.negatives import _is_false, hard_negative_pool, tokenize, world_words
from xlxmert.evaluation.split import EvalExample, images_uint8, load_example_images, load_examples, to_float
from xlxmert.utils.checkpoint import CHECKPOINT_DIR, LoopCheckpoints
from xlxmert.utils.config import config_to_dict
from xlxmert.utils.seeding import numpy_rng


def build_vocab(captions: Sequence[str]) -> tuple[str, ...]:
    """Special tokens, then the world's words and every word of ``captions``, sorted."""
    words = set(world_words())
    for caption in captions:
        words.update(tokenize(caption))
    return SPECIAL_TOKENS + tuple(sorted(words - set(SPECIAL_TOKENS)))


@dataclass(frozen=True)
class MatcherTrainingConfig:
    """Contrastive training: each image's caption against ``easy_negatives`` captions of the batch's
    other images and ``hard_negatives`` one-word swaps of its own caption (softmax cross-entropy over
    the 1 + easy + hard candidates; a negative that happens to be true of the scene is masked)."""

    steps: int = 1000
    batch_size: int = 32
    easy_negatives: int = 7
    hard_negatives: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: float = 0.05  # share of the steps with a rising learning rate
    seed: int = 20202


def _sample_negatives(
    examples: Sequence[EvalExample],
    idx: np.ndarray,
    positives: list[str],
    pools: dict[tuple[int, str], list[str]],
    training: MatcherTrainingConfig,
    rng: np.random.Generator,
) -> tuple[list[list[str]], torch.Tensor]:
    """Per image of the batch: ``[positive, easy..., hard...]`` candidates and a BoolTensor[B, K]
    of those that are valid negatives (False: true of the scene, or the positive itself)."""
    b = len(idx)
    rows, valid = [], []
    for row, i in enumerate(idx):
        ex = examples[i]
        others = [positives[j] for j in range(b) if j != row]
        easy = [others[int(j)] for j in rng.choice(len(others), size=training.easy_negatives)]
        key = (int(i), positives[row])
        if key not in pools:
            pools[key] = hard_negative_pool(positives[row], ex.scene)
        pool = pools[key] or others  # a caption without swappable words: more easy negatives
        hard = [pool[int(j)] for j in rng.integers(len(pool), size=training.hard_negatives)]
        candidates = [positives[row], *easy, *hard]
        rows.append(candidates)
        valid.append([True] + [c != positives[row] and _is_false(c, ex.scene) for c in candidates[1:]])
    return rows, torch.tensor(valid)


def train_matcher(
    data_root: str | Path,
    out: str | Path,
    steps: int | None = None,
    split: str = "train",
    config: MatcherConfig | None = None,
    training: MatcherTrainingConfig | None = None,
    n: int | None = None,
    progress: bool = True,
    evaluator: nn.Module | None = None,
    checkpoint_every: int = 250,
) -> ImageTextMatcher:
    """Train the matching surrogate on ``data_root/split`` and save it to ``out``.

    ``evaluator``: a trained :class:`ShapeSceneEvaluator` whose backbone becomes the matcher's CNN
    (its widths and image size are then taken from the evaluator) and stays frozen: its grid features
    are computed once, and training only teaches the cross-modal layers to read them, which takes
    minutes on a CPU. Without it the CNN is trained from scratch with the rest (much slower).
    ``out`` also gets ``training.json`` (the loss of every step); checkpoints go to
    ``out/checkpoints`` every ``checkpoint_every`` steps and are deleted once the matcher is saved.
    """
    training = training or MatcherTrainingConfig()
    if steps is not None:
        training = dataclasses.replace(training, steps=steps)
    examples = [ex for ex in load_examples(data_root, split, n) if ex.captions]
    if len(examples) < 2:
        raise XLXMERTError(f"the matcher needs at least 2 captioned images in {data_root}/{split}")
    config = config or MatcherConfig()
    if evaluator is not None:
        config = dataclasses.replace(
            config,
            widths=tuple(evaluator.config.widths),
            image_size=evaluator.config.image_size,
            cell_outputs=len(evaluator.config.pairs) + 4,
        )
    config = dataclasses.replace(config, vocab=build_vocab([c for ex in examples for c in ex.captions]))
    images = images_uint8(load_example_images(examples), config.image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = ImageTextMatcher(config)
    frozen_cnn = evaluator is not None
    if frozen_cnn:
        model.init_from_evaluator(evaluator)
        model.cnn.requires_grad_(False)
        model.cell_head.requires_grad_(False)
        with torch.no_grad():
            model.eval()
            grids = torch.cat(
                [model.grid_features(to_float(images[s : s + 64])).half() for s in range(0, len(images), 64)]
            )
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=training.lr, weight_decay=training.weight_decay, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=training.lr, total_steps=max(training.steps, 1), pct_start=training.warmup
    )
    rng = numpy_rng(training.seed)
    pools: dict[tuple[int, str], list[str]] = {}
    settings = dict(config=config_to_dict(config), training=config_to_dict(training), n=len(examples))
    ckpt = LoopCheckpoints(
        Path(out) / CHECKPOINT_DIR, checkpoint_every, settings, model=model, opt=opt, sched=sched, rng=rng
    )
    start, extra = ckpt.resume()
    losses = list(extra.get("losses", []))
    model.train()
    bar = tqdm(
        range(start, training.steps),
        initial=start,
        total=training.steps,
        desc="matcher",
        disable=not progress,
    )
    for step in bar:
        idx = rng.choice(len(examples), size=min(training.batch_size, len(examples)), replace=False)
        positives = [examples[i].captions[int(rng.integers(len(examples[i].captions)))] for i in idx]
        rows, valid = _sample_negatives(examples, idx, positives, pools, training, rng)
        batch = torch.as_tensor(idx)
        grid = grids[batch].float() if frozen_cnn else model.grid_features(to_float(images[batch]))
        keys = model.image_keys(model.embed_grid(grid))
        unique = sorted({c for row in rows for c in row})
        where = {c: j for j, c in enumerate(unique)}
        text, keep = model.encode_captions(unique)
        k = len(rows[0])
        text_idx = torch.tensor([where[c] for row in rows for c in row])
        logits = model.pair_scores(text, keep, keys, text_idx, torch.arange(len(rows)).repeat_interleave(k))
        logits = logits.view(len(rows), k).masked_fill(~valid, float("-inf"))
        loss = F.cross_entropy(logits, torch.zeros(len(rows), dtype=torch.long))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        losses.append(loss.item())
        ckpt.maybe_save(step + 1, training.steps, losses=losses)
    model.eval()
    model.save_pretrained(out)
    (Path(out) / "training.json").write_text(json.dumps({"losses": losses}) + "\n")
    ckpt.remove()
    return model
