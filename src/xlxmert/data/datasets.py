"""Real-format loaders: COCO captions, VQA v2, GQA and NLVR2.

Each class reads the files of the real data set exactly as they are distributed; the ShapeScenes
generator (``data.shapes``) writes the same formats, so one loader serves both. Loaders return
plain Python items (ids, strings, a soft-score target); images are read elsewhere (``data.images``,
``visual.store``) because pretraining and fine-tuning consume precomputed grid features.

Files and the keys read from them (other keys of the real files are ignored):

- COCO ``captions_<split>.json``: ``images[].{id, file_name, width, height}``,
  ``annotations[].{image_id, caption}``.
- VQA v2 questions file: ``questions[].{question_id, image_id, question}``; annotations file:
  ``annotations[].{question_id, multiple_choice_answer, answers[].answer}``.
- GQA ``*_balanced_questions.json``: ``{question id: {imageId, question, answer}}``.
- NLVR2 ``*.json`` (JSON lines): ``identifier, sentence, label, left_url, right_url``.

Every problem with a file (missing, not JSON, a required key absent) is an :class:`XLXMERTError`
naming the file and the key.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from xlxmert.errors import XLXMERTError

PathLike = str | Path

# ---------------------------------------------------------------------------------------------
# Reading files with actionable errors


def read_json(path: PathLike, what: str = "JSON") -> Any:
    """The parsed content of ``path``; missing or malformed files raise :class:`XLXMERTError`."""
    path = Path(path)
    if not path.is_file():
        raise XLXMERTError(f"{what} file not found: {path}")
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise XLXMERTError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); regenerate or re-download it"
        ) from None
    except UnicodeDecodeError:
        raise XLXMERTError(f"{path} is not UTF-8 text; is it the right file?") from None


def read_jsonl(path: PathLike, what: str = "JSON lines") -> list[dict[str, Any]]:
    """The records of a JSON-lines file (blank lines skipped), with the line number in errors."""
    path = Path(path)
    if not path.is_file():
        raise XLXMERTError(f"{what} file not found: {path}")
    records = []
    try:
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise XLXMERTError(f"{path} line {lineno} is not valid JSON ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise XLXMERTError(f"{path} line {lineno} is not a JSON object")
                records.append(record)
    except UnicodeDecodeError:
        raise XLXMERTError(f"{path} is not UTF-8 text; is it the right file?") from None
    return records


def _require(record: Any, keys: Iterable[str], path: PathLike, where: str) -> None:
    """Raise if ``record`` (found at ``where`` in ``path``) is not a dict holding all ``keys``."""
    if not isinstance(record, dict):
        raise XLXMERTError(f"{path}: {where} should be a JSON object, got {type(record).__name__}")
    for key in keys:
        if key not in record:
            raise XLXMERTError(f"{path}: {where} is missing required key '{key}'")


def _top_level_list(data: Any, key: str, path: PathLike) -> list[Any]:
    if not isinstance(data, dict) or key not in data:
        raise XLXMERTError(f"{path} is missing required key '{key}'; is it the right file?")
    if not isinstance(data[key], list):
        raise XLXMERTError(f"{path}: '{key}' should be a list, got {type(data[key]).__name__}")
    return data[key]


# ---------------------------------------------------------------------------------------------
# COCO captions


class CocoCaptions(Dataset):
    """(image, caption) pairs of a COCO-captions file; item ``i`` is the file's ``i``-th caption.

    Items: ``{"image_id": int, "file_name": str, "caption": str}``.
    ``image_root`` is the folder image ``file_name``s are relative to; by default the folder
    holding the captions file (the ShapeScenes split folder).
    """

    def __init__(self, captions_json: PathLike, image_root: PathLike | None = None) -> None:
        self.path = Path(captions_json)
        self.image_root = Path(image_root) if image_root is not None else self.path.parent
        data = read_json(self.path, "COCO captions")
        images = _top_level_list(data, "images", self.path)
        annotations = _top_level_list(data, "annotations", self.path)

        self.images: list[dict[str, Any]] = []
        self._by_id: dict[int, dict[str, Any]] = {}
        for i, img in enumerate(images):
            _require(img, ("id", "file_name", "width", "height"), self.path, f"images[{i}]")
            entry = {k: img[k] for k in ("id", "file_name", "width", "height")}
            self.images.append(entry)
            self._by_id[int(img["id"])] = entry
        self.image_ids: list[int] = [int(img["id"]) for img in self.images]

        self.captions_by_image: dict[int, list[str]] = {image_id: [] for image_id in self.image_ids}
        self._pairs: list[tuple[int, str]] = []
        for i, ann in enumerate(annotations):
            _require(ann, ("image_id", "caption"), self.path, f"annotations[{i}]")
            image_id = int(ann["image_id"])
            if image_id not in self._by_id:
                raise XLXMERTError(
                    f"{self.path}: annotations[{i}] refers to image_id {image_id}, not in 'images'"
                )
            caption = str(ann["caption"]).strip()
            self.captions_by_image[image_id].append(caption)
            self._pairs.append((image_id, caption))

    def __len__(self) -> int:
        return len(self._pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id, caption = self._pairs[index]
        return {"image_id": image_id, "file_name": self._by_id[image_id]["file_name"], "caption": caption}

    @property
    def captions(self) -> list[str]:
        """All captions, in file order."""
        return [caption for _, caption in self._pairs]

    def image_path(self, image_id: int) -> Path:
        """Path of image ``image_id``: ``image_root / file_name``.

        A bare file name that is not found there but is under ``image_root/images/`` resolves to
        that (the ShapeScenes split layout keeps its PNGs in ``images/``).
        """
        if int(image_id) not in self._by_id:
            raise XLXMERTError(f"image id {image_id} is not in {self.path}")
        path = self.image_root / self._by_id[int(image_id)]["file_name"]
        fallback = self.image_root / "images" / self._by_id[int(image_id)]["file_name"]
        if not path.exists() and fallback.exists():
            return fallback
        return path


# ---------------------------------------------------------------------------------------------
# Answers: normalisation, vocabulary, soft scores

_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_ARTICLES = frozenset({"a", "an", "the"})
# A comma inside a number ("1,000") goes; a period between digits ("2.5") stays; an apostrophe
# joins its word ("don't" -> "dont"); every other punctuation mark separates words.
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d)")
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")
_PUNCTUATION = re.compile(r"[!\"#$%&()*+,\-./:;<=>?@\[\\\]^_`{|}~]")


def normalize_answer(answer: str) -> str:
    """VQA-style answer normalisation: lowercase, strip punctuation, number words → digits, no articles.

    Follows the steps of the VQA evaluation (so "Two", "two." and "2" are one answer, and "a dog"
    equals "dog"). An answer that normalises to nothing (e.g. "the") is kept lowercased.
    """
    text = " ".join(str(answer).lower().split())
    text = _DIGIT_COMMA.sub("", text)
    text = _DECIMAL_POINT.sub("\0", text)  # protect decimals from the punctuation pass
    text = text.replace("'", "")
    text = _PUNCTUATION.sub(" ", text).replace("\0", ".")
    words = [_NUMBER_WORDS.get(w, w) for w in text.split() if w not in _ARTICLES]
    return " ".join(words) if words else " ".join(str(answer).lower().split())


def vqa_soft_score(count: int) -> float:
    """Soft score of an answer given by ``count`` of the (ten) annotators: ``min(1, count / 3)``."""
    return min(1.0, count / 3.0)


def _answers_of(source: Any, name: str) -> list[str]:
    """The answers a vocabulary counts in one source: one per question.

    VQA annotations (a dict with ``annotations``) count each question's
    ``multiple_choice_answer`` (or, if absent, its most frequent annotator answer); GQA question
    files (question id → question dict) count ``answer``; a list of such question dicts works too.
    """
    if isinstance(source, dict) and isinstance(source.get("annotations"), list):
        records = source["annotations"]
    elif isinstance(source, dict):
        records = list(source.values())
    elif isinstance(source, list):
        records = source
    else:
        raise XLXMERTError(f"{name}: expected VQA annotations or GQA questions, got {type(source).__name__}")
    answers = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise XLXMERTError(f"{name}: entry {i} should be a JSON object, got {type(rec).__name__}")
        if "multiple_choice_answer" in rec:
            answers.append(rec["multiple_choice_answer"])
        elif "answer" in rec:
            answers.append(rec["answer"])
        elif isinstance(rec.get("answers"), list) and rec["answers"]:
            votes = Counter(normalize_answer(a["answer"]) for a in rec["answers"])
            answers.append(votes.most_common(1)[0][0])
        else:
            raise XLXMERTError(
                f"{name}: entry {i} is missing required key 'multiple_choice_answer' (VQA) or 'answer' (GQA)"
            )
    return [normalize_answer(a) for a in answers]


class AnswerVocabulary:
    """The answers a QA head predicts: normalised answer strings, index = output unit.

    ``build(..., min_count=9)`` on VQA v2 train+val gives the 3129 answers of the paper's VQA head
    (answers given as the multiple-choice answer at least 9 times).
    """

    def __init__(self, answers: Iterable[str]) -> None:
        self.answers: list[str] = [normalize_answer(a) for a in answers]
        self._index = {a: i for i, a in enumerate(self.answers)}
        if len(self._index) != len(self.answers):
            dupes = sorted(a for a, n in Counter(self.answers).items() if n > 1)
            raise XLXMERTError(f"answer vocabulary has duplicate answers after normalisation: {dupes[:5]}")

    @classmethod
    def build(
        cls, sources: Iterable[PathLike | dict | list] | PathLike | dict, min_count: int = 9
    ) -> AnswerVocabulary:
        """Answers occurring at least ``min_count`` times over ``sources``, most frequent first.

        ``sources``: VQA annotation files / dicts and/or GQA question files / dicts (paths are
        read). Ties in frequency are ordered alphabetically so the vocabulary is reproducible.
        """
        if min_count < 1:
            raise XLXMERTError(f"min_count must be at least 1, got {min_count}")
        if isinstance(sources, (str, Path, dict)):
            sources = [sources]
        counts: Counter[str] = Counter()
        for k, source in enumerate(sources):
            if isinstance(source, (str, Path)):
                counts.update(_answers_of(read_json(source, "answer annotations"), str(source)))
            else:
                counts.update(_answers_of(source, f"answer source {k}"))
        kept = sorted((a for a, n in counts.items() if n >= min_count), key=lambda a: (-counts[a], a))
        if not kept:
            raise XLXMERTError(
                f"no answer occurs at least {min_count} times; lower min_count or add annotations"
            )
        return cls(kept)

    def save(self, path: PathLike) -> Path:
        """Write the answers as a JSON list (index order)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.answers, indent=0, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: PathLike) -> AnswerVocabulary:
        """Read a vocabulary written by :meth:`save`."""
        data = read_json(path, "answer vocabulary")
        if not isinstance(data, list) or not all(isinstance(a, str) for a in data):
            raise XLXMERTError(
                f"{path} should be a JSON list of answer strings (written by AnswerVocabulary.save)"
            )
        return cls(data)

    def __len__(self) -> int:
        return len(self.answers)

    def __contains__(self, answer: str) -> bool:
        return normalize_answer(answer) in self._index

    def index(self, answer: str) -> int | None:
        """Output unit of ``answer`` (normalised first), or ``None`` if it is not in the vocabulary."""
        return self._index.get(normalize_answer(answer))

    def __repr__(self) -> str:
        return f"AnswerVocabulary({len(self)} answers)"


# ---------------------------------------------------------------------------------------------
# VQA v2


class VQADataset(Dataset):
    """VQA v2 questions with soft-score targets over an :class:`AnswerVocabulary`.

    Items: ``{"question_id": int, "image_id": int, "question": str, "question_type": str,
    "target": FloatTensor[len(vocab)], "answers": list[str]}`` where ``target[a] =
    vqa_soft_score(number of annotators who gave answer a)`` and ``answers`` are the annotators'
    normalised answers (for VQA accuracy). ``annotations_json=None`` (test splits) gives zero
    targets and no answers.

    ``image_index``: optional map image id → row (e.g. of a feature store); questions about images
    outside it are dropped and items gain ``"image_row": int``.
    """

    def __init__(
        self,
        questions_json: PathLike,
        annotations_json: PathLike | None,
        vocab: AnswerVocabulary,
        image_index: Mapping[int, int] | None = None,
    ) -> None:
        self.vocab = vocab
        self.image_index = image_index
        q_path = Path(questions_json)
        questions = _top_level_list(read_json(q_path, "VQA questions"), "questions", q_path)
        annotations: dict[int, dict[str, Any]] = {}
        if annotations_json is not None:
            a_path = Path(annotations_json)
            for i, ann in enumerate(
                _top_level_list(read_json(a_path, "VQA annotations"), "annotations", a_path)
            ):
                _require(ann, ("question_id", "answers"), a_path, f"annotations[{i}]")
                for j, ans in enumerate(ann["answers"]):
                    _require(ans, ("answer",), a_path, f"annotations[{i}].answers[{j}]")
                annotations[int(ann["question_id"])] = ann

        self.items: list[dict[str, Any]] = []
        for i, q in enumerate(questions):
            _require(q, ("question_id", "image_id", "question"), q_path, f"questions[{i}]")
            qid, image_id = int(q["question_id"]), int(q["image_id"])
            if image_index is not None and image_id not in image_index:
                continue
            if annotations_json is not None and qid not in annotations:
                raise XLXMERTError(
                    f"{annotations_json}: no annotation for question_id {qid} of {q_path}; "
                    "are the questions and annotations files of the same split?"
                )
            ann = annotations.get(qid, {})
            item = {
                "question_id": qid,
                "image_id": image_id,
                "question": str(q["question"]),
                "question_type": str(ann.get("question_type", "")),
                "answers": [normalize_answer(a["answer"]) for a in ann.get("answers", [])],
            }
            if image_index is not None:
                item["image_row"] = int(image_index[image_id])
            self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    def target(self, answers: list[str]) -> torch.Tensor:
        """``FloatTensor[len(vocab)]`` of soft scores for the annotators' ``answers``."""
        target = torch.zeros(len(self.vocab))
        for answer, count in Counter(answers).items():
            index = self.vocab.index(answer)
            if index is not None:
                target[index] = vqa_soft_score(count)
        return target

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.items[index])
        item["target"] = self.target(item["answers"])
        return item


# ---------------------------------------------------------------------------------------------
# GQA


class GQADataset(Dataset):
    """GQA (balanced) questions: ``{question id: {imageId, question, answer, ...}}``.

    Items: ``{"question_id": str, "image_id": str (GQA's imageId), "question": str,
    "answer": str (normalised), "label": int}``; ``label`` is the answer's index in ``vocab``,
    -1 if the answer is outside it (such questions still count as wrong in evaluation).
    """

    def __init__(self, gqa_json: PathLike, vocab: AnswerVocabulary) -> None:
        self.vocab = vocab
        path = Path(gqa_json)
        data = read_json(path, "GQA questions")
        if not isinstance(data, dict):
            raise XLXMERTError(
                f"{path} should map question ids to questions (GQA format), got {type(data).__name__}"
            )
        self.items: list[dict[str, Any]] = []
        for qid, q in data.items():
            _require(q, ("imageId", "question", "answer"), path, f"question '{qid}'")
            answer = normalize_answer(q["answer"])
            label = vocab.index(answer)
            self.items.append(
                {
                    "question_id": str(qid),
                    "image_id": str(q["imageId"]),
                    "question": str(q["question"]),
                    "answer": answer,
                    "label": -1 if label is None else label,
                }
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return dict(self.items[index])


# ---------------------------------------------------------------------------------------------
# NLVR2


def _parse_label(value: Any, path: Path, where: str) -> bool:
    # NLVR2 writes labels as the strings "True" / "False"; JSON booleans are accepted too.
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise XLXMERTError(f'{path}: {where} has label {value!r}; expected "True" or "False"')


def nlvr2_image_names(identifier: str) -> tuple[str, str]:
    """NLVR2's image file names for a statement: "dev-850-0-0" → ("dev-850-0-img0.png", "dev-850-0-img1.png").

    The identifier is split-set-pair-sentence; both images belong to the pair, not the sentence.
    """
    parts = identifier.split("-")
    if len(parts) < 4:
        raise XLXMERTError(f"NLVR2 identifier {identifier!r} is not of the form split-set-pair-sentence")
    stem = "-".join(parts[:-1])
    return f"{stem}-img0.png", f"{stem}-img1.png"


class NLVR2Dataset(Dataset):
    """NLVR2 statements about an image pair, from a JSON-lines file.

    Items: ``{"identifier": str, "sentence": str, "label": bool, "left_image": str,
    "right_image": str}`` (image paths). An image resolves from ``left_url`` / ``right_url`` when
    that is a relative path existing under ``image_root`` (the ShapeScenes layout, e.g.
    ``images/shapes_train_000001.png``); otherwise from the identifier by NLVR2's naming rule,
    under ``image_root/<directory>/`` when the record has NLVR2's ``directory`` field and the file
    is there (the train split's layout), else directly under ``image_root``.
    ``image_root`` defaults to the folder holding the file.
    """

    def __init__(self, jsonl: PathLike, image_root: PathLike | None = None) -> None:
        path = Path(jsonl)
        self.image_root = Path(image_root) if image_root is not None else path.parent
        self.items: list[dict[str, Any]] = []
        for i, rec in enumerate(read_jsonl(path, "NLVR2"), start=1):
            where = f"record {i}"
            _require(rec, ("identifier", "sentence", "label"), path, where)
            left, right = self._resolve_images(rec)
            self.items.append(
                {
                    "identifier": str(rec["identifier"]),
                    "sentence": str(rec["sentence"]),
                    "label": _parse_label(rec["label"], path, where),
                    "left_image": str(left),
                    "right_image": str(right),
                }
            )

    def _resolve_images(self, rec: dict[str, Any]) -> tuple[Path, Path]:
        by_name = nlvr2_image_names(str(rec["identifier"]))
        resolved = []
        for url_key, name in zip(("left_url", "right_url"), by_name):
            url = rec.get(url_key)
            if isinstance(url, str) and url and "://" not in url and (self.image_root / url).is_file():
                resolved.append(self.image_root / url)
                continue
            if "directory" in rec and (self.image_root / str(rec["directory"]) / name).is_file():
                resolved.append(self.image_root / str(rec["directory"]) / name)
            else:
                resolved.append(self.image_root / name)
        return resolved[0], resolved[1]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return dict(self.items[index])
