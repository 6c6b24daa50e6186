"""The feature store: grid features of a whole split on disk, as an fp16 memory-mapped array.

    FEATS/
      features.npy   fp16 ``[num_images, N, N, D]`` (``np.lib.format.open_memmap``; never loaded whole)
      index.json     split, image_ids and file_names in row order, grid_size, dim, image_size,
                     chunk_size, num_chunks, chunks_done
      backbone/      the backbone used (``save_pretrained``), so ids can be traced to their features

COCO train at paper size is 82 783 × 8 × 8 × 2048 fp16 values (21.7 GB): extraction writes one
batch at a time into the memory map and never holds more than a batch of images and features.
Rows are grouped into chunks of ``chunk_size`` images; a chunk is flushed to disk *then* recorded
in ``index.json`` (atomically replaced), so after a kill a rerun skips every recorded chunk and
redoes the one that was half-written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from xlxmert.data.images import load_image, pil_to_tensor
from xlxmert.errors import XLXMERTError
from xlxmert.visual.grid import GridFeatureExtractor

FEATURES_NAME = "features.npy"
INDEX_NAME = "index.json"
BACKBONE_DIR = "backbone"


def split_images(data_root: str | Path, split: str) -> tuple[list[int], list[str], list[Path]]:
    """Image ids, file names and image paths of ``DATA/<split>/``, in file order.

    Reads COCO-format ``captions_<split>.json`` (``images``: ``id``, ``file_name``), else
    ``scenes_<split>.json`` (WORLD.md). A file name is relative to the split folder
    (``images/shapes_train_000001.png``) or, COCO-style, to ``DATA/<split>/images/``.
    """
    split_dir = Path(data_root) / split
    if not split_dir.is_dir():
        raise XLXMERTError(f"split folder not found: {split_dir}; generate it with `xlxmert data shapes`")
    for name in (f"captions_{split}.json", f"scenes_{split}.json"):
        path = split_dir / name
        if path.is_file():
            try:
                images = json.loads(path.read_text())["images"]
                ids = [int(im["id"]) for im in images]
                files = [str(im["file_name"]) for im in images]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise XLXMERTError(
                    f"{path} is not a valid image list ({type(exc).__name__}: {exc})"
                ) from None
            if not ids:
                raise XLXMERTError(f"{path} lists no images")
            paths = [p if (p := split_dir / f).is_file() else split_dir / "images" / f for f in files]
            return ids, files, paths
    raise XLXMERTError(f"{split_dir} has neither captions_{split}.json nor scenes_{split}.json")


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


class FeatureStore:
    """A read-only view of ``FEATS/``: ``features`` is ``np.memmap float16 [num_images, N, N, D]``."""

    def __init__(self, path: Path, index: dict, features: np.ndarray) -> None:
        self.path = path
        self.index = index
        self.features = features

    @classmethod
    def open(cls, path: str | Path, require_complete: bool = True) -> FeatureStore:
        path = Path(path)
        index_path, feats_path = path / INDEX_NAME, path / FEATURES_NAME
        if not index_path.is_file() or not feats_path.is_file():
            raise XLXMERTError(
                f"{path} is not a feature store (needs {INDEX_NAME} and {FEATURES_NAME}); "
                "write one with `xlxmert features extract`"
            )
        try:
            index = json.loads(index_path.read_text())
            expected = (len(index["image_ids"]), index["grid_size"], index["grid_size"], index["dim"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise XLXMERTError(f"{index_path} is corrupt ({type(exc).__name__}: {exc}); re-extract") from None
        try:
            features = np.load(feats_path, mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise XLXMERTError(f"{feats_path} is not a readable .npy array ({exc}); re-extract") from None
        if tuple(features.shape) != expected or features.dtype != np.float16:
            raise XLXMERTError(
                f"{feats_path} has shape {tuple(features.shape)} {features.dtype}, "
                f"expected {expected} float16 "
                f"from {INDEX_NAME}; re-extract the features"
            )
        store = cls(path, index, features)
        if require_complete and not store.complete:
            raise XLXMERTError(
                f"{path} is incomplete ({len(index['chunks_done'])}/{index['num_chunks']} chunks); "
                "rerun the same `xlxmert features extract` command to finish it"
            )
        return store

    @property
    def image_ids(self) -> list[int]:
        return list(self.index["image_ids"])

    @property
    def file_names(self) -> list[str]:
        return list(self.index["file_names"])

    @property
    def grid_size(self) -> int:
        return int(self.index["grid_size"])

    @property
    def dim(self) -> int:
        return int(self.index["dim"])

    @property
    def split(self) -> str:
        return str(self.index["split"])

    @property
    def complete(self) -> bool:
        return len(self.index["chunks_done"]) == self.index["num_chunks"]

    @property
    def backbone_dir(self) -> Path | None:
        folder = self.path / BACKBONE_DIR
        return folder if folder.is_dir() else None

    def __len__(self) -> int:
        return len(self.index["image_ids"])

    def iter_chunks(self, rows: int = 1024) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, float32 [rows, N*N, D])`` blocks in row order; one block in RAM at a time."""
        n_cells = self.grid_size**2
        for start in range(0, len(self), rows):
            block = np.asarray(self.features[start : start + rows], dtype=np.float32)
            yield start, block.reshape(len(block), n_cells, self.dim)


def extract_features(
    data_root: str | Path,
    split: str,
    extractor: GridFeatureExtractor,
    out: str | Path,
    chunk_size: int = 1024,
    batch_size: int = 32,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> FeatureStore:
    """Write the grid features of ``DATA/<split>`` to the store ``out`` (resuming if it exists).

    Every image is checked to exist before any work; a corrupt PNG stops extraction with a
    one-line :class:`XLXMERTError` naming it (chunks already done are kept).
    """
    if chunk_size < 1 or batch_size < 1:
        raise XLXMERTError("chunk_size and batch_size must be positive")
    ids, files, paths = split_images(data_root, split)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise XLXMERTError(
            f"{len(missing)} of {len(files)} images of split {split!r} are missing (first: {missing[0]})"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    extractor = extractor.to(device).eval()
    size = extractor.image_size
    n = extractor.grid_size

    def load_batch(rows: range) -> torch.Tensor:
        return torch.stack([pil_to_tensor(load_image(paths[r], size)) for r in rows]).to(device)

    index_path, feats_path = out / INDEX_NAME, out / FEATURES_NAME
    num_chunks = (len(ids) + chunk_size - 1) // chunk_size
    if index_path.is_file() and feats_path.is_file():
        index = json.loads(index_path.read_text())
        wanted = dict(split=split, image_ids=ids, grid_size=n, image_size=size, chunk_size=chunk_size)
        clash = [k for k, v in wanted.items() if index.get(k) != v]
        if clash:
            raise XLXMERTError(
                f"{out} already holds a different extraction ({', '.join(clash)} differ); "
                "choose a new --out or delete the folder"
            )
        features = np.load(feats_path, mmap_mode="r+")
        if tuple(features.shape) != (len(ids), n, n, index["dim"]):
            raise XLXMERTError(f"{feats_path} has shape {tuple(features.shape)}; delete {out} and re-extract")
    else:
        with torch.inference_mode():
            dim = int(extractor(load_batch(range(1))).shape[-1])
        features = np.lib.format.open_memmap(
            feats_path, mode="w+", dtype=np.float16, shape=(len(ids), n, n, dim)
        )
        index = dict(
            split=split,
            image_ids=ids,
            file_names=files,
            grid_size=n,
            dim=dim,
            image_size=size,
            chunk_size=chunk_size,
            num_chunks=num_chunks,
            chunks_done=[],
            dtype="float16",
        )
        _write_json_atomic(index_path, index)
    if hasattr(extractor.backbone, "save_pretrained") and not (out / BACKBONE_DIR).is_dir():
        extractor.save_pretrained(out / BACKBONE_DIR)

    done = set(index["chunks_done"])
    todo = [c for c in range(num_chunks) if c not in done]
    remaining = sum(min(chunk_size, len(ids) - c * chunk_size) for c in todo)
    bar = tqdm(
        total=len(ids),
        initial=len(ids) - remaining,
        unit="img",
        desc=f"features {split}",
        disable=not progress,
    )
    with torch.inference_mode():
        for c in todo:
            start, stop = c * chunk_size, min((c + 1) * chunk_size, len(ids))
            for b in range(start, stop, batch_size):
                rows = range(b, min(b + batch_size, stop))
                features[rows.start : rows.stop] = extractor(load_batch(rows)).float().cpu().numpy()
                bar.update(len(rows))
            features.flush()
            index["chunks_done"] = sorted(set(index["chunks_done"]) | {c})
            _write_json_atomic(index_path, index)
    bar.close()
    del features
    return FeatureStore.open(out)
