"""Masking for pretraining: X-LXMERT's uniform visual masking, LXMERT's Bernoulli one, BERT's text masking
(and uniform masking of the words, for captioning from an empty caption).

Every draw takes an explicit ``torch.Generator`` so a training step is a pure function of its seed
(exact resume after a kill depends on it).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def uniform_visual_mask(batch: int, num_cells: int, generator: torch.Generator) -> torch.BoolTensor:
    """X-LXMERT's uniform masking (paper §5.1): per row draw n ~ U{1..M}, then mask n distinct cells.

    The wide range of ratios (up to every cell) is what lets the model paint from an empty grid.
    Returns ``BoolTensor[batch, num_cells]`` (True = masked).
    """
    counts = torch.randint(1, num_cells + 1, (batch,), generator=generator)
    # A random permutation per row = ranks of i.i.d. uniforms; the n smallest ranks are masked.
    ranks = torch.rand(batch, num_cells, generator=generator).argsort(dim=1).argsort(dim=1)
    return ranks < counts[:, None]


def bernoulli_visual_mask(
    batch: int, num_cells: int, p: float, generator: torch.Generator
) -> torch.BoolTensor:
    """LXMERT's masking: each cell independently with probability ``p``. ``BoolTensor[batch, num_cells]``."""
    return torch.rand(batch, num_cells, generator=generator) < p


def fixed_ratio_visual_mask(
    batch: int, num_cells: int, ratio: float, generator: torch.Generator
) -> torch.BoolTensor:
    """Exactly ``max(1, round(ratio * M))`` random cells per row (validation at fixed mask ratios)."""
    n = max(1, min(num_cells, round(ratio * num_cells)))
    ranks = torch.rand(batch, num_cells, generator=generator).argsort(dim=1).argsort(dim=1)
    return ranks < n


def mask_text_tokens(
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor,
    special_ids: Iterable[int],
    vocab_size: int,
    mask_id: int,
    generator: torch.Generator,
    p: float = 0.15,
) -> tuple[torch.LongTensor, torch.LongTensor]:
    """BERT's masked-LM corruption on ``input_ids: LongTensor[B, L]``.

    Each real token is chosen with probability ``p``; of the chosen, 80% become ``mask_id``, 10% a
    random non-special token, 10% stay. ``[CLS]``, ``[SEP]``, padding and every other special id are
    never chosen (the reference can pick padding and ``[SEP]``; we do not). Returns
    ``(masked_ids: LongTensor[B, L], labels: LongTensor[B, L])`` with labels -100 where not predicted.
    """
    special = torch.tensor(sorted(set(int(i) for i in special_ids)), dtype=torch.long)
    candidates = attention_mask.bool() & ~torch.isin(input_ids, special)
    chosen = (torch.rand(input_ids.shape, generator=generator) < p) & candidates
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    action = torch.rand(input_ids.shape, generator=generator)
    # Random replacements are drawn among ordinary tokens only, so no special token is ever written.
    ordinary = torch.ones(vocab_size, dtype=torch.bool)
    ordinary[special[special < vocab_size]] = False
    ordinary_ids = ordinary.nonzero().squeeze(1)
    random_ids = ordinary_ids[torch.randint(len(ordinary_ids), input_ids.shape, generator=generator)]
    masked = input_ids.clone()
    masked = torch.where(chosen & (action < 0.8), torch.full_like(input_ids, mask_id), masked)
    masked = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, masked)
    return masked, labels


def uniform_text_mask(
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor,
    special_ids: Iterable[int],
    mask_id: int,
    generator: torch.Generator,
) -> tuple[torch.LongTensor, torch.LongTensor]:
    """Uniform masking of the words, as X-LXMERT masks the grid: per row draw n ~ U{1..N} of its N
    words and replace those n by ``mask_id`` (up to the whole caption, the state captioning starts
    from; not in the paper). Special tokens and padding are never chosen. Returns
    ``(masked_ids: LongTensor[B, L], labels: LongTensor[B, L])`` with labels -100 where not predicted.
    """
    special = torch.tensor(sorted(set(int(i) for i in special_ids)), dtype=torch.long)
    candidates = attention_mask.bool() & ~torch.isin(input_ids, special)
    words = candidates.sum(dim=1)
    counts = (torch.rand(len(input_ids), generator=generator) * words).floor().long() + 1
    keys = torch.rand(input_ids.shape, generator=generator).masked_fill(~candidates, 2.0)
    ranks = keys.argsort(dim=1).argsort(dim=1)
    chosen = candidates & (ranks < counts[:, None])
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    return input_ids.masked_fill(chosen, mask_id), labels
