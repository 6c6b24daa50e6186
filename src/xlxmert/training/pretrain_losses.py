"""Pretraining losses and validation (paper §5): CCC (or MVFR for the +Grid baselines), MLM, ITM
and the VQA soft-score QA loss of one batch; validation accuracies at fixed masking ratios."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xlxmert.models.masking import (
    fixed_ratio_visual_mask,
    mask_text_tokens,
)
from xlxmert.models.transformer import (
    XLxmertConfig,
    XLxmertForPreTraining,
)
from xlxmert.training.pretrain_batches import Batch, PretrainData, swap_texts

EVAL_MASK_RATIOS = (0.15, 0.5, 1.0)


def batch_losses(
    model: torch.nn.Module,
    batch: Batch,
    config: XLxmertConfig,
    ccc_weights: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Losses of one batch, by name (``ccc`` / ``mvfr``, ``mlm``, ``itm``, ``qa``).

    ``ccc_weights``: FloatTensor[K] of per-word CCC weights (:func:`ccc_class_weights`); the loss
    is then the weighted mean over the masked cells."""
    feats = batch.visual_feats if config.exact_features else None
    out = model(
        batch.input_ids,
        batch.attention_mask,
        visual_ids=batch.visual_ids,
        visual_feats=feats,
        visual_mask=batch.visual_mask,
    )
    losses: dict[str, torch.Tensor] = {}
    if batch.task == "visual":
        mask = batch.visual_mask
        if config.visual_target == "clusters":
            logits = out.visual_logits.float()
            losses["ccc"] = (
                F.cross_entropy(logits[mask], batch.visual_ids[mask], weight=ccc_weights)
                if mask.any()
                else logits.sum() * 0
            )
        else:
            losses["mvfr"] = masked_feature_regression_loss(
                out.visual_regression.float(), _regression_target(model, batch, config), mask
            )
    elif batch.task == "text":
        logits = out.mlm_logits.float()
        losses["mlm"] = (
            F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), batch.mlm_labels.reshape(-1), ignore_index=-100
            )
            if (batch.mlm_labels >= 0).any()
            else logits.sum() * 0
        )
    else:
        losses["itm"] = F.cross_entropy(out.itm_logits.float(), batch.itm_labels)
        if batch.qa_rows is not None and len(batch.qa_rows):
            qa_logits = out.qa_logits.float()[batch.qa_rows]
            # VQA soft scores with BCE, summed over answers and averaged over questions (LXMERT's
            # mean × num_answers).
            losses["qa"] = F.binary_cross_entropy_with_logits(
                qa_logits, batch.qa_targets, reduction="sum"
            ) / len(batch.qa_rows)
    # Every head's output joins the graph with weight 0, so each step gives every head a gradient
    # (zero where its task is idle): DDP then reduces the same parameters on every process, and one
    # process and several train identically.
    heads = (out.mlm_logits, out.visual_logits, out.visual_regression, out.itm_logits, out.qa_logits)
    anchor = sum(h.float().sum() for h in heads if h is not None) * 0.0
    first = next(iter(losses))
    losses[first] = losses[first] + anchor
    return losses


def _regression_target(model: torch.nn.Module, batch: Batch, config: XLxmertConfig) -> torch.Tensor:
    """Exact features when the batch carries them, else the centroid features of the ids."""
    if batch.visual_feats is not None:
        return batch.visual_feats
    inner = model.module if hasattr(model, "module") else model
    return inner.centroids[batch.visual_ids]


def masked_feature_regression_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """MVFR: SmoothL1 averaged over feature dims, then over masked cells, then over the batch.

    ``pred, target: FloatTensor[B, M, D]``; ``mask: BoolTensor[B, M]``. Rows without a masked cell
    do not count (Bernoulli masking can leave a row untouched)."""
    per_cell = F.smooth_l1_loss(pred, target, reduction="none").mean(-1)
    counts = mask.sum(1)
    per_row = (per_cell * mask).sum(1) / counts.clamp(min=1)
    has = counts > 0
    return per_row[has].mean() if has.any() else pred.sum() * 0


# -- evaluation ------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(
    model: XLxmertForPreTraining,
    data: PretrainData,
    tokenizer: Any,
    examples: np.ndarray,
    batch_size: int,
    seed: int,
    majority_cluster: int | None = None,
) -> dict[str, float]:
    """Validation metrics on caption examples ``examples``: MLM accuracy, CCC top-1/top-5 at mask
    ratios 0.15/0.5/1.0 (or MVFR loss for the regression target), ITM accuracy. Deterministic in
    ``seed``. ``majority_cluster``: also report the top-1 of always predicting that cluster. With
    ``data.object_cells``, CCC top-1/top-5 are also reported on the masked object cells alone
    (``ccc_top1_objects@r``): the background fills most cells, so the plain scores hide whether
    objects are learnt at all."""
    was_training = model.training
    model.eval()
    cfg = model.config
    M = cfg.num_cells
    device = model.centroids.device
    gen = torch.Generator().manual_seed(seed)
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}

    def add(name: str, value: float, n: float) -> None:
        sums[name] = sums.get(name, 0.0) + value
        counts[name] = counts.get(name, 0.0) + n

    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        B = len(chunk)
        tok = tokenizer([data.texts[i] for i in chunk])
        rows = data.rows[chunk]
        ids = data.visual_ids[torch.from_numpy(rows)].to(device)
        object_cells = (
            None if data.object_cells is None else data.object_cells[torch.from_numpy(rows)].to(device)
        )
        feats = None
        if data.features is not None:
            feats = torch.from_numpy(data.features[rows].astype(np.float32)).reshape(B, M, -1).to(device)
        model_feats = feats if cfg.exact_features else None
        enc = model.encode_text(tok.input_ids.to(device), tok.attention_mask.to(device))
        for ratio in EVAL_MASK_RATIOS:
            mask = fixed_ratio_visual_mask(B, M, ratio, gen).to(device)
            out = model.predict_visual(enc, ids, mask, visual_feats=model_feats)
            if cfg.visual_target == "clusters":
                target = ids[mask]
                top5 = out[mask].topk(min(5, out.shape[-1]), dim=-1).indices
                add(f"ccc_top1@{ratio}", float((top5[:, 0] == target).sum()), len(target))
                add(f"ccc_top5@{ratio}", float((top5 == target[:, None]).any(1).sum()), len(target))
                if majority_cluster is not None:
                    add(f"ccc_majority_top1@{ratio}", float((target == majority_cluster).sum()), len(target))
                if object_cells is not None:
                    on_object = object_cells[mask]
                    hits = top5[on_object] == target[on_object][:, None]
                    add(f"ccc_top1_objects@{ratio}", float(hits[:, 0].sum()), len(hits))
                    add(f"ccc_top5_objects@{ratio}", float(hits.any(1).sum()), len(hits))
            else:
                target = feats if feats is not None else model.centroids[ids]
                add(f"mvfr@{ratio}", float(masked_feature_regression_loss(out, target, mask)) * B, B)
        masked_ids, labels = mask_text_tokens(
            tok.input_ids,
            tok.attention_mask,
            tokenizer.special_ids,
            tokenizer.vocab_size,
            tokenizer.mask_id,
            gen,
        )
        masked_ids, labels = masked_ids.to(device), labels.to(device)
        out = model(masked_ids, tok.attention_mask.to(device), visual_ids=ids, visual_feats=model_feats)
        chosen = labels >= 0
        add(
            "mlm_acc", float((out.mlm_logits.argmax(-1)[chosen] == labels[chosen]).sum()), float(chosen.sum())
        )
        text_index, itm_labels = swap_texts(data, chunk, gen)
        tok2 = tokenizer([data.texts[i] for i in text_index])
        out = model(
            tok2.input_ids.to(device),
            tok2.attention_mask.to(device),
            visual_ids=ids,
            visual_feats=model_feats,
        )
        add("itm_acc", float((out.itm_logits.argmax(-1).cpu() == itm_labels).sum()), B)
    model.train(was_training)
    return {k: sums[k] / max(counts[k], 1.0) for k in sums}
