"""Task accuracies (paper §6.2, §6.3): VQA score, GQA accuracy, NLVR2 accuracy, caption correctness.

Model-agnostic: a task is scored through a plain function, so any model (fine-tuned heads once they
exist, the pretraining QA head until then, or a test oracle) can be evaluated the same way:

- ``answer_fn(images: list[PIL.Image], questions: list[str]) -> list[str]`` for VQA and GQA;
- ``judge_fn(left: list[PIL.Image], right: list[PIL.Image], sentences: list[str]) -> list[bool]``
  for NLVR2.

The files are read in their real formats (VQA v2, GQA, NLVR2), as the ShapeScenes writer produces.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from xlxmert.data.datasets import NLVR2Dataset, read_json, read_jsonl, vqa_soft_score
from xlxmert.data.images import load_image
from xlxmert.data.shapes.facts import check_caption
from xlxmert.data.shapes.scene import Scene
from xlxmert.errors import XLXMERTError

AnswerFn = Callable[[list[Image.Image], list[str]], list[str]]
JudgeFn = Callable[[list[Image.Image], list[Image.Image], list[str]], list[bool]]


# -- the official VQA answer normalisation ---------------------------------------------------------
# The VQA evaluation's rules: punctuation (a mark touching a space, or any mark in a text with a
# digit-comma-digit, is deleted, otherwise it becomes a space; a period not followed by a digit is
# deleted), then per word: lower case, number words to digits, articles dropped, and contractions
# written without their apostrophe given it back ("dont" -> "don't").
_PUNCT_MARKS = ';/[]"{}()=+\\_-><@`,?!'
_COMMA_NUMBER = re.compile(r"(\d)(,)(\d)")
_LONE_PERIOD = re.compile(r"\.(?!\d)")
_DIGITS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}
_DIGITS["none"] = "0"
_ARTICLES = frozenset({"a", "an", "the"})


def _contractions() -> dict[str, str]:
    """Apostrophe-less spellings of English contractions -> the contraction; spellings that are
    words of their own ("well", "were", "its", "ill", "shell", "hell", "wed", "lets") are left out."""
    table: dict[str, str] = {}
    suffixes = {
        "n't": "ai are ca could did does do had has have is might must need sha should was were wo would",
        "'ve": "could should would might must i you we they who",
        "'ll": "i you it they that there who what",
        "'re": "you they who what",
        "'s": "he she that there what where who how somebody someone something everyone",
        "'d": "i you he she it they who how what where",
        "'m": "i",
    }
    for suffix, stems in suffixes.items():
        for stem in stems.split():
            table[(stem + suffix).replace("'", "")] = stem + suffix
    for stem in ("could", "should", "would"):
        table[stem + "ntve"] = stem + "n't've"
    for word in ("its", "hed", "shed", "wed", "ill", "id", "shell", "hell", "well", "were", "lets", "whore"):
        table.pop(word, None)
    return table


_CONTRACTIONS = _contractions()


def official_normalize(answer: str) -> str:
    """An answer as the official VQA evaluation compares it (see the rules above)."""
    text = " ".join(str(answer).replace("\n", " ").replace("\t", " ").split())
    has_number_comma = _COMMA_NUMBER.search(text) is not None
    for mark in _PUNCT_MARKS:
        if mark not in text:
            continue
        if has_number_comma or f"{mark} " in text or f" {mark}" in text:
            text = text.replace(mark, "")
        else:
            text = text.replace(mark, " ")
    text = _LONE_PERIOD.sub("", text)
    words = []
    for word in text.lower().split():
        word = _DIGITS.get(word, word)
        if word not in _ARTICLES:
            words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


def vqa_accuracy(predicted: str, answers: Sequence[str]) -> float:
    """The official VQA v2 accuracy of one prediction against the annotators' answers.

    Each of the (ten) leave-one-annotator-out subsets scores ``min(1, matches / 3)``, where matches
    counts the subset's answers equal to the prediction after :func:`official_normalize`; the
    accuracy is their mean. A single answer scores exact match.
    """
    pred = official_normalize(predicted)
    norm = [official_normalize(a) for a in answers]
    if len(norm) <= 1:
        return float(bool(norm) and norm[0] == pred)
    total = sum(1 for a in norm if a == pred)
    # Leaving out annotator k removes one match exactly when k's answer matches.
    scores = [vqa_soft_score(total - (a == pred)) for a in norm]
    return sum(scores) / len(scores)


def _breakdown(scores: Sequence[float], keys: Sequence[str]) -> dict[str, float]:
    sums: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for score, key in zip(scores, keys):
        sums[key] += score
        counts[key] += 1
    return {k: sums[k] / counts[k] for k in sorted(counts)}


def score_vqa(predictions: Sequence[str], records: Sequence[dict]) -> dict[str, Any]:
    """VQA v2 scores of ``predictions[i]`` for ``records[i]`` (``answers``: the annotators' raw
    answers; optional ``question_type``, ``answer_type``): ``score`` (mean official accuracy),
    ``per_question_type``, ``per_answer_type``, ``n``."""
    scores = [vqa_accuracy(p, r["answers"]) for p, r in zip(predictions, records, strict=True)]
    return {
        "score": sum(scores) / max(len(scores), 1),
        "per_question_type": _breakdown(scores, [r.get("question_type") or "all" for r in records]),
        "per_answer_type": _breakdown(scores, [r.get("answer_type") or "all" for r in records]),
        "n": len(scores),
    }


def score_gqa(predictions: Sequence[str], records: Sequence[dict]) -> dict[str, Any]:
    """GQA accuracy (exact match of normalised answers) of ``predictions`` for ``records``
    (``answer``; optional ``types``: GQA's ``structural`` / ``semantic`` / ``detailed`` types),
    with ``per_structural_type``, ``per_semantic_type`` and ``per_detailed_type``."""
    right = [
        float(official_normalize(p) == official_normalize(r["answer"]))
        for p, r in zip(predictions, records, strict=True)
    ]
    types = [r.get("types") or {} for r in records]
    return {
        "accuracy": sum(right) / max(len(right), 1),
        "per_structural_type": _breakdown(right, [t.get("structural", "all") for t in types]),
        "per_semantic_type": _breakdown(right, [t.get("semantic", "all") for t in types]),
        "per_detailed_type": _breakdown(right, [t.get("detailed", "all") for t in types]),
        "n": len(right),
    }


def nlvr2_sentence_key(identifier: str) -> str:
    """NLVR2's unique-sentence key: the identifier ``split-set-pair-sentence`` without the pair."""
    parts = identifier.split("-")
    return "-".join(parts[:-2] + parts[-1:]) if len(parts) >= 4 else identifier


def score_nlvr2(predictions: Sequence[bool], records: Sequence[dict]) -> dict[str, Any]:
    """NLVR2 accuracy and consistency of ``predictions`` for ``records`` (``label``, ``sentence``,
    ``identifier``; optional ``query``), with ``per_template`` (ShapeScenes' ``query``).

    Consistency is the share of sentences all of whose image pairs are judged right. Sentences are
    grouped as NLVR2 does (identifier without its pair index); where that leaves every group a
    single pair (ShapeScenes, which writes one pair per identifier), by the sentence text instead,
    since ShapeScenes' template sentences recur over many image pairs. ``consistency_groups`` says
    which grouping was used and ``sentences`` how many groups there are.
    """
    right = [float(bool(p) == bool(r["label"])) for p, r in zip(predictions, records, strict=True)]
    keys = [nlvr2_sentence_key(str(r.get("identifier", i))) for i, r in enumerate(records)]
    grouping = "identifier"
    if len(set(keys)) == len(keys):
        keys = [" ".join(str(r["sentence"]).lower().split()) for r in records]
        grouping = "sentence text"
    by_group: dict[str, bool] = {}
    for key, ok in zip(keys, right):
        by_group[key] = by_group.get(key, True) and bool(ok)
    return {
        "accuracy": sum(right) / max(len(right), 1),
        "consistency": sum(by_group.values()) / max(len(by_group), 1),
        "consistency_groups": grouping,
        "sentences": len(by_group),
        "per_template": _breakdown(right, [r.get("query") or "all" for r in records]),
        "n": len(right),
    }


# -- baselines -------------------------------------------------------------------------------------
def majority_answer(train_answers: Sequence[Any]) -> Any:
    """The most frequent training answer (ties: the first seen): the "majority answer" baseline."""
    if not train_answers:
        raise XLXMERTError("no training answers to take the majority of")
    counts = Counter(train_answers)
    best = max(counts.values())
    return next(a for a in train_answers if counts[a] == best)


def question_only_answers(
    train_texts: Sequence[str], train_answers: Sequence[Any], texts: Sequence[str]
) -> list[Any]:
    """The "question only" baseline: for each text, the majority training answer of the same
    (normalised) question or sentence; the overall majority for a text never seen in training.
    It sees no image, so it is the best any image-blind model trained on these texts can do on
    questions that recur verbatim (all of ShapeScenes' templated ones)."""
    by_text: dict[str, list[Any]] = {}
    for text, answer in zip(train_texts, train_answers, strict=True):
        by_text.setdefault(" ".join(text.lower().split()), []).append(answer)
    fallback = majority_answer(train_answers)
    return [majority_answer(by_text.get(" ".join(t.lower().split()), [fallback])) for t in texts]


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
) -> dict[str, Any]:
    """VQA score on ``questions_<split>.json`` / ``annotations_<split>.json`` (first ``n`` questions):
    :func:`score_vqa`'s fields, plus ``per_type`` (= ``per_question_type``)."""
    split_dir = Path(data_root) / split
    questions = read_json(split_dir / f"questions_{split}.json", "VQA questions")["questions"][:n]
    annotations = read_json(split_dir / f"annotations_{split}.json", "VQA annotations")["annotations"]
    by_qid = {a["question_id"]: a for a in annotations}
    images = _image_index(split_dir, split)
    items, records = [], []
    for q in questions:
        if str(q["image_id"]) not in images:
            raise XLXMERTError(f"VQA question {q['question_id']} refers to unknown image {q['image_id']}")
        ann = by_qid.get(q["question_id"])
        if ann is None:
            raise XLXMERTError(
                f"VQA question {q['question_id']} has no annotation in annotations_{split}.json"
            )
        items.append((images[str(q["image_id"])], q["question"]))
        records.append({**ann, "answers": [a["answer"] for a in ann["answers"]]})
    predictions = _answer_in_batches(items, answer_fn, batch_size, progress, "VQA")
    result = score_vqa(predictions, records)
    return {**result, "per_type": result["per_question_type"]}


def gqa_accuracy(
    data_root: str | Path,
    split: str,
    answer_fn: AnswerFn,
    n: int | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, Any]:
    """GQA accuracy on ``gqa_<split>.json`` (first ``n`` questions): :func:`score_gqa`'s fields."""
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
    return score_gqa(predictions, records)


def nlvr2_accuracy(
    data_root: str | Path,
    split: str,
    judge_fn: JudgeFn,
    n: int | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, Any]:
    """``judge_fn``'s True/False on ``nlvr2_<split>.jsonl`` (first ``n`` statements):
    :func:`score_nlvr2`'s fields (accuracy, consistency, per template)."""
    split_dir = Path(data_root) / split
    items = NLVR2Dataset(split_dir / f"nlvr2_{split}.jsonl", image_root=split_dir).items[:n]
    queries = [r.get("query") for r in read_jsonl(split_dir / f"nlvr2_{split}.jsonl", "NLVR2")][:n]
    predictions: list[bool] = []
    for s in tqdm(range(0, len(items), batch_size), desc="NLVR2", disable=not progress):
        chunk = items[s : s + batch_size]
        out = judge_fn(
            [load_image(it["left_image"]) for it in chunk],
            [load_image(it["right_image"]) for it in chunk],
            [it["sentence"] for it in chunk],
        )
        if len(out) != len(chunk):
            raise XLXMERTError(f"judge_fn returned {len(out)} labels for {len(chunk)} statements")
        predictions.extend(bool(p) for p in out)
    return score_nlvr2(predictions, [{**it, "query": q} for it, q in zip(items, queries)])


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


def understanding_baselines(
    data_root: str | Path, split: str, n: int | None = None, train_split: str = "train"
) -> dict[str, float]:
    """The "majority answer" and "question only" baselines (:func:`question_only_answers`, fitted
    on ``train_split``) on the first ``n`` VQA / GQA / NLVR2 examples of ``split``:
    ``{"<task>_majority_answer": ..., "<task>_question_only": ...}`` for each task whose files
    both splits have."""
    from xlxmert.training.finetune import baselines
    from xlxmert.training.finetune_data import load_task_split

    out: dict[str, float] = {}
    for task in ("vqa", "gqa", "nlvr2"):
        try:
            train = load_task_split(data_root, task, train_split)
            data = load_task_split(data_root, task, split).head(n)
        except XLXMERTError:
            continue
        for name, value in baselines(task, train, data).items():
            out[f"{task}_{name}"] = value
    return out
