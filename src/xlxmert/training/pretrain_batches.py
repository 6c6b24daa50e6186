"""Pretraining data and batches (paper §5, C.5): the example pools of a split (captions and
questions with their images' visual words, or exact grid features for the +Grid baselines), epoch
streams over them, and one task's batch: visual masking (uniform, Bernoulli, fully masked,
caption dropout), word masking, or matching (half the texts swapped, the VQA soft-score targets).

Every draw comes from the generator a step hands in, so a batch is a function of (seed, step,
rank): see :mod:`xlxmert.training.pretrain`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from xlxmert.data.datasets import AnswerVocabulary, CocoCaptions, VQADataset
from xlxmert.data.shapes import load_scenes
from xlxmert.errors import XLXMERTError
from xlxmert.models.masking import (
    bernoulli_visual_mask,
    mask_text_tokens,
    uniform_text_mask,
    uniform_visual_mask,
)
from xlxmert.models.transformer import (
    grid_size_of,
)
from xlxmert.training.backbone import scene_label_map
from xlxmert.utils.seeding import derive_seed as _seed_of
from xlxmert.visual.grid import grid_pool

if TYPE_CHECKING:
    from xlxmert.training.pretrain import PretrainConfig


# -- data ----------------------------------------------------------------------------------------
@dataclass
class PretrainData:
    """Texts paired with image rows of one split.

    ``texts[i]`` describes image row ``rows[i]``; ``is_question[i]`` marks VQA questions, whose
    soft-score target (over ``answers``) is ``qa_targets[i]`` (sparse: answer index → score).
    ``visual_ids: LongTensor[num_images, M]``; ``features: ndarray float16 [num_images, N, N, D]``
    or None. ``object_cells: BoolTensor[num_images, M]``: the cells at least half covered by an
    object, where the split has ShapeScenes ground truth and it was asked for (else None).
    """

    texts: list[str]
    rows: np.ndarray
    is_question: np.ndarray
    qa_targets: list[dict[int, float]]
    visual_ids: torch.Tensor
    features: np.ndarray | None
    object_cells: torch.Tensor | None = None

    def pool(self, captions_only: bool) -> np.ndarray:
        """Indices of the examples a task draws from."""
        return np.flatnonzero(~self.is_question) if captions_only else np.arange(len(self.texts))


def _image_rows(vocab_dir: Path, split: str) -> tuple[torch.Tensor, dict[int, int]]:
    ids_path, index_path = vocab_dir / "ids" / f"{split}.npy", vocab_dir / "ids" / f"{split}.json"
    if not ids_path.is_file() or not index_path.is_file():
        raise XLXMERTError(
            f"no visual ids for split {split!r} in {vocab_dir / 'ids'}; "
            "run `xlxmert vocab assign` for it first"
        )
    ids = np.load(ids_path)
    image_ids = json.loads(index_path.read_text())
    if isinstance(image_ids, dict):
        image_ids = image_ids.get("image_ids", [])
    if len(image_ids) != ids.shape[0]:
        raise XLXMERTError(
            f"{index_path} lists {len(image_ids)} images but {ids_path} has {ids.shape[0]} rows"
        )
    return torch.from_numpy(ids.astype(np.int64)), {int(i): r for r, i in enumerate(image_ids)}


def object_cells_of(split_dir: Path, row_of: dict[int, int], grid_size: int) -> torch.Tensor | None:
    """``BoolTensor[num_rows, N*N]``: per image row, the grid cells at least half covered by an
    object, from the split's ShapeScenes ``scenes_<split>.json``; None where the split has none
    (COCO). Coverage is measured on a 4N×4N raster of the objects' exact shapes."""
    if not (split_dir / f"scenes_{split_dir.name}.json").is_file():
        return None
    cells = torch.zeros(len(row_of), grid_size * grid_size, dtype=torch.bool)
    for scene in load_scenes(split_dir):
        if scene.id in row_of:
            covered = torch.from_numpy(scene_label_map(scene, 4 * grid_size) >= 0).float()
            cells[row_of[scene.id]] = grid_pool(covered[None, None], grid_size).reshape(-1) >= 0.5
    return cells


def load_pretrain_data(
    data_root: str | Path,
    vocab_dir: str | Path,
    split: str,
    answers: AnswerVocabulary | None,
    features_dir: str | Path | None = None,
    object_cells: bool = False,
) -> PretrainData:
    """Captions (and, with ``answers``, VQA questions) of ``data_root/split`` with the split's
    visual ids from ``vocab_dir/ids/`` (and exact features from ``features_dir``; and, with
    ``object_cells``, the object cells of ShapeScenes ground truth: :func:`object_cells_of`)."""
    split_dir = Path(data_root) / split
    captions_path = split_dir / f"captions_{split}.json"
    if not captions_path.is_file():
        raise XLXMERTError(
            f"no {captions_path.name} in {split_dir}; write the split with `xlxmert data shapes`"
        )
    visual_ids, row_of = _image_rows(Path(vocab_dir), split)
    captions = CocoCaptions(captions_path)
    missing = sorted({c["image_id"] for c in captions} - set(row_of))
    if missing:
        raise XLXMERTError(
            f"{len(missing)} images of {captions_path.name} have no visual ids (e.g. {missing[0]}); "
            f"rerun `xlxmert vocab assign` on split {split!r}"
        )
    texts = [c["caption"] for c in captions]
    rows = [row_of[c["image_id"]] for c in captions]
    is_question = [False] * len(texts)
    qa_targets: list[dict[int, float]] = [{} for _ in texts]
    questions_path = split_dir / f"questions_{split}.json"
    if answers is not None and questions_path.is_file():
        vqa = VQADataset(questions_path, split_dir / f"annotations_{split}.json", answers, image_index=row_of)
        for item in vqa.items:
            target = vqa.target(item["answers"])
            texts.append(item["question"])
            rows.append(item["image_row"])
            is_question.append(True)
            qa_targets.append({int(i): float(target[i]) for i in target.nonzero().flatten()})
    features = None
    if features_dir is not None:
        from xlxmert.visual.store import FeatureStore

        store = FeatureStore.open(features_dir)
        # The store's rows may be ordered differently from the vocabulary's ids: reorder once.
        order = {int(i): r for r, i in enumerate(store.image_ids)}
        absent = [i for i in row_of if i not in order]
        if absent:
            raise XLXMERTError(f"{features_dir} lacks features of {len(absent)} images of split {split!r}")
        by_row = sorted(row_of, key=row_of.get)
        features = np.asarray(store.features[[order[i] for i in by_row]])
        if store.grid_size**2 != visual_ids.shape[1]:
            raise XLXMERTError(
                f"{features_dir} has a {store.grid_size}×{store.grid_size} grid; the ids do not match"
            )
    return PretrainData(
        texts=texts,
        rows=np.asarray(rows, dtype=np.int64),
        is_question=np.asarray(is_question, dtype=bool),
        qa_targets=qa_targets,
        visual_ids=visual_ids,
        features=features,
        object_cells=(
            object_cells_of(split_dir, row_of, grid_size_of(visual_ids.shape[1])) if object_cells else None
        ),
    )


class EpochStream:
    """Endless stream of a pool's indices: one seeded permutation per epoch; ``cursor`` = items taken."""

    def __init__(self, pool: np.ndarray, seed: int, pool_id: int, cursor: int = 0) -> None:
        if len(pool) == 0:
            raise XLXMERTError("an example pool is empty: the split has no captions for this task")
        self.pool, self.seed, self.pool_id, self.cursor = pool, seed, pool_id, cursor

    def take(self, n: int) -> np.ndarray:
        out = []
        while n > 0:
            epoch, offset = divmod(self.cursor, len(self.pool))
            perm = np.random.default_rng(_seed_of(self.seed, self.pool_id, epoch)).permutation(len(self.pool))
            chunk = perm[offset : offset + n]
            out.append(self.pool[chunk])
            self.cursor += len(chunk)
            n -= len(chunk)
        return np.concatenate(out)


# -- one batch --------------------------------------------------------------------------------------
@dataclass
class Batch:
    """Tensors of one task's batch (B examples; L text length; M cells)."""

    task: str
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    visual_ids: torch.Tensor
    visual_feats: torch.Tensor | None
    visual_mask: torch.Tensor | None = None
    mlm_labels: torch.Tensor | None = None
    itm_labels: torch.Tensor | None = None
    qa_targets: torch.Tensor | None = None
    qa_rows: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        """This batch with every tensor on ``device``."""
        return dataclasses.replace(
            self,
            **{
                f.name: getattr(self, f.name).to(device)
                for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), torch.Tensor)
            },
        )


def swap_texts(
    data: PretrainData, examples: np.ndarray, gen: torch.Generator
) -> tuple[np.ndarray, torch.Tensor]:
    """Replace half the texts (each with probability 0.5) by a text of another image.

    Returns (indices of the texts to use, ``itm_labels: LongTensor[B]`` with 1 = matched)."""
    swap = torch.rand(len(examples), generator=gen) < 0.5
    texts = examples.copy()
    for b in np.flatnonzero(swap.numpy()):
        for _ in range(16):
            j = int(torch.randint(len(data.texts), (1,), generator=gen))
            if data.rows[j] != data.rows[examples[b]]:
                texts[b] = j
                break
        else:
            swap[b] = False  # one-image split: nothing to swap with
    return texts, (~swap).long()


def make_batch(
    task: str,
    examples: np.ndarray,
    data: PretrainData,
    tokenizer: Any,
    config: PretrainConfig,
    num_cells: int,
    num_answers: int,
    gen: torch.Generator,
) -> Batch:
    """The batch of ``task`` for dataset rows ``examples: int[B]``; every draw comes from ``gen``."""
    text_index, itm_labels = examples, None
    if task == "match":
        text_index, itm_labels = swap_texts(data, examples, gen)
    texts = [data.texts[i] for i in text_index]
    if task == "visual" and config.caption_dropout > 0:
        dropped = (torch.rand(len(texts), generator=gen) < config.caption_dropout).tolist()
        texts = ["" if d else t for t, d in zip(texts, dropped)]
    tok = tokenizer(texts)
    rows = torch.from_numpy(data.rows[examples])
    feats = (
        None if data.features is None else torch.from_numpy(data.features[rows.numpy()].astype(np.float32))
    )
    batch = Batch(
        task=task,
        input_ids=tok.input_ids,
        attention_mask=tok.attention_mask,
        visual_ids=data.visual_ids[rows],
        visual_feats=None if feats is None else feats.reshape(len(examples), num_cells, -1),
        itm_labels=itm_labels,
    )
    B = len(examples)
    if task == "visual":
        if config.visual_masking == "uniform":
            batch.visual_mask = uniform_visual_mask(B, num_cells, gen)
        else:
            batch.visual_mask = bernoulli_visual_mask(B, num_cells, config.mask_prob, gen)
        if config.full_mask_prob > 0:
            full = torch.rand(B, generator=gen) < config.full_mask_prob
            batch.visual_mask[full] = True
    elif task == "text" and config.text_masking == "uniform":
        batch.input_ids, batch.mlm_labels = uniform_text_mask(
            tok.input_ids, tok.attention_mask, tokenizer.special_ids, tokenizer.mask_id, gen
        )
    elif task == "text":
        batch.input_ids, batch.mlm_labels = mask_text_tokens(
            tok.input_ids,
            tok.attention_mask,
            tokenizer.special_ids,
            tokenizer.vocab_size,
            tokenizer.mask_id,
            gen,
            p=config.mask_prob,
        )
    else:
        matched_questions = [b for b in range(B) if itm_labels[b] == 1 and data.is_question[examples[b]]]
        target = torch.zeros(len(matched_questions), num_answers)
        for k, b in enumerate(matched_questions):
            for a, score in data.qa_targets[examples[b]].items():
                target[k, a] = score
        batch.qa_rows = torch.tensor(matched_questions, dtype=torch.long)
        batch.qa_targets = target
    return batch


def ccc_class_weights(visual_ids: torch.Tensor, num_clusters: int, balance: float) -> torch.Tensor | None:
    """FloatTensor[K]: CCC's weight of each target word, ``(n_k / mean n)^-balance`` with n_k the
    word's count in ``visual_ids`` (+1); None for ``balance`` 0 (the paper's plain loss)."""
    if balance == 0:
        return None
    counts = torch.bincount(visual_ids.flatten().long(), minlength=num_clusters).double() + 1.0
    return (counts / counts.mean()).pow(-balance).float()
