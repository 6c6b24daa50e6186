"""The visual vocabulary (paper §4.1, C.4): k-means centroids of grid features; a cell's id is its
nearest centroid.

    VOCAB/
      config.json            VocabularyConfig
      centroids.safetensors  {"centroids": FloatTensor[K, D]}
      report.json            cluster usage histogram, dead clusters, quantisation error
      backbone/              copy of the feature store's backbone (the folder is self-contained)
      ids/<split>.npy        uint16 [num_images, N*N], row-major cells   (``assign_store``)
      ids/<split>.json       image ids in row order

K-means is ``faiss.Kmeans`` (on the GPU when faiss sees one; nothing to change), trained on a
random sample of grid vectors whose size is an option (the paper: 2.6M of COCO's 5.3M, 20
iterations). Assignment is exact L2 nearest centroid (``faiss.IndexFlatL2``).

``balance``: in ShapeScenes most cells are plain background, and k-means spends clusters on
density, so a plain sample lets near-identical background cells eat the codebook. With
``balance=True`` the sample is drawn evenly across a coarse k-means partition of a larger
candidate pool (no labels needed), flattening that density before the real clustering.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from xlxmert.errors import XLXMERTError
from xlxmert.utils.config import PresetConfig, load_config, save_config
from xlxmert.utils.seeding import numpy_rng
from xlxmert.visual.store import BACKBONE_DIR, FeatureStore

if TYPE_CHECKING:
    import faiss

CENTROIDS_NAME = "centroids.safetensors"
REPORT_NAME = "report.json"
IDS_DIR = "ids"
_ASSIGN_ROWS = 65536  # vectors per faiss search call: bounds memory on large stores


@dataclass(frozen=True)
class VocabularyConfig(PresetConfig):
    """K-means settings. ``num_clusters`` = K, ``dim`` = D, ``grid_size`` = N of the features.

    ``nredo``: independent k-means runs, the one with the lowest error kept (faiss' ``nredo``).
    """

    num_clusters: int = field(default=1024, metadata={"help": "number of clusters K"})
    dim: int = 128
    grid_size: int = 16
    niter: int = field(default=20, metadata={"help": "k-means iterations"})
    nredo: int = field(default=1, metadata={"help": "independent k-means runs, the best kept"})
    sample_size: int = field(default=2_600_000, metadata={"help": "grid vectors k-means trains on"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    balance: bool = field(default=True, metadata={"help": "balance the k-means sample"})

    PRESET_KIND: ClassVar[str] = "vocabulary"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # Paper C.4: Faster R-CNN fc6 (D = 2048), 8×8 grid, K = 10000, 20 iterations, 2.6M sample.
        "paper": dict(
            num_clusters=10000, dim=2048, grid_size=8, niter=20, sample_size=2_600_000, balance=False
        ),
        # Chosen by benchmarks/bench_features.py (3000 train / 500 val 64-px scenes, a 500-step
        # shapes backbone, 100k-vector k-means sample). Val cells, scored on a common 4-px grid:
        # share of object cells whose dominant colour–shape the id's majority label gets right /
        # relative quantisation error:
        #   raw pixels (the prototype), 8×8,   K=1024: 0.44 / 0.029;  16×16, K=2048: 0.51 / 0.011
        #   shapes D=128, 8×8,   K=2048, balanced:     0.48 / 0.021
        #   shapes D=128, 16×16, K=256/512/1024/2048:  0.49 / 0.53 / 0.56 / 0.59 (balanced)
        #   16×16, K=1024 plain sample: 0.55 (balanced 0.56); place from id: 1.00 (pixels 0.95).
        #   shapes D=256, 16×16, K=1024/2048: 0.57 / 0.59 (no better than D=128, 2× k-means time).
        # So 16×16 beats 8×8 at equal K, larger K keeps more, balancing helps: K=2048, D=128.
        "shapes-64": dict(
            num_clusters=2048, dim=128, grid_size=16, niter=20, sample_size=100_000, balance=True
        ),
    }


def _as_matrix(features: np.ndarray | torch.Tensor, dim: int | None = None) -> np.ndarray:
    """C-contiguous float32 ``[M, D]`` from any ``[..., D]`` array (faiss' input format)."""
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    features = np.asarray(features)
    if features.ndim < 2:
        raise XLXMERTError(f"features must have shape [..., D]; got {features.shape}")
    if dim is not None and features.shape[-1] != dim:
        raise XLXMERTError(f"features have D = {features.shape[-1]} but the vocabulary has D = {dim}")
    return np.ascontiguousarray(features.reshape(-1, features.shape[-1]), dtype=np.float32)


def _sample_rows(source: np.ndarray | FeatureStore, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` random grid vectors (without replacement) as float32 ``[size, D]``."""
    if isinstance(source, FeatureStore):
        flat = source.features.reshape(-1, source.dim)  # a view of the memmap: nothing is read yet
    else:
        flat = np.asarray(source)
        if flat.ndim != 2:
            raise XLXMERTError(f"k-means input must be [M, D] or a FeatureStore; got shape {flat.shape}")
    total = flat.shape[0]
    if size >= total:
        return np.ascontiguousarray(flat[:], dtype=np.float32)
    rows = np.sort(rng.choice(total, size=size, replace=False))  # sorted: sequential reads from disk
    return np.ascontiguousarray(flat[rows], dtype=np.float32)


def _balanced_sample(pool: np.ndarray, size: int, seed: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``size`` rows of ``pool`` spread evenly over a coarse k-means partition (water-filling)."""
    import faiss  # here, not at import: loading a model folder's vocabulary needs no faiss

    coarse_k = max(2, min(64, int(math.sqrt(len(pool) / 20))))
    km = faiss.Kmeans(
        pool.shape[1],
        coarse_k,
        niter=10,
        seed=seed,
        gpu=faiss.get_num_gpus() > 0,
        max_points_per_centroid=1 << 30,
    )
    km.train(pool)
    _, groups = km.index.search(pool, 1)
    groups = groups[:, 0]
    members = [rng.permutation(np.flatnonzero(groups == g)) for g in range(coarse_k)]
    members = [m for m in members if len(m)]
    quota, left = [0] * len(members), min(size, len(pool))
    # Water-filling: every group gets an equal share; small groups give their unused share to the rest.
    order = sorted(range(len(members)), key=lambda g: len(members[g]))
    for rank, g in enumerate(order):
        quota[g] = min(len(members[g]), left // (len(order) - rank))
        left -= quota[g]
    rows = np.concatenate([members[g][: quota[g]] for g in range(len(members))])
    return pool[np.sort(rows)]


class VisualVocabulary:
    """``centroids: FloatTensor[K, D]``: the visual words. :meth:`assign` maps features to ids."""

    def __init__(self, centroids: torch.Tensor, config: VocabularyConfig | None = None) -> None:
        centroids = torch.as_tensor(centroids, dtype=torch.float32).detach().cpu().contiguous()
        if centroids.dim() != 2:
            raise XLXMERTError(f"centroids must be [K, D]; got shape {tuple(centroids.shape)}")
        k, d = centroids.shape
        self.centroids = centroids
        self.config = config or VocabularyConfig(num_clusters=k, dim=d)
        if (self.config.num_clusters, self.config.dim) != (k, d):
            raise XLXMERTError(
                f"config says K={self.config.num_clusters}, D={self.config.dim}; centroids are {k}×{d}"
            )
        self._index: faiss.IndexFlatL2 | None = None

    @property
    def num_clusters(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    @classmethod
    def build(
        cls,
        features: np.ndarray | FeatureStore,
        k: int,
        niter: int = 20,
        sample_size: int = 2_600_000,
        nredo: int = 1,
        seed: int = 0,
        balance: bool = False,
        verbose: bool = False,
    ) -> VisualVocabulary:
        """K-means (``faiss.Kmeans``) on a random sample of ``sample_size`` grid vectors.

        ``features``: ``np.ndarray[M, D]`` or a :class:`FeatureStore` (sampled from its memory map).
        ``balance``: draw the sample evenly over a coarse partition of a 4× larger pool (see module).
        """
        rng = numpy_rng(seed)
        if balance:
            pool = _sample_rows(features, 4 * sample_size, rng)
            sample = _balanced_sample(pool, sample_size, seed, rng)
        else:
            sample = _sample_rows(features, sample_size, rng)
        if len(sample) < k:
            raise XLXMERTError(f"k-means needs at least K = {k} vectors; the sample has {len(sample)}")
        import faiss

        d = sample.shape[1]
        # max_points_per_centroid: faiss would silently subsample to 256·K; the sample size is ours.
        km = faiss.Kmeans(
            d,
            int(k),
            niter=int(niter),
            nredo=int(nredo),
            seed=int(seed),
            gpu=faiss.get_num_gpus() > 0,
            max_points_per_centroid=1 << 30,
            verbose=verbose,
        )
        km.train(sample)
        grid_size = features.grid_size if isinstance(features, FeatureStore) else VocabularyConfig.grid_size
        config = VocabularyConfig(
            num_clusters=int(k),
            dim=d,
            grid_size=grid_size,
            niter=int(niter),
            nredo=int(nredo),
            sample_size=int(sample_size),
            seed=int(seed),
            balance=bool(balance),
        )
        return cls(torch.from_numpy(km.centroids.copy()), config)

    def _faiss_index(self) -> faiss.IndexFlatL2:
        import faiss

        if self._index is None:
            self._index = faiss.IndexFlatL2(self.dim)
            self._index.add(self.centroids.numpy())
        return self._index

    def _search(self, features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        flat = _as_matrix(features, self.dim)
        dist, ids = np.empty(len(flat), np.float32), np.empty(len(flat), np.int64)
        for s in range(0, len(flat), _ASSIGN_ROWS):
            d, i = self._faiss_index().search(flat[s : s + _ASSIGN_ROWS], 1)
            dist[s : s + len(d)], ids[s : s + len(i)] = d[:, 0], i[:, 0]
        return dist, ids

    def assign(self, features: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Nearest centroid (exact L2): ``features: [..., D]`` → ``LongTensor[...]``."""
        shape = tuple(features.shape[:-1])
        _, ids = self._search(features)
        return torch.from_numpy(ids).reshape(shape)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Centroids of ``ids: LongTensor[...]`` → ``FloatTensor[..., D]``."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_clusters):
            raise XLXMERTError(
                f"visual ids must be in [0, {self.num_clusters}); got {int(ids.min())}..{int(ids.max())}"
            )
        return self.centroids.to(ids.device)[ids]

    def report(
        self,
        features: np.ndarray | torch.Tensor | FeatureStore,
        out: str | Path | None = None,
        progress: bool = False,
    ) -> dict:
        """Cluster usage over ``features`` (``[..., D]`` or a store, read chunk by chunk).

        Returns (and writes to ``out/report.json`` if given): ``counts`` (histogram, length K),
        ``dead_clusters`` (count and ids never used), ``usage_perplexity`` (exp of the usage
        entropy: K for perfectly even use), ``mean_sq_error`` (mean squared L2 distance to the
        assigned centroid) and ``relative_error`` (that over the features' total variance).
        """
        counts = np.zeros(self.num_clusters, np.int64)
        sq_err = sq_norm = 0.0
        total = 0
        mean_sum = np.zeros(self.dim, np.float64)
        blocks = (
            _chunks_with_progress(features, "report", progress)
            if isinstance(features, FeatureStore)
            else [(0, _as_matrix(features, self.dim))]
        )
        for _, block in blocks:
            flat = _as_matrix(block, self.dim)
            dist, ids = self._search(flat)
            counts += np.bincount(ids, minlength=self.num_clusters)
            sq_err += float(dist.astype(np.float64).sum())
            sq_norm += float((flat.astype(np.float64) ** 2).sum())
            mean_sum += flat.sum(0, dtype=np.float64)
            total += len(flat)
        if total == 0:
            raise XLXMERTError("no features to report on")
        variance = sq_norm / total - float(((mean_sum / total) ** 2).sum())
        p = counts[counts > 0] / total
        dead = np.flatnonzero(counts == 0)
        result = {
            "num_clusters": self.num_clusters,
            "dim": self.dim,
            "num_vectors": int(total),
            "counts": counts.tolist(),
            "num_dead_clusters": int(len(dead)),
            "dead_clusters": dead.tolist(),
            "usage_perplexity": float(np.exp(-(p * np.log(p)).sum())),
            "mean_sq_error": sq_err / total,
            "relative_error": (sq_err / total) / max(variance, 1e-12),
        }
        if out is not None:
            Path(out).mkdir(parents=True, exist_ok=True)
            (Path(out) / REPORT_NAME).write_text(json.dumps(result) + "\n")
        return result

    def save_pretrained(self, folder: str | Path) -> Path:
        folder = Path(folder)
        save_config(self.config, folder)
        save_file({"centroids": self.centroids}, str(folder / CENTROIDS_NAME))
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> VisualVocabulary:
        """Load a vocabulary folder (``config.json`` + ``centroids.safetensors``): the one way to
        read centroids (a transformer gets its model's through here)."""
        folder = Path(folder)
        path = folder / CENTROIDS_NAME
        if not path.is_file():
            raise XLXMERTError(
                f"no {CENTROIDS_NAME} in {folder}: build the vocabulary with `xlxmert vocab build`"
            )
        config = load_config(VocabularyConfig, folder)
        tensors = load_file(str(path))
        if "centroids" not in tensors:
            raise XLXMERTError(f"{path} has no 'centroids' tensor (keys: {sorted(tensors)})")
        return cls(tensors["centroids"], config)


def copy_store_backbone(store: FeatureStore, vocab_dir: str | Path) -> None:
    """Copy ``FEATS/backbone/`` into ``VOCAB/backbone/`` (if the store has one and the vocab not)."""
    dst = Path(vocab_dir) / BACKBONE_DIR
    if store.backbone_dir is not None and not dst.is_dir():
        shutil.copytree(store.backbone_dir, dst)


def _chunks_with_progress(store: FeatureStore, desc: str, progress: bool):
    bar = tqdm(total=len(store), unit="img", desc=desc, disable=not progress)
    for start, block in store.iter_chunks():
        yield start, block
        bar.update(len(block))
    bar.close()


def build_vocabulary(
    store: FeatureStore, config: VocabularyConfig, out: str | Path, progress: bool = False
) -> tuple[VisualVocabulary, dict]:
    """``xlxmert vocab build``: k-means on ``store``, then save, report on the store, copy the backbone.

    ``progress``: faiss prints its k-means iterations, then a bar over the report's pass.
    """
    if config.dim != store.dim or config.grid_size != store.grid_size:
        config = dataclasses.replace(config, dim=store.dim, grid_size=store.grid_size)
    vocab = VisualVocabulary.build(
        store,
        config.num_clusters,
        niter=config.niter,
        sample_size=config.sample_size,
        nredo=config.nredo,
        seed=config.seed,
        balance=config.balance,
        verbose=progress,
    )
    vocab.save_pretrained(out)
    report = vocab.report(store, out, progress=progress)
    copy_store_backbone(store, out)
    return vocab, report


def assign_store(
    store: FeatureStore, vocab: VisualVocabulary, vocab_dir: str | Path, progress: bool = False
) -> Path:
    """Write ``vocab_dir/ids/<split>.npy`` (uint16 ``[num_images, N*N]``) and ``ids/<split>.json``."""
    if store.dim != vocab.dim:
        raise XLXMERTError(
            f"feature store has D = {store.dim} but the vocabulary has D = {vocab.dim}; "
            "build the vocabulary from features of the same backbone"
        )
    if vocab.config.grid_size != store.grid_size:
        n, m = store.grid_size, vocab.config.grid_size
        raise XLXMERTError(
            f"feature store {store.path} has a {n}×{n} grid but the vocabulary was built on {m}×{m} "
            f"features; extract the features with --grid-size {m}"
        )
    if vocab.num_clusters > np.iinfo(np.uint16).max + 1:
        raise XLXMERTError(f"K = {vocab.num_clusters} does not fit uint16 ids (at most 65536)")
    ids_dir = Path(vocab_dir) / IDS_DIR
    ids_dir.mkdir(parents=True, exist_ok=True)
    path = ids_dir / f"{store.split}.npy"
    ids = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(len(store), store.grid_size**2))
    for start, block in _chunks_with_progress(store, f"assign {store.split}", progress):
        ids[start : start + len(block)] = vocab.assign(block).numpy().astype(np.uint16)
    ids.flush()
    del ids
    (ids_dir / f"{store.split}.json").write_text(json.dumps(store.image_ids) + "\n")
    copy_store_backbone(store, vocab_dir)
    return path


def load_ids(vocab_dir: str | Path, split: str) -> tuple[np.ndarray, list[int]]:
    """``(ids: np.ndarray uint16 [num_images, N*N], image_ids: list[int])`` from :func:`assign_store`."""
    ids_dir = Path(vocab_dir) / IDS_DIR
    npy, js = ids_dir / f"{split}.npy", ids_dir / f"{split}.json"
    if not npy.is_file() or not js.is_file():
        raise XLXMERTError(
            f"no visual ids for split {split!r} in {vocab_dir}; run `xlxmert vocab assign` first"
        )
    ids = np.load(npy)
    image_ids = [int(i) for i in json.loads(js.read_text())]
    if ids.ndim != 2 or ids.dtype != np.uint16 or len(ids) != len(image_ids):
        raise XLXMERTError(
            f"{npy} has shape {ids.shape} {ids.dtype}; expected uint16 [{len(image_ids)}, N*N]"
        )
    return ids, image_ids
