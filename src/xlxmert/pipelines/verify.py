"""NLVR2Pipeline: a left image, a right image and a statement → is the statement true?

Reads a model folder fine-tuned with ``xlxmert finetune --task nlvr2`` (``heads/nlvr2/``)::

    pipe = NLVR2Pipeline.from_pretrained("FT")
    out = pipe([left], [right], ["the left image has more circles than the right image"])
    out.labels[0], out.probabilities[0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from xlxmert.data.tokenizer import TextTokenizer
from xlxmert.errors import XLXMERTError
from xlxmert.models.grid_embedding import GridEmbeddingModel
from xlxmert.models.heads import TaskHead, TaskModel, load_task_head
from xlxmert.pipelines.common import (
    ImageEncoder,
    ImageInput,
    ImageTextPipeline,
    load_core_components,
    tokenize_texts,
    visual_inputs,
)
from xlxmert.utils.hub import resolve_model_folder


@dataclass
class VerifyOutput:
    """``labels[b]``: the statement judged true; ``probabilities[b]``: the probability of True."""

    labels: list[bool]
    probabilities: list[float]


class NLVR2Pipeline(ImageTextPipeline):
    """Statement verification over image pairs with the NLVR2 head (LXMERT's NLVR2 recipe: the
    statement is encoded with each image, the two pooled outputs are joined and classified)."""

    def __init__(
        self,
        tokenizer: TextTokenizer,
        transformer: GridEmbeddingModel,
        head: TaskHead,
        image_encoder: ImageEncoder,
    ) -> None:
        if head.config.task != "nlvr2":
            raise XLXMERTError(f"NLVR2Pipeline needs an nlvr2 head, got a {head.config.task} head")
        super().__init__(tokenizer, transformer, image_encoder)
        self.head = head.eval()
        self.model = TaskModel(self.transformer, self.head).eval()

    @classmethod
    def from_pretrained(cls, model_dir: str | Path) -> NLVR2Pipeline:
        """Load ``tokenizer/``, ``transformer/`` (with ``heads/nlvr2/``'s fine-tuned weights),
        ``backbone/`` and ``vocabulary/`` of a model folder (or of a Hub repository id's snapshot)."""
        model_dir = resolve_model_folder(model_dir)
        tokenizer, vocabulary, transformer = load_core_components(model_dir)
        head = load_task_head(model_dir, "nlvr2", transformer)
        encoder = ImageEncoder.from_pretrained(model_dir, transformer.config.grid_size, vocabulary)
        return cls(tokenizer, transformer.eval(), head, encoder)

    @torch.no_grad()
    def __call__(
        self,
        left_images: Sequence[ImageInput],
        right_images: Sequence[ImageInput],
        statements: Sequence[str],
    ) -> VerifyOutput:
        """Judge ``statements[b]`` about the pair (``left_images[b]``, ``right_images[b]``)."""
        statements = [statements] if isinstance(statements, str) else list(statements)
        if not (len(left_images) == len(right_images) == len(statements)):
            raise XLXMERTError(
                f"got {len(left_images)} left images, {len(right_images)} right images and "
                f"{len(statements)} statements; give one pair per statement"
            )
        transformer = self.model.transformer
        tokens = tokenize_texts(
            self.tokenizer, statements, transformer.config.max_text_length, what="statement"
        )
        pairs = []
        for images in (left_images, right_images):
            feats, ids = self.image_encoder(list(images))
            pairs.append(next(iter(visual_inputs(transformer, feats, ids).values())))
        device = self.device
        visual = torch.stack(pairs, dim=1).to(device)  # [B, 2, M] ids or [B, 2, M, D] features
        logits = self.model(tokens.input_ids.to(device), tokens.attention_mask.to(device), visual)
        probs = logits.float().cpu().softmax(-1)[:, 1]
        return VerifyOutput(labels=[bool(p > 0.5) for p in probs], probabilities=[float(p) for p in probs])
