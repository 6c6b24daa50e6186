"""Visual samplers (paper §5.2): the order in which grid cells are masked and (re)predicted.

A sampler is a scheduler in the diffusers sense: it never sees the model. It is handed a
``predict`` callable and decides, step by step, which cells the model sees as ``[MASK]`` and which
of the model's predictions are written back. Every sampler starts from a fully masked grid.

    predict(ids: LongTensor[B, M], mask: BoolTensor[B, M]) -> logits: FloatTensor[B, M, K]

``mask`` is True on the cells the model must predict (they are fed as the learned mask feature;
their entry in ``ids`` is meaningless). The schedules, as REFERENCE.md "Sampling" states them:

- ``TopLeftToBottomRightSampler``: M steps; step i fills cell i (raster order, row-major).
- ``RandomSampler(steps)``: a random permutation fills the M cells in M steps; steps beyond M
  (e.g. Random-200) re-mask one already filled cell at a time and re-predict it, in a fresh random
  order per round of M, so every cell is revisited equally often. Fewer steps than M (not in the
  paper) fill the permutation several cells per step.
- ``EasyFirstSampler``: M steps; each fills the unfilled cell whose prediction is most confident.
- ``MaskPredictSampler(K)``: K passes; pass i re-masks the ``int((K - i) / K * M)`` lowest-confidence
  cells and overwrites only those (K = 4, M = 64: 64, 48, 32, 16 cells).

Confidence is the (untempered) softmax probability of the id written to a cell; with argmax
decoding, the default and the paper's choice, this is the maximum softmax probability.
Options: ``temperature > 0`` samples ids from ``softmax(logits / temperature)``, optionally only
among the ``top_k`` largest logits; ``anneal=True`` decays the temperature linearly from its value
at the first step to 0 (argmax) at the last step, as MaskGIT does. All draws (ids and the Random
order) come from the ``torch.Generator`` passed in; pass one generator per batch row to make each
row's result independent of the rest of the batch.

Feature mode (the LXMERT+Grid baseline, which regresses features instead of classifying ids):
``sample_features`` runs the same schedules but writes predicted feature vectors into the masked
cells. A regression head gives no confidence, so every cell is scored with an i.i.d. uniform draw
from the generator: confidence-ordered choices become random ones. Mask-Predict keeps its linearly
decaying counts (64, 48, 32, 16) on randomly chosen cells; Easy-First becomes a random order.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from xlxmert.errors import XLXMERTError

Predict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
GeneratorArg = torch.Generator | Sequence[torch.Generator] | None


@dataclass
class SamplerOutput:
    """Result of :meth:`VisualSampler.sample`.

    ``ids``: LongTensor[B, M], the final visual ids.
    ``intermediates``: one LongTensor[B, M] per step (empty unless asked for): the grid after the
    step, where cells not filled yet show the prediction the model made for them at that step (so
    every intermediate can be decoded into a full image, the paper's Fig. 4 strip).
    ``updated``: one BoolTensor[B, M] per step (empty unless asked for): the cells written.
    """

    ids: torch.Tensor
    intermediates: list[torch.Tensor] = field(default_factory=list)
    updated: list[torch.Tensor] = field(default_factory=list)


@dataclass
class FeatureSamplerOutput:
    """Result of :meth:`VisualSampler.sample_features` (LXMERT+Grid).

    ``features``: FloatTensor[B, M, D]; ``intermediates``: FloatTensor[B, M, D] per step;
    ``updated``: BoolTensor[B, M] per step (both lists empty unless asked for).
    """

    features: torch.Tensor
    intermediates: list[torch.Tensor] = field(default_factory=list)
    updated: list[torch.Tensor] = field(default_factory=list)


def row_generators(generator: GeneratorArg, batch_size: int) -> list[torch.Generator | None]:
    """One generator per batch row: a list is used as is (its length must be ``batch_size``),
    a single generator (or None: torch's global one) is shared by all rows."""
    if isinstance(generator, Sequence):
        if len(generator) != batch_size:
            raise XLXMERTError(
                f"got {len(generator)} generators for a batch of {batch_size}; pass one per row"
            )
        return list(generator)
    return [generator] * batch_size


def choose_ids(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None,
    generators: Sequence[torch.Generator | None],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one id per position from ``logits: FloatTensor[B, L, V]``.

    ``temperature == 0``: argmax. Otherwise sample from ``softmax(logits / temperature)``
    restricted to the ``top_k`` largest logits (all if None), row b drawing from
    ``generators[b]``. Returns ``(ids: LongTensor[B, L], confidence: FloatTensor[B, L])``, the
    confidence being the untempered softmax probability of the chosen id.
    """
    probs = logits.float().softmax(dim=-1)
    if temperature <= 0:
        ids = logits.argmax(dim=-1)
    else:
        scaled = logits.float() / temperature
        if top_k is not None and top_k < scaled.shape[-1]:
            kth = scaled.topk(top_k, dim=-1).values[..., -1:]
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        sample_probs = scaled.softmax(dim=-1)
        rows = [
            torch.multinomial(sample_probs[b].reshape(-1, sample_probs.shape[-1]), 1, generator=generators[b])
            for b in range(logits.shape[0])
        ]
        ids = torch.stack(rows).reshape(logits.shape[:-1])
    confidence = probs.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    return ids, confidence


def _one_hot(cells: torch.Tensor, num_cells: int) -> torch.Tensor:
    """BoolTensor[B, M] with True at ``cells: LongTensor[B]``."""
    out = torch.zeros(cells.shape[0], num_cells, dtype=torch.bool, device=cells.device)
    out[torch.arange(cells.shape[0], device=cells.device), cells] = True
    return out


class VisualSampler:
    """Base class: the sampling loop; subclasses only state their schedule.

    A subclass implements :meth:`num_steps`, :meth:`masked_cells` (which cells the model sees as
    ``[MASK]`` at a step) and, if it writes fewer cells than it masks, :meth:`written_cells`.
    """

    name: ClassVar[str] = ""
    default_steps: ClassVar[int | None] = None  # None: one step per cell

    def __init__(
        self,
        steps: int | None = None,
        temperature: float = 0.0,
        anneal: bool = False,
        top_k: int | None = None,
    ) -> None:
        if steps is not None and steps < 1:
            raise XLXMERTError(f"{self.name}: steps must be at least 1, got {steps}")
        if temperature < 0:
            raise XLXMERTError(f"temperature must be >= 0 (0 = argmax), got {temperature}")
        if top_k is not None and top_k < 1:
            raise XLXMERTError(f"top-k must be at least 1, got {top_k}")
        if top_k is not None and temperature == 0:
            raise XLXMERTError("top-k sampling needs a temperature > 0 (temperature 0 means argmax)")
        if anneal and temperature == 0:
            raise XLXMERTError("annealing needs a starting temperature > 0")
        self.steps = steps if steps is not None else self.default_steps
        self.temperature = float(temperature)
        self.anneal = bool(anneal)
        self.top_k = top_k

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(steps={self.steps}, temperature={self.temperature}, "
            f"anneal={self.anneal}, top_k={self.top_k})"
        )

    # --- the schedule (subclasses) -------------------------------------------------------------
    def num_steps(self, num_cells: int) -> int:
        """How many model calls a sample of ``num_cells`` cells takes."""
        raise NotImplementedError

    def plan(self, batch_size: int, num_cells: int, generators: Sequence[torch.Generator | None]) -> Any:
        """Per-run randomness drawn before the first step (e.g. Random's order); None by default."""
        return None

    def masked_cells(
        self, step: int, plan: Any, filled: torch.Tensor, confidence: torch.Tensor
    ) -> torch.Tensor:
        """BoolTensor[B, M]: the cells fed as ``[MASK]`` (and predicted) at ``step``.

        ``filled``: BoolTensor[B, M], cells written so far; ``confidence``: FloatTensor[B, M], the
        confidence of each cell's current id (-inf where unfilled).
        """
        raise NotImplementedError

    def written_cells(
        self, step: int, plan: Any, masked: torch.Tensor, confidence: torch.Tensor
    ) -> torch.Tensor:
        """BoolTensor[B, M]: the masked cells whose new prediction is written (default: all).

        ``confidence``: FloatTensor[B, M], the confidence of this step's predictions.
        """
        return masked

    # --- the loop --------------------------------------------------------------------------------
    def temperature_at(self, step: int, num_steps: int) -> float:
        """Sampling temperature at ``step`` (linear decay to 0 at the last step when annealing)."""
        if not self.anneal or num_steps <= 1:
            return self.temperature
        return self.temperature * (1.0 - step / (num_steps - 1))

    def sample(
        self,
        predict: Predict,
        batch_size: int,
        num_cells: int,
        generator: GeneratorArg = None,
        return_intermediates: bool = False,
    ) -> SamplerOutput:
        """Sample ``ids: LongTensor[B, M]`` with ``predict(ids, mask) -> logits [B, M, K]``."""
        gens = row_generators(generator, batch_size)

        def step_fn(step: int, values: torch.Tensor, masked: torch.Tensor, n: int):
            logits = predict(values, masked)
            if logits.shape[:2] != (batch_size, num_cells):
                raise XLXMERTError(
                    f"predict returned {tuple(logits.shape)}; expected [{batch_size}, {num_cells}, K]"
                )
            return choose_ids(logits, self.temperature_at(step, n), self.top_k, gens)

        values = torch.zeros(batch_size, num_cells, dtype=torch.long)
        final, inter, upd = self._loop(step_fn, values, gens, return_intermediates)
        return SamplerOutput(ids=final, intermediates=inter, updated=upd)

    def sample_features(
        self,
        predict: Predict,
        batch_size: int,
        num_cells: int,
        feature_dim: int,
        generator: GeneratorArg = None,
        return_intermediates: bool = False,
    ) -> FeatureSamplerOutput:
        """Sample ``features: FloatTensor[B, M, D]`` with ``predict(feats, mask) -> feats [B, M, D]``.

        The LXMERT+Grid probe: same schedule, regressed features written into the masked cells;
        confidences are uniform random draws (see the module docstring).
        """
        if self.temperature > 0:
            raise XLXMERTError("temperature / top-k sampling needs id logits; LXMERT+Grid regresses features")
        gens = row_generators(generator, batch_size)

        def step_fn(step: int, values: torch.Tensor, masked: torch.Tensor, n: int):
            feats = predict(values, masked)
            if feats.shape != (batch_size, num_cells, feature_dim):
                raise XLXMERTError(
                    f"predict returned {tuple(feats.shape)}; "
                    f"expected [{batch_size}, {num_cells}, {feature_dim}]"
                )
            confidence = torch.stack([torch.rand(num_cells, generator=g) for g in gens])
            return feats, confidence

        values = torch.zeros(batch_size, num_cells, feature_dim)
        final, inter, upd = self._loop(step_fn, values, gens, return_intermediates)
        return FeatureSamplerOutput(features=final, intermediates=inter, updated=upd)

    def _loop(self, step_fn, values: torch.Tensor, gens, return_intermediates: bool):
        batch_size, num_cells = values.shape[:2]
        n = self.num_steps(num_cells)
        plan = self.plan(batch_size, num_cells, gens)
        filled = torch.zeros(batch_size, num_cells, dtype=torch.bool)
        confidence = torch.full((batch_size, num_cells), float("-inf"))
        intermediates: list[torch.Tensor] = []
        updated: list[torch.Tensor] = []
        for step in range(n):
            masked = self.masked_cells(step, plan, filled, confidence)
            new_values, new_conf = step_fn(step, values, masked, n)
            new_values = new_values.to(values.dtype)
            written = self.written_cells(step, plan, masked, new_conf.masked_fill(~masked, float("-inf")))
            written = written & masked
            shaped = written.reshape(*written.shape, *([1] * (values.dim() - 2)))
            values = torch.where(shaped, new_values, values)
            confidence = torch.where(written, new_conf.float(), confidence)
            filled = filled | written
            if return_intermediates:
                unfilled = (~filled).reshape(shaped.shape)
                intermediates.append(torch.where(unfilled, new_values, values))
                updated.append(written)
        if not bool(filled.all()):
            raise XLXMERTError(f"{self.name}: {n} steps left cells unfilled; use more steps")
        return values, intermediates, updated


class TopLeftToBottomRightSampler(VisualSampler):
    """TL→BR (PixelRNN order): M steps, step i fills cell i; unfilled cells are ``[MASK]``."""

    name = "tl-br"

    def num_steps(self, num_cells: int) -> int:
        if self.steps is not None and self.steps != num_cells:
            raise XLXMERTError(
                f"tl-br fills one cell per step: it takes exactly {num_cells} steps, not {self.steps}"
            )
        return num_cells

    def masked_cells(self, step, plan, filled, confidence):
        return ~filled

    def written_cells(self, step, plan, masked, confidence):
        return _one_hot(torch.full((masked.shape[0],), step, dtype=torch.long), masked.shape[1])


class RandomSampler(VisualSampler):
    """Random order (Liao et al.): a permutation fills the grid in M steps; further steps re-mask
    and re-predict one filled cell each, a fresh permutation per round of M (Random-200, Fig. 4).

    Fewer steps than cells (not in the paper) fill the permutation in ``steps`` near-equal
    consecutive chunks, several cells per model call: Random-64 on a 16×16 grid writes 4 cells
    per step. With ``temperature`` 1 this is order-agnostic ancestral sampling, the distribution
    uniform masking trains, and the chunks trade its exactness for speed."""

    name = "random"

    def num_steps(self, num_cells: int) -> int:
        return self.steps if self.steps is not None else num_cells

    def plan(self, batch_size, num_cells, generators):
        rounds = max(1, -(-self.num_steps(num_cells) // num_cells))
        # LongTensor[B, rounds*M]: row b's cell order, one permutation per round.
        return torch.stack(
            [torch.cat([torch.randperm(num_cells, generator=g) for _ in range(rounds)]) for g in generators]
        )

    def _fill_steps(self, num_cells: int) -> int:
        """Steps of the first round, which fills every cell once (at most one step per cell)."""
        return min(self.num_steps(num_cells), num_cells)

    def masked_cells(self, step, plan, filled, confidence):
        num_cells = filled.shape[1]
        if step < self._fill_steps(num_cells):
            return ~filled
        return _one_hot(plan[:, step], num_cells)

    def written_cells(self, step, plan, masked, confidence):
        num_cells = masked.shape[1]
        fill_steps = self._fill_steps(num_cells)
        if step >= fill_steps:
            return _one_hot(plan[:, step], num_cells)
        # Consecutive, near-equal chunks of the permutation: [start, end) at this step.
        start, end = step * num_cells // fill_steps, (step + 1) * num_cells // fill_steps
        written = torch.zeros_like(masked)
        written.scatter_(1, plan[:, start:end], True)
        return written


class EasyFirstSampler(VisualSampler):
    """Easy-First: M steps; each fills the unfilled cell whose prediction is most confident."""

    name = "easy-first"

    def num_steps(self, num_cells: int) -> int:
        if self.steps is not None and self.steps != num_cells:
            raise XLXMERTError(
                f"easy-first fills one cell per step: it takes exactly {num_cells} steps, not {self.steps}"
            )
        return num_cells

    def masked_cells(self, step, plan, filled, confidence):
        return ~filled

    def written_cells(self, step, plan, masked, confidence):
        # ``confidence`` is -inf outside ``masked`` (the unfilled cells), so argmax picks among them.
        return _one_hot(confidence.argmax(dim=1), masked.shape[1])


class MaskPredictSampler(VisualSampler):
    """Mask-Predict-K (Ghazvininejad et al.): pass i re-masks the ``int((K - i) / K * M)``
    lowest-confidence cells and overwrites only those (pass 0: all M cells)."""

    name = "mask-predict"
    default_steps = 4  # the paper's recommended Mask-Predict-4

    def num_steps(self, num_cells: int) -> int:
        return self.steps

    def num_masked(self, step: int, num_cells: int) -> int:
        """Cells re-masked at pass ``step``: ``int((K - step) / K * M)``."""
        return int((self.steps - step) / self.steps * num_cells)

    def masked_cells(self, step, plan, filled, confidence):
        count = self.num_masked(step, filled.shape[1])
        masked = torch.zeros_like(filled)
        if count > 0:
            # stable sort: equal confidences are re-masked in raster order, deterministically.
            lowest = confidence.argsort(dim=1, stable=True)[:, :count]
            masked.scatter_(1, lowest, True)
        return masked


SAMPLERS: dict[str, type[VisualSampler]] = {
    cls.name: cls
    for cls in (TopLeftToBottomRightSampler, RandomSampler, EasyFirstSampler, MaskPredictSampler)
}


# Steps of one painting: every sampler fills the grid within its cells' count (the paper's grid
# has 64); more is allowed (Random refills cells) up to this bound, which keeps a run to seconds.
MAX_STEPS = 1024


@dataclass(frozen=True)
class SamplerConfig:
    """A sampler's settings, saved in a model folder as ``sampler/config.json``: how the model
    paints when the caller names no settings (as a diffusers scheduler config sits beside its
    pipeline). The defaults are the paper's: Mask-Predict-4, argmax.

    ``name``: a key of :data:`SAMPLERS`; ``steps``: None for the sampler's default; see
    :func:`get_sampler` for ``temperature``, ``anneal`` and ``top_k``. ``guidance_scale``:
    classifier-free guidance (1 = none, the paper), applied by the pipeline around the sampler
    (:meth:`~xlxmert.pipelines.PaintPipeline.sample`), so :meth:`build` does not take it.
    """

    name: str = "mask-predict"
    steps: int | None = None
    temperature: float = 0.0
    anneal: bool = False
    top_k: int | None = None
    guidance_scale: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.guidance_scale) or self.guidance_scale < 0:
            raise XLXMERTError(f"guidance_scale must be >= 0 (1 = no guidance), got {self.guidance_scale}")
        if self.name not in SAMPLERS:
            raise XLXMERTError(f"unknown sampler {self.name!r}; choose one of {', '.join(SAMPLERS)}")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise XLXMERTError(
                f"temperature must be a finite number >= 0 (0 = argmax), got {self.temperature}"
            )
        if self.steps is not None and not 1 <= self.steps <= MAX_STEPS:
            raise XLXMERTError(f"steps must be in [1, {MAX_STEPS}], got {self.steps}")
        if self.top_k is not None and self.top_k < 1:
            raise XLXMERTError(f"top_k must be at least 1, got {self.top_k}")

    def build(self) -> VisualSampler:
        return get_sampler(self.name, self.steps, self.temperature, self.anneal, self.top_k)

    def merged(self, name: str | None = None, **overrides: Any) -> SamplerConfig:
        """These settings with ``overrides`` whose value is not None applied. Naming another
        sampler than ``self.name`` starts from that sampler's defaults instead, and temperature 0
        (argmax) switches annealing off unless ``anneal`` is given too."""
        base = self if name in (None, self.name) else SamplerConfig(name=name)
        given = {k: v for k, v in overrides.items() if v is not None}
        if given.get("temperature") == 0 and "anneal" not in given:
            given["anneal"] = False
        return dataclasses.replace(base, **given)

    def save_pretrained(self, folder: str | Path) -> Path:
        from xlxmert.utils.config import save_config

        save_config(self, folder)
        return Path(folder)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> SamplerConfig:
        from xlxmert.utils.config import load_config

        return load_config(cls, folder)


def get_sampler(
    name: str,
    steps: int | None = None,
    temperature: float = 0.0,
    anneal: bool = False,
    top_k: int | None = None,
) -> VisualSampler:
    """A sampler by name: ``"tl-br"``, ``"random"``, ``"easy-first"`` or ``"mask-predict"``.

    ``steps=None`` takes the sampler's default (one step per cell; 4 for Mask-Predict).
    """
    if name not in SAMPLERS:
        raise XLXMERTError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name](steps=steps, temperature=temperature, anneal=anneal, top_k=top_k)
