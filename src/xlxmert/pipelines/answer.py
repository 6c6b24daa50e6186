"""AnswerPipeline: image + question → an answer and its probability.

With a fine-tuned VQA or GQA head in the model folder (``heads/vqa/``, ``heads/gqa/``: ``xlxmert
finetune``) the pipeline answers with it (and the transformer weights fine-tuned with it); without
one, with the pretraining QA head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from xlxmert.data.tokenizer import TextTokenizer
from xlxmert.errors import XLXMERTError
from xlxmert.models.grid_embedding import GridEmbeddingModel
from xlxmert.models.heads import TaskHead, TaskModel, available_heads, load_task_head
from xlxmert.pipelines.common import (
    ImageEncoder,
    ImageInput,
    ImageTextPipeline,
    load_core_components,
    tokenize_texts,
    visual_inputs,
)
from xlxmert.utils.hub import resolve_model_folder

ANSWER_HEADS = ("vqa", "gqa")


@dataclass
class AnswerOutput:
    """``answers``: the most probable answer per question; ``probabilities``: its probability
    (softmax over the answers; for a VQA head, trained with per-answer BCE, the sigmoid of its
    logit: the predicted soft score); ``top``: the ``top_k`` (answer, probability) pairs."""

    answers: list[str]
    probabilities: list[float]
    top: list[list[tuple[str, float]]]


class AnswerPipeline(ImageTextPipeline):
    """Visual question answering with a fine-tuned VQA/GQA head (``head``), else the pretraining
    QA head (answers from ``transformer/answers.json``)."""

    def __init__(
        self,
        tokenizer: TextTokenizer,
        transformer: GridEmbeddingModel,
        image_encoder: ImageEncoder,
        head: TaskHead | None = None,
    ) -> None:
        self.head = head
        if head is not None:
            if head.config.task not in ANSWER_HEADS:
                raise XLXMERTError(f"AnswerPipeline needs a vqa or gqa head, got a {head.config.task} head")
            super().__init__(tokenizer, transformer, image_encoder)
            return
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

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, head: str | None = None) -> AnswerPipeline:
        """Load a model folder. ``head``: ``"vqa"`` or ``"gqa"`` to answer with that fine-tuned head
        (an error if the folder has none); None: the folder's VQA head, else its GQA head, else the
        pretraining QA head."""
        if head is not None and head not in ANSWER_HEADS:
            raise XLXMERTError(f"unknown answer head {head!r}; choose one of {ANSWER_HEADS}")
        model_dir = resolve_model_folder(model_dir)
        tokenizer, vocabulary, transformer = load_core_components(model_dir)
        if head is None:
            head = next((t for t in ANSWER_HEADS if t in available_heads(model_dir)), None)
        task_head = None if head is None else load_task_head(model_dir, head, transformer)
        encoder = ImageEncoder.from_pretrained(model_dir, transformer.config.grid_size, vocabulary)
        return cls(tokenizer, transformer.eval(), encoder, task_head)

    @property
    def answers(self) -> list[str]:
        """The answer list of the head in use."""
        return list(self.head.answers if self.head is not None else self.transformer.answers)

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
        device = self.device
        visual = {k: v.to(device) for k, v in visual_inputs(self.transformer, feats, ids).items()}
        input_ids, attention_mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
        if self.head is None:
            logits = self.transformer(input_ids, attention_mask, **visual).qa_logits.float().cpu()
            probs = logits.softmax(dim=-1)
        else:
            logits = (
                TaskModel(self.transformer, self.head)(input_ids, attention_mask, next(iter(visual.values())))
                .float()
                .cpu()
            )
            probs = logits.sigmoid() if self.head.config.task == "vqa" else logits.softmax(dim=-1)
        values, indices = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        answers = self.answers
        top = [[(answers[int(i)], float(v)) for v, i in zip(vs, idx)] for vs, idx in zip(values, indices)]
        return AnswerOutput(answers=[t[0][0] for t in top], probabilities=[t[0][1] for t in top], top=top)
