"""Task accuracies (paper §6.2, §6.3): VQA score, GQA accuracy, NLVR2 accuracy, caption correctness.

Model-agnostic: a task is scored through a plain function, so any model (fine-tuned heads once they
exist, the pretraining QA head until then, or a test oracle) can be evaluated the same way:

- ``answer_fn(images: list[PIL.Image], questions: list[str]) -> list[str]`` for VQA and GQA;
- ``judge_fn(left: list[PIL.Image], right: list[PIL.Image], sentences: list[str]) -> list[bool]``
  for NLVR2.

The files are read in their real formats (VQA v2, GQA, NLVR2), as the ShapeScenes writer produces.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from xlxmert.data.datasets import NLVR2Dataset, normalize_answer, read_json, vqa_soft_score
from xlxmert.data.images import load_image
from xlxmert.data.shapes.facts import check_caption
from xlxmert.data.shapes.scene import Scene
from xlxmert.errors import XLXMERTError

AnswerFn = Callable[[list[Image.Image], list[str]], list[str]]
JudgeFn = Callable[[list[Image.Image], list[Image.Image], list[str]], list[bool]]


def vqa_accuracy(predicted: str, answers: Sequence[str]) -> float:
    """The VQA v2 accuracy of one prediction against the annotators' answers.

    ``min(1, matches / 3)`` averaged over the 10 leave-one-annotator-out subsets, as the official
    evaluation does (with 10 identical answers it is 1 for the right answer, 0 otherwise).
    """
    pred = normalize_answer(predicted)
    norm = [normalize_answer(a) for a in answers]
    if len(norm) <= 1:
        return float(bool(norm) and norm[0] == pred)
    scores = []
    for leave_out in range(len(norm)):
        matches = sum(1 for k, a in enumerate(norm) if k != leave_out and a == pred)
        scores.append(vqa_soft_score(matches))
    return sum(scores) / len(scores)


def _image_index(split_dir: Path, split: str) -> dict[str, Path]:
    coco = read_json(split_dir / f"captions_{split}.json", "COCO captions")
    index = {}
    for info in coco["images"]:
        path = split_dir / info["file_name"]
        index[str(info["id"])] = path
        index[Path(info["file_name"]).stem] = path
    return index


def _answer_in_batches(
    items: list[tuple[Path, str]], answer_fn: AnswerFn, batch_size: int, progress: bool, desc: str
) -> list[str]:
    answers: list[str] = []
    for s in tqdm(range(0, len(items), batch_size), desc=desc, disable=not progress):
        chunk = items[s : s + batch_size]
        out = answer_fn([load_image(p) for p, _ in chunk], [q for _, q in chunk])
        if len(out) != len(chunk):
            raise XLXMERTError(f"answer_fn returned {len(out)} answers for {len(chunk)} questions")
        answers.extend(out)
    return answers


def vqa_score(
    data_root: str | Path,
    split: str,
    answer_fn: AnswerFn,
    n: int | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, float | int | dict]:
    """VQA score on ``questions_<split>.json`` / ``annotations_<split>.json`` (first ``n`` questions).

    Returns ``score`` (mean VQA accuracy, 0..1), ``per_type`` (by ``question_type`` where the file has
    it) and ``n``.
    """
    split_dir = Path(data_root) / split
    questions = read_json(split_dir / f"questions_{split}.json", "VQA questions")["questions"][:n]
    annotations = read_json(split_dir / f"annotations_{split}.json", "VQA annotations")["annotations"]
    by_qid = {a["question_id"]: a for a in annotations}
    images = _image_index(split_dir, split)
    items = []
    for q in questions:
        if str(q["image_id"]) not in images:
            raise XLXMERTError(f"VQA question {q['question_id']} refers to unknown image {q['image_id']}")
        items.append((images[str(q["image_id"])], q["question"]))
    predictions = _answer_in_batches(items, answer_fn, batch_size, progress, "VQA")
    total, per_type, counts = 0.0, Counter(), Counter()
    for q, pred in zip(questions, predictions):
        ann = by_qid.get(q["question_id"])
        if ann is None:
            raise XLXMERTError(
                f"VQA question {q['question_id']} has no annotation in annotations_{split}.json"
            )
        acc = vqa_accuracy(pred, [a["answer"] for a in ann["answers"]])
        total += acc
        kind = ann.get("question_type", "all")
        per_type[kind] += acc
        counts[kind] += 1
    return {
        "score": total / max(len(questions), 1),
        "per_type": {k: per_type[k] / counts[k] for k in sorted(counts)},
        "n": len(questions),
    }


def gqa_accuracy(
    data_root: str | Path,
    split: str,
    answer_fn: AnswerFn,
    n: int | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, float | int]:
    """Exact-match accuracy (normalised answers) on ``gqa_<split>.json`` (first ``n`` questions)."""
    split_dir = Path(data_root) / split
    data = read_json(split_dir / f"gqa_{split}.json", "GQA questions")
    records = list(data.values())[:n]
    images = _image_index(split_dir, split)
    items = []
    for rec in records:
        key = str(rec["imageId"])
        if key not in images:
            raise XLXMERTError(f"GQA question refers to unknown image {key!r}")
        items.append((images[key], rec["question"]))
    predictions = _answer_in_batches(items, answer_fn, batch_size, progress, "GQA")
    right = sum(normalize_answer(p) == normalize_answer(r["answer"]) for p, r in zip(predictions, records))
    return {"accuracy": right / max(len(records), 1), "n": len(records)}


def nlvr2_accuracy(
    data_root: str | Path,
    split: str,
    judge_fn: JudgeFn,
    n: int | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, float | int]:
    """Accuracy of ``judge_fn``'s True/False on ``nlvr2_<split>.jsonl`` (first ``n`` statements)."""
    split_dir = Path(data_root) / split
    items = NLVR2Dataset(split_dir / f"nlvr2_{split}.jsonl", image_root=split_dir).items[:n]
    right = 0
    for s in tqdm(range(0, len(items), batch_size), desc="NLVR2", disable=not progress):
        chunk = items[s : s + batch_size]
        out = judge_fn(
            [load_image(it["left_image"]) for it in chunk],
            [load_image(it["right_image"]) for it in chunk],
            [it["sentence"] for it in chunk],
        )
        if len(out) != len(chunk):
            raise XLXMERTError(f"judge_fn returned {len(out)} labels for {len(chunk)} statements")
        right += sum(bool(p) == it["label"] for p, it in zip(out, chunk))
    return {"accuracy": right / max(len(items), 1), "n": len(items)}


def caption_correctness(captions: Sequence[str], scenes: Sequence[Scene]) -> dict[str, float | int]:
    """How true generated captions are of their images' scenes (``facts.check_caption``).

    ``facts_true``: true facts / stated facts; ``all_true``: share of captions entirely true. A
    caption outside the caption grammar counts as one false fact.
    """
    if len(captions) != len(scenes):
        raise XLXMERTError(f"caption_correctness: {len(captions)} captions for {len(scenes)} scenes")
    n_true = n_total = all_true = 0
    for caption, scene in zip(captions, scenes):
        t, total = check_caption(caption, scene)
        n_true, n_total, all_true = n_true + t, n_total + total, all_true + int(t == total)
    return {
        "facts_true": n_true / max(n_total, 1),
        "all_true": all_true / max(len(captions), 1),
        "n": len(captions),
    }
