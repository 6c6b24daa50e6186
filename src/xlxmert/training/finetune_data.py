"""The data of fine-tuning: one task's split, read from ShapeScenes' or the official file layout.

A data root is searched for a task's files in this order (the first found wins):

- VQA v2: ``DATA/<split>/questions_<split>.json`` + ``annotations_<split>.json`` (ShapeScenes, and
  the README's layout for COCO), else the official ``v2_OpenEnded_mscoco_<split>_questions.json``
  + ``v2_mscoco_<split>_annotations.json`` in ``DATA/`` or ``DATA/<split>/`` (split e.g.
  ``train2014``). Images: through ``DATA/<split>/captions_<split>.json`` when present, else COCO's
  ``COCO_<split>_<image id:012d>.jpg`` under ``DATA/<split>/``, ``DATA/images/<split>/``,
  ``DATA/<split>/images/`` or ``DATA/images/``.
- GQA: ``DATA/<split>/gqa_<split>.json``, else the official ``<split>_balanced_questions.json`` in
  ``DATA/`` or ``DATA/<split>/``. Images: through the captions file, else ``<imageId>.jpg`` under
  ``DATA/images/`` or ``DATA/<split>/``.
- NLVR2: ``DATA/<split>/nlvr2_<split>.jsonl``, else the official ``<split>.json`` (JSON lines) in
  ``DATA/`` or ``DATA/<split>/``; image pairs from ``left_url``/``right_url`` or the identifier
  (:class:`~xlxmert.data.datasets.NLVR2Dataset`), under ``DATA/images/<split>/``, ``DATA/<split>/``
  or ``DATA/``.

Images are encoded once, with the model folder's own backbone and vocabulary
(:class:`~xlxmert.pipelines.common.ImageEncoder`), so the transformer sees what it saw in
pretraining: visual-word ids for X-LXMERT, exact grid features for LXMERT+Grid.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from xlxmert.data.datasets import (
    AnswerVocabulary,
    NLVR2Dataset,
    _require,
    _top_level_list,
    normalize_answer,
    read_json,
    read_jsonl,
    vqa_soft_score,
)
from xlxmert.errors import XLXMERTError

LAYOUT_HINT = "write it with `xlxmert data shapes` or lay out the official files as the README says"


@dataclass
class TaskSplit:
    """One split of a task.

    ``texts[i]`` (question or sentence) is about image row ``rows[i]`` (``[n]``; NLVR2: ``[n, 2]``,
    left then right) of ``images`` (unique paths). ``records[i]``: what scoring reads (VQA:
    ``answers`` raw, ``question_type``, ``answer_type``; GQA: ``answer``, ``types``; NLVR2:
    ``label``, ``sentence``, ``identifier``, ``query``). ``labels[i]``: the training answer (VQA:
    the multiple-choice answer, GQA: the answer, both normalised; NLVR2: bool).
    """

    task: str
    texts: list[str]
    rows: np.ndarray
    images: list[Path]
    records: list[dict[str, Any]]
    labels: list[Any]
    files: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, n: int | None) -> TaskSplit:
        """The first ``n`` examples (all when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        return TaskSplit(
            self.task,
            self.texts[:n],
            self.rows[:n],
            self.images,
            self.records[:n],
            self.labels[:n],
            self.files,
        )


def _first(candidates: list[Path], what: str, data_root: Path, split: str) -> Path:
    for path in candidates:
        if path.is_file():
            return path
    names = ", ".join(str(p.relative_to(data_root)) for p in candidates)
    raise XLXMERTError(f"no {what} for split {split!r} in {data_root} (looked for {names}); {LAYOUT_HINT}")


def _image_resolver(data_root: Path, split: str, pattern: str, folders: list[Path]):
    """id → image path: the split's COCO captions file when there is one, else ``pattern`` (a
    format string of ``id``) in the first of ``folders`` that has it."""
    captions = data_root / split / f"captions_{split}.json"
    by_id: dict[str, Path] = {}
    if captions.is_file():
        from xlxmert.data.datasets import CocoCaptions

        coco = CocoCaptions(captions)
        by_id = {str(i): coco.image_path(i) for i in coco.image_ids}

    def resolve(image_id: Any) -> Path:
        if str(image_id) in by_id:
            return by_id[str(image_id)]
        name = pattern.format(id=image_id, int_id=int(image_id) if str(image_id).isdigit() else 0)
        for folder in folders:
            if (folder / name).is_file():
                return folder / name
        raise XLXMERTError(
            f"image {image_id} of split {split!r} not found (looked for {name} in "
            f"{', '.join(str(f) for f in folders)}); {LAYOUT_HINT}"
        )

    return resolve


def _rows_of(paths: list[Path]) -> tuple[list[Path], dict[Path, int]]:
    unique = list(dict.fromkeys(paths))
    return unique, {p: i for i, p in enumerate(unique)}


def _load_vqa(data_root: Path, split: str) -> TaskSplit:
    d = data_root / split
    q_path = _first(
        [
            d / f"questions_{split}.json",
            data_root / f"v2_OpenEnded_mscoco_{split}_questions.json",
            d / f"v2_OpenEnded_mscoco_{split}_questions.json",
        ],
        "VQA questions",
        data_root,
        split,
    )
    a_path = _first(
        [
            q_path.parent / f"annotations_{split}.json",
            q_path.parent / f"v2_mscoco_{split}_annotations.json",
        ],
        "VQA annotations",
        data_root,
        split,
    )
    questions = _top_level_list(read_json(q_path, "VQA questions"), "questions", q_path)
    annotations = {}
    for i, ann in enumerate(_top_level_list(read_json(a_path, "VQA annotations"), "annotations", a_path)):
        _require(ann, ("question_id", "answers"), a_path, f"annotations[{i}]")
        annotations[int(ann["question_id"])] = ann
    resolve = _image_resolver(
        data_root,
        split,
        f"COCO_{split}_{{int_id:012d}}.jpg",
        [d, data_root / "images" / split, d / "images", data_root / "images"],
    )
    texts, paths, records, labels = [], [], [], []
    for i, q in enumerate(questions):
        _require(q, ("question_id", "image_id", "question"), q_path, f"questions[{i}]")
        ann = annotations.get(int(q["question_id"]))
        if ann is None:
            raise XLXMERTError(f"{a_path}: no annotation for question_id {q['question_id']} of {q_path.name}")
        raw = [str(a["answer"]) for a in ann["answers"]]
        votes = Counter(normalize_answer(a) for a in raw)
        labels.append(normalize_answer(ann.get("multiple_choice_answer") or votes.most_common(1)[0][0]))
        texts.append(str(q["question"]))
        paths.append(resolve(q["image_id"]))
        records.append(
            {
                "answers": raw,
                "question_type": str(ann.get("question_type", "")),
                "answer_type": str(ann.get("answer_type", "")),
            }
        )
    images, row_of = _rows_of(paths)
    rows = np.asarray([row_of[p] for p in paths], dtype=np.int64)
    return TaskSplit("vqa", texts, rows, images, records, labels, [q_path, a_path])


def _load_gqa(data_root: Path, split: str) -> TaskSplit:
    d = data_root / split
    path = _first(
        [
            d / f"gqa_{split}.json",
            data_root / f"{split}_balanced_questions.json",
            d / f"{split}_balanced_questions.json",
        ],
        "GQA questions",
        data_root,
        split,
    )
    data = read_json(path, "GQA questions")
    if not isinstance(data, dict):
        raise XLXMERTError(f"{path} should map question ids to questions (GQA format)")
    resolve = _image_resolver(data_root, split, "{id}.jpg", [data_root / "images", d / "images", d])
    texts, paths, records, labels = [], [], [], []
    for qid, q in data.items():
        _require(q, ("imageId", "question", "answer"), path, f"question '{qid}'")
        texts.append(str(q["question"]))
        paths.append(resolve(q["imageId"]))
        labels.append(normalize_answer(q["answer"]))
        records.append({"answer": str(q["answer"]), "types": q.get("types") or {}})
    images, row_of = _rows_of(paths)
    rows = np.asarray([row_of[p] for p in paths], dtype=np.int64)
    return TaskSplit("gqa", texts, rows, images, records, labels, [path])


def _load_nlvr2(data_root: Path, split: str) -> TaskSplit:
    d = data_root / split
    path = _first(
        [d / f"nlvr2_{split}.jsonl", data_root / f"{split}.json", d / f"{split}.json"],
        "NLVR2 statements",
        data_root,
        split,
    )
    roots = [data_root / "images" / split, d, data_root]
    root = next((r for r in roots if r.is_dir() and r != data_root), path.parent)
    items = NLVR2Dataset(path, image_root=root).items
    queries = [str(r.get("query", "")) for r in read_jsonl(path, "NLVR2")]
    for it in items:
        for side in ("left_image", "right_image"):
            if not Path(it[side]).is_file():
                raise XLXMERTError(
                    f"image {it[side]} of NLVR2 statement {it['identifier']} not found; {LAYOUT_HINT}"
                )
    images, row_of = _rows_of([Path(it[s]) for it in items for s in ("left_image", "right_image")])
    rows = np.asarray(
        [[row_of[Path(it["left_image"])], row_of[Path(it["right_image"])]] for it in items], dtype=np.int64
    ).reshape(-1, 2)
    records = [{**it, "query": q} for it, q in zip(items, queries)]
    return TaskSplit(
        "nlvr2",
        [it["sentence"] for it in items],
        rows,
        images,
        records,
        [it["label"] for it in items],
        [path],
    )


LOADERS = {"vqa": _load_vqa, "gqa": _load_gqa, "nlvr2": _load_nlvr2}


def load_task_split(data_root: str | Path, task: str, split: str) -> TaskSplit:
    """Split ``split`` of ``task`` under ``data_root`` (see the module docstring for the layouts)."""
    if task not in LOADERS:
        raise XLXMERTError(f"unknown task {task!r}; choose one of {sorted(LOADERS)}")
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise XLXMERTError(f"data folder not found: {data_root}")
    data = LOADERS[task](data_root, split)
    if not len(data):
        raise XLXMERTError(f"the {task} files of split {split!r} in {data_root} hold no examples")
    return data


def answer_vocabulary(train: TaskSplit, min_count: int, answers_file: str | Path | None) -> AnswerVocabulary:
    """The answers a VQA/GQA head predicts: ``answers_file`` (a JSON list, e.g. the paper's 3129
    VQA answers) or the training answers given at least ``min_count`` times, most frequent first.

    A vocabulary that holds none of the training answers is an error (it cannot be fine-tuned to).
    """
    if answers_file is not None:
        vocab = AnswerVocabulary.load(answers_file)
    else:
        counts = Counter(train.labels)
        kept = sorted((a for a, n in counts.items() if n >= min_count), key=lambda a: (-counts[a], a))
        if not kept:
            raise XLXMERTError(f"no training answer occurs {min_count} times; lower --answer-min-count")
        vocab = AnswerVocabulary(kept)
    covered = sum(vocab.index(a) is not None for a in train.labels)
    if covered == 0:
        raise XLXMERTError(
            f"the answer vocabulary ({len(vocab)} answers) holds none of the {train.task} training answers "
            f"(e.g. {train.labels[0]!r}); give the answer list of this data set"
        )
    return vocab


def targets(data: TaskSplit, vocab: AnswerVocabulary | None) -> list[Any]:
    """Per example: VQA ``{answer index: soft score}``; GQA the answer index (-1 outside the
    vocabulary); NLVR2 1 (true) or 0."""
    if data.task == "nlvr2":
        return [int(bool(label)) for label in data.labels]
    assert vocab is not None
    if data.task == "gqa":
        return [-1 if vocab.index(a) is None else vocab.index(a) for a in data.labels]
    out = []
    for rec in data.records:
        counts = Counter(normalize_answer(a) for a in rec["answers"])
        out.append(
            {vocab.index(a): vqa_soft_score(n) for a, n in counts.items() if vocab.index(a) is not None}
        )
    return out


@torch.no_grad()
def encode_images(
    encoder: Any, paths: list[Path], batch_size: int = 64, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features: HalfTensor[N, M, D], ids: LongTensor[N, M])`` of ``paths`` with ``encoder``
    (an :class:`~xlxmert.pipelines.common.ImageEncoder`)."""
    feats, ids = [], []
    for s in tqdm(range(0, len(paths), batch_size), desc="encode images", disable=not progress):
        f, i = encoder([str(p) for p in paths[s : s + batch_size]])
        feats.append(f.half())
        ids.append(i)
    return torch.cat(feats), torch.cat(ids)
