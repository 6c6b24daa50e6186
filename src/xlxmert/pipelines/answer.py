"""AnswerPipeline: image + question → the QA head's answer and its probability."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from xlxmert.data.tokenizer import TextTokenizer
from xlxmert.errors import XLXMERTError
from xlxmert.models.transformer import XLxmertForPreTraining
from xlxmert.pipelines.common import (
    ImageEncoder,
    ImageInput,
    ImageTextPipeline,
    tokenize_texts,
    visual_inputs,
)


@dataclass
class AnswerOutput:
    """``answers``: the most probable answer per question; ``probabilities``: its softmax
    probability over the answer list; ``top``: the ``top_k`` (answer, probability) pairs."""

    answers: list[str]
    probabilities: list[float]
    top: list[list[tuple[str, float]]]


class AnswerPipeline(ImageTextPipeline):
    """Visual question answering with the QA head (answers from ``transformer/answers.json``)."""

    def __init__(
        self, tokenizer: TextTokenizer, transformer: XLxmertForPreTraining, image_encoder: ImageEncoder
    ) -> None:
        if not getattr(transformer, "answers", None):
            raise XLXMERTError(
                "this model has no answer list (transformer/answers.json); pretrain it with question data"
            )
        if len(transformer.answers) != transformer.config.num_answers:
            raise XLXMERTError(
                f"answers.json lists {len(transformer.answers)} answers but the QA head has "
                f"{transformer.config.num_answers}; the model folder is inconsistent"
            )
        super().__init__(tokenizer, transformer, image_encoder)

    @torch.no_grad()
    def __call__(
        self,
        images: Sequence[ImageInput] | ImageInput,
        questions: Sequence[str] | str,
        top_k: int = 5,
    ) -> AnswerOutput:
        """Answer ``questions[b]`` about ``images[b]`` (one image may serve several questions)."""
        questions = [questions] if isinstance(questions, str) else list(questions)
        tokens = tokenize_texts(
            self.tokenizer, questions, self.transformer.config.max_text_length, what="question"
        )
        feats, ids = self.image_encoder(images)
        if feats.shape[0] == 1 and len(questions) > 1:
            feats, ids = feats.expand(len(questions), -1, -1), ids.expand(len(questions), -1)
        if feats.shape[0] != len(questions):
            raise XLXMERTError(
                f"got {feats.shape[0]} images for {len(questions)} questions; give one, or one each"
            )
        out = self.transformer(
            tokens.input_ids, tokens.attention_mask, **visual_inputs(self.transformer, feats, ids)
        )
        probs = out.qa_logits.float().softmax(dim=-1)
        values, indices = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        answers = self.transformer.answers
        top = [[(answers[int(i)], float(v)) for v, i in zip(vs, idx)] for vs, idx in zip(values, indices)]
        return AnswerOutput(answers=[t[0][0] for t in top], probabilities=[t[0][1] for t in top], top=top)
