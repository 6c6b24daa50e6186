"""Seeding without global state: every random draw takes an explicit generator."""

from __future__ import annotations

import numpy as np
import torch


def torch_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` seeded with ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def item_generators(seed: int, count: int) -> list[torch.Generator]:
    """One generator per item of a batch, item i seeded with ``seed + i``: each item's draws depend
    on its place in the batch, not on the other items, and equal items draw differently."""
    return [torch_generator(seed + i) for i in range(count)]


def numpy_rng(seed: int) -> np.random.Generator:
    """A fresh NumPy ``Generator`` (PCG64) seeded with ``seed``."""
    return np.random.default_rng(int(seed))


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, e.g. ``(seed, step, rank)``: stable across processes and runs, so
    a training step's random draws are a function of its number (exact resume)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0]
    return int(state >> np.uint64(1))
