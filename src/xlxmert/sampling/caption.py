"""Caption Gibbs sampling (paper §7.3, Fig. 5): image → words with the MLM head.

The caption has a fixed number of word positions between ``[CLS]`` and ``[SEP]``; the first
positions hold the given prefix words, the rest start as ``[MASK]``. Each step re-masks one
non-prefix position, asks the model for that position's word and writes it (argmax by default,
or sampled). Positions are visited in sweeps; each sweep visits every free position once, in a
random order drawn from the row's generator.

The reference implementation overwrites ``[CLS]``, never fills the last word position and does not
protect the prefix (REFERENCE.md "Sampling"). None of that is copied here: ``[CLS]``, ``[SEP]``,
padding and the prefix are never re-masked or written, the last word position is a free position
like any other, and special tokens are never written as words.

    predict(input_ids: LongTensor[B, L], attention_mask: LongTensor[B, L]) -> logits: FloatTensor[B, L, V]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from xlxmert.errors import XLXMERTError
from xlxmert.sampling.visual import GeneratorArg, choose_ids, row_generators

PredictText = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class CaptionSamplerOutput:
    """``input_ids``/``attention_mask``: LongTensor[B, L] (``[CLS] words [SEP] [PAD]...``);
    ``intermediates``: LongTensor[B, L] after each step (empty unless asked for)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    intermediates: list[torch.Tensor] = field(default_factory=list)


class CaptionSampler:
    """Gibbs sampling of a fixed-length caption with protected prefix words.

    ``sweeps``: how many times every free position is re-predicted (the first sweep fills the
    masks; later ones revise words given their now-filled neighbours).
    """

    def __init__(self, sweeps: int = 2, temperature: float = 0.0, top_k: int | None = None) -> None:
        if sweeps < 1:
            raise XLXMERTError(f"caption sampling needs at least 1 sweep, got {sweeps}")
        if temperature < 0:
            raise XLXMERTError(f"temperature must be >= 0 (0 = argmax), got {temperature}")
        if top_k is not None and temperature == 0:
            raise XLXMERTError("top-k sampling needs a temperature > 0 (temperature 0 means argmax)")
        self.sweeps = sweeps
        self.temperature = float(temperature)
        self.top_k = top_k

    def sample(
        self,
        predict: PredictText,
        prefixes: Sequence[Sequence[int]],
        num_words: int,
        max_length: int,
        cls_id: int,
        sep_id: int,
        mask_id: int,
        pad_id: int,
        special_ids: Sequence[int],
        generator: GeneratorArg = None,
        return_intermediates: bool = False,
    ) -> CaptionSamplerOutput:
        """Sample one caption of ``num_words`` tokens per row, row b starting with ``prefixes[b]``.

        Sequences are ``[CLS] w_1 .. w_num_words [SEP]`` padded to ``max_length``; ids in
        ``special_ids`` are never written as words.
        """
        batch = len(prefixes)
        if num_words + 2 > max_length:
            raise XLXMERTError(
                f"a caption of {num_words} tokens does not fit the model's {max_length}-token limit"
            )
        longest = max((len(p) for p in prefixes), default=0)
        if longest >= num_words:
            raise XLXMERTError(
                f"the prefix has {longest} tokens; ask for a caption longer than that (length)"
            )
        gens = row_generators(generator, batch)

        input_ids = torch.full((batch, max_length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros(batch, max_length, dtype=torch.long)
        input_ids[:, 0] = cls_id
        input_ids[:, 1 : num_words + 1] = mask_id
        input_ids[:, num_words + 1] = sep_id
        attention_mask[:, : num_words + 2] = 1
        orders = []
        for b, prefix in enumerate(prefixes):
            if prefix:
                input_ids[b, 1 : 1 + len(prefix)] = torch.tensor(list(prefix), dtype=torch.long)
            free = torch.arange(1 + len(prefix), num_words + 1)  # includes the last word position
            orders.append(
                torch.cat([free[torch.randperm(len(free), generator=gens[b])] for _ in range(self.sweeps)])
            )
        num_steps = max(len(o) for o in orders)
        banned = torch.tensor(sorted(set(special_ids) | {cls_id, sep_id, mask_id, pad_id}), dtype=torch.long)

        intermediates = []
        rows = torch.arange(batch)
        for step in range(num_steps):
            active = torch.tensor([step < len(o) for o in orders])
            pos = torch.tensor([int(o[step]) if step < len(o) else 0 for o in orders])
            query = input_ids.clone()
            query[rows[active], pos[active]] = mask_id
            logits = predict(query, attention_mask)[rows, pos]  # [B, V]
            logits = logits.float().index_fill(-1, banned[banned < logits.shape[-1]], float("-inf"))
            words, _ = choose_ids(logits.unsqueeze(1), self.temperature, self.top_k, gens)
            input_ids[rows[active], pos[active]] = words[:, 0][active]
            if return_intermediates:
                intermediates.append(input_ids.clone())
        return CaptionSamplerOutput(
            input_ids=input_ids, attention_mask=attention_mask, intermediates=intermediates
        )
