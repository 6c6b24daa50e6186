"""Task heads for fine-tuning (paper §5 "Finetuning", C.6; LXMERT's recipes): VQA, GQA, NLVR2.

A head reads only the transformer's pooled output (``XLxmertOutput.pooled [B, H]``): two fully
connected layers with GeLU and LayerNorm, the shape of the pretraining QA head
(``Linear(I, 2H) → GeLU → LayerNorm(2H) → Linear(2H, labels)``; I = H, or 2H for NLVR2, whose two
image–sentence encodings are concatenated as in LXMERT).

- :class:`VQAHead`: soft scores ``min(1, n/3)`` over the answer vocabulary, binary cross-entropy
  (summed over answers, averaged over the batch, as LXMERT).
- :class:`GQAHead`: cross-entropy over its answers (questions whose answer is outside: ignored).
- :class:`NLVR2Head`: two classes (index 1 = the statement is true), cross-entropy.

A head is a component of a model folder: ``heads/<task>/`` holds ``config.json``,
``model.safetensors`` (the head), ``answers.json`` (VQA/GQA) and ``transformer.safetensors``,
the transformer's weights fine-tuned with it (the folder's own ``transformer/`` stays the
pretrained one, so painting and captioning are unchanged and several heads can share a folder).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from xlxmert.errors import XLXMERTError
from xlxmert.utils.weights import PretrainedMixin, load_weights, save_weights

TASKS = ("vqa", "gqa", "nlvr2")
HEADS_DIR = "heads"
ANSWERS_FILE = "answers.json"
TRANSFORMER_FILE = "transformer.safetensors"
INITS = ("pretrained", "scratch")


@dataclass(frozen=True)
class TaskHeadConfig:
    """``task``: vqa, gqa or nlvr2; ``hidden_size`` H of the transformer; ``num_labels``: answers
    (VQA/GQA) or 2 (NLVR2); ``init``: how the fine-tuned transformer started (``pretrained`` or
    ``scratch``, the control)."""

    task: str
    hidden_size: int
    num_labels: int
    init: str = "pretrained"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise XLXMERTError(f"unknown task {self.task!r}; choose one of {TASKS}")
        if self.init not in INITS:
            raise XLXMERTError(f"unknown init {self.init!r}; choose one of {INITS}")
        if self.num_labels < 1 or self.hidden_size < 1:
            raise XLXMERTError("a task head needs hidden_size and num_labels of at least 1")

    @property
    def input_size(self) -> int:
        """I: H, or 2H for NLVR2 (two pooled outputs side by side)."""
        return self.hidden_size * (2 if self.task == "nlvr2" else 1)


class TaskHead(PretrainedMixin, nn.Module):
    """``forward(pooled: FloatTensor[B, I]) -> logits FloatTensor[B, num_labels]``.

    ``answers``: the label names (VQA/GQA), or None (NLVR2). Subclasses define :meth:`loss`.
    """

    config_class = TaskHeadConfig
    missing_hint = "fine-tune it first: xlxmert finetune --task TASK"

    def __init__(self, config: TaskHeadConfig, answers: list[str] | None = None) -> None:
        super().__init__()
        self.config = config
        self.answers = answers
        inner = 2 * config.hidden_size
        # Module names of transformers' LxmertVisualAnswerHead, so the QA head's weights map 1:1.
        self.logit_fc = nn.Sequential(
            nn.Linear(config.input_size, inner),
            nn.GELU(),
            nn.LayerNorm(inner, eps=1e-12),
            nn.Linear(inner, config.num_labels),
        )
        for module in self.logit_fc:
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.logit_fc(pooled)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- persistence -----------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> Path:
        folder = super().save_pretrained(folder)
        if self.answers is not None:
            (folder / ANSWERS_FILE).write_text(json.dumps(self.answers, indent=0) + "\n")
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> TaskHead:
        """Load ``heads/<task>/`` as the class its config names (any subclass may be called)."""
        from xlxmert.utils.config import load_config

        folder = Path(folder)
        if not folder.is_dir():
            raise XLXMERTError(f"task head folder not found: {folder} ({cls.missing_hint})")
        config = load_config(TaskHeadConfig, folder)
        answers = None
        if (folder / ANSWERS_FILE).is_file():
            answers = json.loads((folder / ANSWERS_FILE).read_text())
            if len(answers) != config.num_labels:
                raise XLXMERTError(
                    f"{folder / ANSWERS_FILE} lists {len(answers)} answers but the head has "
                    f"{config.num_labels} outputs; the head folder is inconsistent (fine-tune it again)"
                )
        elif config.task != "nlvr2":
            raise XLXMERTError(f"{folder} has no {ANSWERS_FILE}; the {config.task} head needs its answers")
        head = HEAD_CLASSES[config.task](config, answers)
        load_weights(head, folder)
        return head.eval()


class VQAHead(TaskHead):
    """VQA v2: soft-score targets ``FloatTensor[B, A]``, BCE summed over answers, batch mean."""

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return soft_score_loss(logits, target)


class GQAHead(TaskHead):
    """GQA: answer indices ``LongTensor[B]`` (-1: outside the vocabulary, ignored), cross-entropy."""

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if bool((target < 0).all()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float(), target, ignore_index=-1)


class NLVR2Head(TaskHead):
    """NLVR2: ``forward(pooled: [B, 2H])`` on ``pair(left [B, H], right [B, H])``; labels
    ``LongTensor[B]`` (1 = true), cross-entropy."""

    @staticmethod
    def pair(pooled_left: torch.Tensor, pooled_right: torch.Tensor) -> torch.Tensor:
        """``FloatTensor[B, 2H]``: the sentence with the left image, then with the right image."""
        return torch.cat([pooled_left, pooled_right], dim=-1)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target)


HEAD_CLASSES: dict[str, type[TaskHead]] = {"vqa": VQAHead, "gqa": GQAHead, "nlvr2": NLVR2Head}


def soft_score_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """VQA loss: ``BCE(sigmoid(logits), target)`` summed over the A answers, averaged over the batch.

    ``logits, target: FloatTensor[B, A]``, target = soft scores ``min(1, annotators / 3)``.
    """
    per_answer = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    return per_answer.sum(dim=1).mean()


def build_head(
    task: str, hidden_size: int, answers: list[str] | None = None, init: str = "pretrained"
) -> TaskHead:
    """A fresh head: ``answers`` name the outputs of VQA/GQA heads; NLVR2 has two."""
    if task != "nlvr2" and not answers:
        raise XLXMERTError(f"a {task} head needs an answer vocabulary")
    num_labels = 2 if task == "nlvr2" else len(answers or [])
    config = TaskHeadConfig(task=task, hidden_size=hidden_size, num_labels=num_labels, init=init)
    return HEAD_CLASSES[task](config, None if task == "nlvr2" else list(answers or []))


def init_from_qa_head(head: TaskHead, qa_head: nn.Module, qa_answers: list[str] | None) -> int:
    """Start a VQA/GQA head from the pretrained QA head (paper C.6) where the answer sets match.

    The hidden layer and LayerNorm are copied; each output unit whose answer the QA head also has
    takes that answer's row and bias. ``qa_head`` is transformers' ``LxmertVisualAnswerHead``.
    Returns how many answers were copied (0 and nothing copied when none is shared).
    """
    if head.config.task == "nlvr2" or not qa_answers or head.answers is None:
        return 0
    qa_index = {a: i for i, a in enumerate(qa_answers)}
    shared = [(i, qa_index[a]) for i, a in enumerate(head.answers) if a in qa_index]
    if not shared:
        return 0
    src = qa_head.logit_fc
    if src[0].weight.shape != head.logit_fc[0].weight.shape:
        return 0
    with torch.no_grad():
        for k in (0, 2):
            head.logit_fc[k].weight.copy_(src[k].weight)
            head.logit_fc[k].bias.copy_(src[k].bias)
        ours, theirs = zip(*shared)
        head.logit_fc[3].weight[list(ours)] = src[3].weight[list(theirs)]
        head.logit_fc[3].bias[list(ours)] = src[3].bias[list(theirs)]
    return len(shared)


def head_dir(model_dir: str | Path, task: str) -> Path:
    """``model_dir/heads/<task>``."""
    return Path(model_dir) / HEADS_DIR / task


def available_heads(model_dir: str | Path) -> list[str]:
    """The tasks with a fine-tuned head in ``model_dir`` (in :data:`TASKS` order)."""
    return [t for t in TASKS if (head_dir(model_dir, t) / "config.json").is_file()]


def save_task_head(model_dir: str | Path, head: TaskHead, transformer: nn.Module) -> Path:
    """Write ``heads/<task>/``: the head and the transformer fine-tuned with it."""
    folder = head.save_pretrained(head_dir(model_dir, head.config.task))
    save_weights(transformer, folder, name=TRANSFORMER_FILE)
    return folder


def load_task_head(model_dir: str | Path, task: str, transformer: nn.Module) -> TaskHead:
    """Load ``heads/<task>/`` and put its fine-tuned weights into ``transformer`` (in place)."""
    folder = head_dir(model_dir, task)
    if not (folder / "config.json").is_file():
        raise XLXMERTError(
            f"{model_dir} has no fine-tuned {task} head (heads/{task}/); "
            f"run xlxmert finetune --task {task} --model {model_dir} first"
        )
    head = TaskHead.from_pretrained(folder)
    if head.config.task != task:
        raise XLXMERTError(f"{folder} holds a {head.config.task} head, not a {task} head")
    hidden = getattr(getattr(transformer, "config", None), "hidden_size", head.config.hidden_size)
    if hidden != head.config.hidden_size:
        raise XLXMERTError(
            f"{folder} was fine-tuned on a transformer of hidden size {head.config.hidden_size}, "
            f"this folder's has {hidden}"
        )
    load_weights(transformer, folder, name=TRANSFORMER_FILE)
    return head


class TaskModel(nn.Module):
    """The transformer and a task head as one module (what fine-tuning trains and pipelines run).

    ``forward(input_ids, attention_mask: LongTensor[B, L], visual: Tensor) -> logits [B, labels]``
    where ``visual`` is ``LongTensor[B, M]`` visual-word ids (X-LXMERT) or ``FloatTensor[B, M, D]``
    grid features (LXMERT+Grid), and for NLVR2 ``[B, 2, M]`` / ``[B, 2, M, D]``: the left and the
    right image, each encoded with the sentence (LXMERT's NLVR2 recipe), pooled outputs joined.
    """

    def __init__(self, transformer: nn.Module, head: TaskHead) -> None:
        super().__init__()
        self.transformer = transformer
        self.head = head

    def pooled(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, visual: torch.Tensor
    ) -> torch.Tensor:
        """``FloatTensor[B, H]``: the transformer's pooled output for one image per text."""
        key = "visual_feats" if visual.is_floating_point() else "visual_ids"
        return self.transformer(input_ids, attention_mask, **{key: visual}).pooled

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, visual: torch.Tensor
    ) -> torch.Tensor:
        if self.head.config.task != "nlvr2":
            return self.head(self.pooled(input_ids, attention_mask, visual))
        B = input_ids.shape[0]
        if visual.shape[1] != 2:
            raise XLXMERTError(
                f"NLVR2 wants two images per sentence, got visual of shape {tuple(visual.shape)}"
            )
        both = self.pooled(
            input_ids.repeat_interleave(2, dim=0),
            attention_mask.repeat_interleave(2, dim=0),
            visual.reshape(2 * B, *visual.shape[2:]),
        )  # rows: sentence b with left, sentence b with right
        both = both.reshape(B, 2, -1)
        return self.head(NLVR2Head.pair(both[:, 0], both[:, 1]))
