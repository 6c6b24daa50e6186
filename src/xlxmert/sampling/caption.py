"""Caption decoders (paper §7.3, Fig. 5): image → words with the MLM head.

Two decoders share one convention: a caption has a number of word positions between ``[CLS]`` and
``[SEP]``; the first hold the given prefix words, the rest start as ``[MASK]``. ``[CLS]``,
``[SEP]``, padding and the prefix are never re-masked or written, and special tokens are never
written as words.

- :class:`CaptionSampler`, the paper's Gibbs sampling at a fixed length: each step re-masks one
  non-prefix position, asks the model for that position's word and writes it (argmax by default,
  or sampled), in sweeps over the free positions in a random order drawn from the row's generator.
  The reference implementation overwrites ``[CLS]``, never fills the last word position and does
  not protect the prefix (REFERENCE.md "Sampling"); none of that is copied here.
- :class:`MaskPredictCaptionDecoder`, the default: for every candidate length, the masks are filled
  one at a time, most confident first; the most promising lengths (optionally refined by
  rewriting, one word at a time, the word the model most prefers when that word alone is masked)
  are scored, and the caption with the best :func:`caption_scores` wins.

A caption's score is the mean log-probability of its free words, each masked alone (the model's
pseudo-log-likelihood), plus ``match_weight`` times the matching head's log p(match).

    predict(input_ids: LongTensor[B, L], attention_mask: LongTensor[B, L]) -> logits: FloatTensor[B, L, V]
    predict_rows(input_ids [N, L], attention_mask [N, L], rows: LongTensor[N])
        -> (mlm_logits: FloatTensor[N, L, V], match_log_prob: FloatTensor[N])   (row n shows image rows[n])
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


@dataclass
class CaptionDecoderOutput:
    """Captions best first per image: ``input_ids``/``attention_mask``: LongTensor[B·N, L] (image
    b's n-th best caption at row b·N + n); ``scores``: FloatTensor[B·N] (:func:`caption_scores`)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    scores: torch.Tensor


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


PredictRows = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class CaptionTokens:
    """The tokenizer's ids a caption decoder needs; ``special_ids`` are never written as words."""

    cls_id: int
    sep_id: int
    mask_id: int
    pad_id: int
    special_ids: tuple[int, ...] = ()

    @property
    def banned(self) -> torch.Tensor:
        ids = set(self.special_ids) | {self.cls_id, self.sep_id, self.mask_id, self.pad_id}
        return torch.tensor(sorted(ids), dtype=torch.long)

    def blank(
        self, prefixes: Sequence[Sequence[int]], lengths: Sequence[int], max_length: int
    ) -> torch.Tensor:
        """LongTensor[R, max_length]: row r is ``[CLS] prefixes[r] [MASK].. [SEP] [PAD]..`` with
        ``lengths[r]`` word pieces between ``[CLS]`` and ``[SEP]`` (prefix included)."""
        ids = torch.full((len(lengths), max_length), self.pad_id, dtype=torch.long)
        ids[:, 0] = self.cls_id
        for r, (prefix, n) in enumerate(zip(prefixes, lengths)):
            ids[r, 1 : n + 1] = self.mask_id
            if prefix:
                ids[r, 1 : 1 + len(prefix)] = torch.tensor(list(prefix), dtype=torch.long)
            ids[r, n + 1] = self.sep_id
        return ids

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """FloatTensor[..., V]: log-probabilities over the words, special ids excluded."""
        banned = self.banned[self.banned < logits.shape[-1]]
        return logits.float().index_fill(-1, banned, float("-inf")).log_softmax(dim=-1)


def _run(
    predict_rows: PredictRows, input_ids: torch.Tensor, rows: torch.Tensor, pad_id: int, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``predict_rows`` over ``input_ids: LongTensor[N, L]`` in chunks of ``chunk`` rows, cut to the
    longest row; returns (mlm_logits [N, L', V], match_log_prob [N]) with L' that length."""
    width = int((input_ids != pad_id).sum(dim=1).max())
    ids = input_ids[:, :width]
    logits, match = [], []
    for s in range(0, len(ids), chunk):
        part = ids[s : s + chunk]
        lg, m = predict_rows(part, (part != pad_id).long(), rows[s : s + chunk])
        logits.append(lg.float())
        match.append(m.float())
    return torch.cat(logits), torch.cat(match)


def word_log_probs(
    predict_rows: PredictRows,
    input_ids: torch.Tensor,
    free: torch.Tensor,
    rows: torch.Tensor,
    tokens: CaptionTokens,
    chunk: int = 256,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each free word masked alone: ``(log p(its word), the best word, log p(best word))``, each
    [R, L] (zeros and the current word where ``free: BoolTensor[R, L]`` is False)."""
    r_idx, p_idx = free.nonzero(as_tuple=True)
    word_lp = torch.zeros(input_ids.shape, dtype=torch.float)
    best_lp = torch.zeros(input_ids.shape, dtype=torch.float)
    best_ids = input_ids.clone()
    if len(r_idx) == 0:
        return word_lp, best_ids, best_lp
    queries = input_ids[r_idx].clone()
    queries[torch.arange(len(r_idx)), p_idx] = tokens.mask_id
    logits, _ = _run(predict_rows, queries, rows[r_idx], tokens.pad_id, chunk)
    lp = tokens.log_probs(logits[torch.arange(len(r_idx)), p_idx])  # [Q, V]
    top_lp, top_ids = lp.max(dim=-1)
    word_lp[r_idx, p_idx] = lp.gather(1, input_ids[r_idx, p_idx].unsqueeze(1)).squeeze(1)
    best_lp[r_idx, p_idx] = top_lp
    best_ids[r_idx, p_idx] = top_ids
    return word_lp, best_ids, best_lp


def caption_scores(
    predict_rows: PredictRows,
    input_ids: torch.Tensor,
    free: torch.Tensor,
    rows: torch.Tensor,
    tokens: CaptionTokens,
    match_weight: float = 1.0,
    chunk: int = 256,
) -> torch.Tensor:
    """FloatTensor[R]: the mean log-probability of the free words, each masked alone, plus
    ``match_weight`` × log p(match) of the whole caption with its image (``rows[r]``)."""
    word_lp, _, _ = word_log_probs(predict_rows, input_ids, free, rows, tokens, chunk)
    _, match = _run(predict_rows, input_ids, rows, tokens.pad_id, chunk)
    return word_lp.sum(1) / free.sum(1).clamp(min=1) + match_weight * match


class MaskPredictCaptionDecoder:
    """Confidence-ordered mask-predict over the words, at the length the model scores best.

    For each candidate length (``lengths``; None: every length the prefix and the text limit
    allow) the masks are filled one per model call, the most confident position first
    (``order="confidence"``) or the leftmost (``"left-to-right"``), writing the argmax word
    (``temperature`` 0) or a sample. The ``beam`` best lengths of each image, ranked by the mean
    log-probability of the written words plus ``match_weight`` × log p(match), are kept and ranked
    by :func:`caption_scores`. Optionally they are refined first (``refine_steps`` > 0; off by
    default, as it measured no better on ShapeScenes): each round masks every free word alone and
    rewrites the one word whose best replacement gains the most log-probability, until no word
    gains.
    """

    ORDERS = ("confidence", "left-to-right")

    def __init__(
        self,
        order: str = "confidence",
        beam: int = 4,
        refine_steps: int = 0,
        match_weight: float = 1.0,
        temperature: float = 0.0,
        top_k: int | None = None,
        chunk: int = 256,
    ) -> None:
        if order not in self.ORDERS:
            raise XLXMERTError(f"unknown fill order {order!r}; choose one of {', '.join(self.ORDERS)}")
        if beam < 1 or refine_steps < 0 or chunk < 1:
            raise XLXMERTError("beam and chunk must be >= 1 and refine_steps >= 0")
        if temperature < 0:
            raise XLXMERTError(f"temperature must be >= 0 (0 = argmax), got {temperature}")
        if top_k is not None and temperature == 0:
            raise XLXMERTError("top-k sampling needs a temperature > 0 (temperature 0 means argmax)")
        self.order, self.beam, self.refine_steps = order, beam, refine_steps
        self.match_weight, self.temperature, self.top_k, self.chunk = (
            match_weight,
            float(temperature),
            top_k,
            chunk,
        )

    def fill(
        self,
        predict_rows: PredictRows,
        input_ids: torch.Tensor,
        rows: torch.Tensor,
        tokens: CaptionTokens,
        generators: Sequence[torch.Generator | None],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fill every ``[MASK]`` of ``input_ids: LongTensor[R, L]``, one per row and model call.
        Returns the filled ids and FloatTensor[R]: the mean log-probability of the written words."""
        ids = input_ids.clone()
        total = torch.zeros(len(ids))
        count = (ids == tokens.mask_id).sum(1).clamp(min=1)
        while True:
            active = (ids == tokens.mask_id).any(1).nonzero().flatten()
            if len(active) == 0:
                return ids, total / count
            logits, _ = _run(predict_rows, ids[active], rows[active], tokens.pad_id, self.chunk)
            lp = tokens.log_probs(logits)  # [A, L', V]
            masked = ids[active, : lp.shape[1]] == tokens.mask_id
            if self.order == "confidence":
                conf = lp.max(-1).values.masked_fill(~masked, float("-inf"))
                pos = conf.argmax(1)
            else:
                pos = masked.float().argmax(1)  # the leftmost mask
            step_lp = lp[torch.arange(len(active)), pos]  # [A, V]
            words, _ = choose_ids(
                step_lp.unsqueeze(1), self.temperature, self.top_k, [generators[int(r)] for r in active]
            )
            words = words[:, 0]
            ids[active, pos] = words
            total[active] += step_lp.gather(1, words.unsqueeze(1)).squeeze(1)

    def refine(
        self,
        predict_rows: PredictRows,
        input_ids: torch.Tensor,
        free: torch.Tensor,
        rows: torch.Tensor,
        tokens: CaptionTokens,
    ) -> torch.Tensor:
        """Rewrite one free word per round where the model, masking that word alone, prefers
        another; at most ``refine_steps`` rounds per row. Returns the refined LongTensor[R, L]."""
        ids = input_ids.clone()
        active = torch.arange(len(ids))
        for _ in range(self.refine_steps):
            if len(active) == 0:
                break
            word_lp, best_ids, best_lp = word_log_probs(
                predict_rows, ids[active], free[active], rows[active], tokens, self.chunk
            )
            gain = (best_lp - word_lp).masked_fill(~free[active], 0.0)
            best_gain, pos = gain.max(1)
            change = best_gain > 1e-6
            changed = active[change]
            ids[changed, pos[change]] = best_ids[change, pos[change]]
            active = changed
        return ids

    def decode(
        self,
        predict_rows: PredictRows,
        prefixes: Sequence[Sequence[int]],
        max_length: int,
        tokens: CaptionTokens,
        lengths: Sequence[int] | None = None,
        num_captions: int = 1,
        generator: GeneratorArg = None,
    ) -> CaptionDecoderOutput:
        """The ``num_captions`` best distinct captions of each image (image b shows ``prefixes[b]``),
        best first; ``lengths``: the candidate numbers of word pieces (prefix included), None = all."""
        batch = len(prefixes)
        gens = row_generators(generator, batch)
        draws = 1 if self.temperature == 0 else num_captions
        plan = []  # (image, length) per caption row
        for b, prefix in enumerate(prefixes):
            allowed = range(len(prefix) + 1, max_length - 1)
            wanted = allowed if lengths is None else [n for n in lengths if n in allowed]
            if not wanted:
                raise XLXMERTError(
                    f"no caption length fits: the prefix has {len(prefix)} word pieces and the model "
                    f"reads at most {max_length - 2}; ask for a length between {len(prefix) + 1} and "
                    f"{max_length - 2}"
                )
            plan += [(b, n) for n in wanted for _ in range(draws)]
        rows = torch.tensor([b for b, _ in plan], dtype=torch.long)
        blank = tokens.blank([prefixes[b] for b, _ in plan], [n for _, n in plan], max_length)
        free = blank == tokens.mask_id
        filled, fill_lp = self.fill(predict_rows, blank, rows, tokens, [gens[b] for b, _ in plan])
        _, match = _run(predict_rows, filled, rows, tokens.pad_id, self.chunk)
        first = fill_lp + self.match_weight * match
        keep = []
        for b in range(batch):
            mine = (rows == b).nonzero().flatten()
            top = first[mine].argsort(descending=True, stable=True)[: max(self.beam, num_captions)]
            keep.append(mine[top])
        keep = torch.cat(keep)
        refined = self.refine(predict_rows, filled[keep], free[keep], rows[keep], tokens)
        scores = caption_scores(
            predict_rows, refined, free[keep], rows[keep], tokens, self.match_weight, self.chunk
        )
        out_rows = []
        for b in range(batch):
            mine = (rows[keep] == b).nonzero().flatten()
            seen: list[list[int]] = []
            for r in mine[scores[mine].argsort(descending=True, stable=True)].tolist():
                words = refined[r].tolist()
                if words not in seen:
                    seen.append(words)
                    out_rows.append(r)
                if len(seen) == num_captions:
                    break
            if len(seen) < num_captions:
                raise XLXMERTError(
                    f"only {len(seen)} distinct captions of image {b + 1} for {num_captions} asked; "
                    "let the length vary (length auto) or sample (temperature > 0)"
                )
        picked = torch.tensor(out_rows, dtype=torch.long)
        ids = refined[picked]
        return CaptionDecoderOutput(
            input_ids=ids, attention_mask=(ids != tokens.pad_id).long(), scores=scores[picked]
        )
