"""CaptionPipeline (paper §7.3, Fig. 5): image → grid features → visual words → Gibbs-sampled caption.

The image goes through the model's own backbone (``backbone/``) and vocabulary (``vocabulary/``);
X-LXMERT reads the visual-word ids, LXMERT+Grid the exact grid features. The words come from the
MLM head by :class:`xlxmert.sampling.caption.CaptionSampler` (prefix words kept, ``[CLS]``/``[SEP]``
never overwritten, last position filled).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from xlxmert.errors import XLXMERTError
from xlxmert.pipelines.common import ImageInput, ImageTextPipeline, visual_inputs
from xlxmert.sampling.caption import CaptionSampler
from xlxmert.utils.seeding import torch_generator


@dataclass
class CaptionOutput:
    """``captions``: one string per image; ``input_ids``: LongTensor[B, L] (``[CLS] .. [SEP]``)."""

    captions: list[str]
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

    @torch.no_grad()
    def __call__(
        self,
        images: Sequence[ImageInput] | ImageInput,
        prefix: str | Sequence[str] = "",
        length: int = 12,
        sweeps: int = 2,
        seed: int = 0,
        temperature: float = 0.0,
        top_k: int | None = None,
    ) -> CaptionOutput:
        """Caption each image with ``length`` word pieces, the first ones given by ``prefix`` (one
        string for all images or one per image). Each image draws from its own generator seeded
        with ``seed``."""
        feats, ids = self.image_encoder(images)
        batch = feats.shape[0]
        prefixes = [prefix] * batch if isinstance(prefix, str) else list(prefix)
        if len(prefixes) != batch:
            raise XLXMERTError(f"got {len(prefixes)} prefixes for {batch} images; give one, or one per image")
        cfg = self.transformer.config
        if not 1 <= length <= cfg.max_text_length - 2:
            raise XLXMERTError(
                f"caption length must be between 1 and {cfg.max_text_length - 2} word pieces, got {length}"
            )
        visual = visual_inputs(self.transformer, feats, ids)

        def predict(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.transformer(input_ids, attention_mask, **visual).mlm_logits

        tok = self.tokenizer
        out = CaptionSampler(sweeps=sweeps, temperature=temperature, top_k=top_k).sample(
            predict,
            [self._prefix_ids(p) for p in prefixes],
            num_words=length,
            max_length=cfg.max_text_length,
            cls_id=tok.cls_id,
            sep_id=tok.sep_id,
            mask_id=tok.mask_id,
            pad_id=tok.pad_id,
            special_ids=sorted(tok.special_ids),
            generator=[torch_generator(seed) for _ in range(batch)],
        )
        return CaptionOutput(captions=tok.batch_decode(out.input_ids), input_ids=out.input_ids)
