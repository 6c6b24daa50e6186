"""CaptionPipeline (paper §7.3, Fig. 5): image → grid features → visual words → caption.

The image goes through the model's own backbone (``backbone/``) and vocabulary (``vocabulary/``);
X-LXMERT reads the visual-word ids, LXMERT+Grid the exact grid features. The words come from the
MLM head by one of two decoders (:mod:`xlxmert.sampling.caption`): ``"mask-predict"`` (the
default: confidence-ordered filling, refined, at the length the model scores best) or
``"gibbs"`` (the paper's Gibbs sampling). Both keep the prefix words and never write
``[CLS]``/``[SEP]``; each caption comes with its score (:func:`caption_scores`: the model's mean
log-probability of its words plus its log p(match) with the image).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from xlxmert.errors import XLXMERTError
from xlxmert.pipelines.common import ImageInput, ImageTextPipeline, visual_inputs
from xlxmert.sampling.caption import (
    CaptionSampler,
    CaptionTokens,
    MaskPredictCaptionDecoder,
    caption_scores,
)
from xlxmert.utils.seeding import torch_generator

CAPTION_SAMPLERS = ("mask-predict", "gibbs")


@dataclass
class CaptionOutput:
    """``captions``: ``num_captions`` per image, best first (image b's n-th at b·N + n);
    ``scores``: the model's score of each (higher is better); ``input_ids``: LongTensor[B·N, L]
    (``[CLS] .. [SEP]``, padded)."""

    captions: list[str]
    scores: list[float]
    input_ids: torch.Tensor


class CaptionPipeline(ImageTextPipeline):
    """Image-to-text with the MLM head. Components: tokenizer, transformer, image encoder."""

    def _prefix_ids(self, prefix: str) -> list[int]:
        if not prefix.strip():
            return []
        tokens = self.tokenizer([prefix], max_length=self.transformer.config.max_text_length)
        if tokens.truncated[0]:
            raise XLXMERTError(f"the prefix {prefix!r} is longer than the model's text limit; shorten it")
        n = int(tokens.attention_mask[0].sum())
        return tokens.input_ids[0, 1 : n - 1].tolist()

    @property
    def caption_tokens(self) -> CaptionTokens:
        tok = self.tokenizer
        return CaptionTokens(tok.cls_id, tok.sep_id, tok.mask_id, tok.pad_id, tuple(sorted(tok.special_ids)))

    @torch.no_grad()
    def __call__(
        self,
        images: Sequence[ImageInput] | ImageInput,
        prefix: str | Sequence[str] = "",
        length: int | str = "auto",
        sampler: str = "mask-predict",
        num_captions: int = 1,
        sweeps: int = 2,
        seed: int = 0,
        temperature: float = 0.0,
        top_k: int | None = None,
    ) -> CaptionOutput:
        """Caption each image ``num_captions`` times, the captions starting with ``prefix`` (one
        string for all images or one per image). ``length``: word pieces per caption (prefix
        included), or ``"auto"``: every length that fits, the best-scored kept. ``sweeps``: Gibbs
        sweeps (``sampler="gibbs"``). ``temperature`` 0 writes the most probable words; above 0
        samples them, each image from its own generator seeded with ``seed``."""
        if sampler not in CAPTION_SAMPLERS:
            raise XLXMERTError(
                f"unknown caption sampler {sampler!r}; choose one of {', '.join(CAPTION_SAMPLERS)}"
            )
        if num_captions < 1:
            raise XLXMERTError(f"num_captions must be at least 1, got {num_captions}")
        cfg = self.transformer.config
        lengths = self._lengths(length, cfg.max_text_length)
        feats, ids = self.image_encoder(images)
        batch = feats.shape[0]
        prefixes = [prefix] * batch if isinstance(prefix, str) else list(prefix)
        if len(prefixes) != batch:
            raise XLXMERTError(f"got {len(prefixes)} prefixes for {batch} images; give one, or one per image")
        prefix_ids = [self._prefix_ids(p) for p in prefixes]
        device = self.device
        visual = {k: v.to(device) for k, v in visual_inputs(self.transformer, feats, ids).items()}

        def predict_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: torch.Tensor):
            # The decoders build the words on the CPU; the model reads them on its device.
            rows = rows.to(device)
            out = self.transformer(
                input_ids.to(device), attention_mask.to(device), **{k: v[rows] for k, v in visual.items()}
            )
            return out.mlm_logits.float().cpu(), out.itm_logits.float().log_softmax(dim=-1)[:, 1].cpu()

        tokens = self.caption_tokens
        if sampler == "mask-predict":
            decoder = MaskPredictCaptionDecoder(temperature=temperature, top_k=top_k)
            out = decoder.decode(
                predict_rows,
                prefix_ids,
                cfg.max_text_length,
                tokens,
                lengths=lengths,
                num_captions=num_captions,
                generator=[torch_generator(seed) for _ in range(batch)],
            )
            input_ids, scores = out.input_ids, out.scores
        else:
            gibbs = CaptionSampler(sweeps=sweeps, temperature=temperature, top_k=top_k)
            input_ids, scores = self._gibbs(gibbs, predict_rows, prefix_ids, lengths, num_captions, seed)
        return CaptionOutput(
            captions=self.tokenizer.batch_decode(input_ids), scores=scores.tolist(), input_ids=input_ids
        )

    @staticmethod
    def _lengths(length: int | str, max_text_length: int) -> list[int] | None:
        if length == "auto":
            return None
        if isinstance(length, str) and length.isdigit():
            length = int(length)
        if not isinstance(length, int) or not 1 <= length <= max_text_length - 2:
            raise XLXMERTError(
                f"caption length must be 'auto' or between 1 and {max_text_length - 2} word pieces, "
                f"got {length!r}"
            )
        return [length]

    def _gibbs(
        self,
        gibbs: CaptionSampler,
        predict_rows,
        prefix_ids: list[list[int]],
        lengths: list[int] | None,
        num_captions: int,
        seed: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gibbs sampling at each candidate length (draw k of image b seeded with ``seed + k``);
        the ``num_captions`` best-scored distinct captions of each image, best first."""
        cfg, tokens, batch = self.transformer.config, self.caption_tokens, len(prefix_ids)
        longest = max(len(p) for p in prefix_ids)
        candidates = lengths or list(range(longest + 1, cfg.max_text_length - 1))
        rows = torch.arange(batch)
        found: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
        for n in candidates:
            for k in range(num_captions if lengths else 1):
                out = gibbs.sample(
                    lambda ids, mask: predict_rows(ids, mask, rows)[0],
                    prefix_ids,
                    num_words=n,
                    max_length=cfg.max_text_length,
                    cls_id=tokens.cls_id,
                    sep_id=tokens.sep_id,
                    mask_id=tokens.mask_id,
                    pad_id=tokens.pad_id,
                    special_ids=tokens.special_ids,
                    generator=[torch_generator(seed + k) for _ in range(batch)],
                )
                free = tokens.blank(prefix_ids, [n] * batch, cfg.max_text_length) == tokens.mask_id
                scores = caption_scores(predict_rows, out.input_ids, free, rows, tokens)
                for b in range(batch):
                    found[b].append((float(scores[b]), out.input_ids[b].tolist()))
        picked_ids, picked_scores = [], []
        for b in range(batch):
            distinct = {tuple(ids): s for s, ids in sorted(found[b], key=lambda c: c[0])}
            best = sorted(distinct.items(), key=lambda c: -c[1])[:num_captions]
            if len(best) < num_captions:
                raise XLXMERTError(
                    f"only {len(best)} distinct captions of image {b + 1} for {num_captions} asked; "
                    "let the length vary (length auto) or sample (temperature > 0)"
                )
            picked_ids += [list(ids) for ids, _ in best]
            picked_scores += [s for _, s in best]
        return torch.tensor(picked_ids, dtype=torch.long), torch.tensor(picked_scores)
