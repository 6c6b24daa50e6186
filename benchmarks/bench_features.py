"""Choose the ``shapes-64`` grid size, D and K by measurement (issue 3, step 4).

For each backbone (a trained ``shapes`` backbone per D, and raw cell pixels as the prototype's
baseline), grid size N ∈ {8, 16}, K and k-means sampling (plain / balanced), the script builds a
vocabulary on the train split's grid features and measures on val:

- ``rel_err``: mean squared quantisation error over the features' total variance (val),
- ``dead``: clusters no train cell uses; ``perplexity``: exp(entropy) of cluster usage (train),
- what a cell's id alone tells about the cell, by mapping each id to the majority label of its
  train cells and scoring that on val cells:
  ``dominant``: the colour–shape covering most of the cell, or the place if background does;
  ``place``: the scene's place; ``objects``: the exact set of colour–shape pairs covering ≥ 10%
  of the cell. Averaged over cells (background cells included) and, ``dominant_obj``, over the
  cells an object covers at least a quarter of (what painting the objects needs).

``fine_*`` columns score every grid's ids on the common 16×16 (4-px) grid, keyed by (id, position of
the 4-px cell inside the grid cell), so 8×8 and 16×16 vocabularies compare directly.

Rerun (about 10 minutes on one loaded core; backbones are trained once and reused from --work)::

    python benchmarks/bench_features.py --data /tmp/shapes --work /tmp/bench_features --dims 128 \
        --train 3000 --val 500 --steps 500

Measured 2026-11-26 (3000 / 500 scenes, 500 backbone steps, 100k k-means sample, 1 thread), val,
``fine_dominant_obj`` / ``rel_err``:

    ====================  =====  ======  ===============  ==========
    features              grid   K       dominant (obj)   rel. error
    ====================  =====  ======  ===============  ==========
    pixels (prototype)    8      1024    0.441            0.029
    pixels                16     2048    0.507            0.011
    shapes D=128, bal.    8      2048    0.481            0.021
    shapes D=128, bal.    16     256     0.494            0.047
    shapes D=128, bal.    16     512     0.528            0.036
    shapes D=128, bal.    16     1024    0.563            0.029
    shapes D=128, plain   16     1024    0.546            0.031
    shapes D=128, bal.    16     2048    0.591            0.025
    shapes D=256, bal.    16     1024    0.566            0.034
    shapes D=256, bal.    16     2048    0.587            0.029
    ====================  =====  ======  ===============  ==========

D=256 (same training) keeps no more than D=128 and doubles k-means time, so D=128.
Place from the id: 1.000 with the shapes backbone, 0.94–0.96 with pixels. No dead clusters anywhere.
The ceiling is the backbone: after 500 steps it tells colour per cell at 1.00 but shape only at
0.35 (chance 0.17); longer training (the CLI default is 1500 steps) raises every row.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from xlxmert.data.images import load_image
from xlxmert.data.shapes import generate_split, load_scenes
from xlxmert.training.backbone import cell_targets, scene_label_map, train_backbone
from xlxmert.visual.backbones import PLACES, ShapesBackboneConfig, load_backbone
from xlxmert.visual.grid import GridFeatureExtractor
from xlxmert.visual.store import FeatureStore, extract_features, split_images
from xlxmert.visual.vocabulary import VisualVocabulary

NUM_OBJECTS = 36
FINE = 16  # common resolution (4-px cells) at which every grid's ids are scored


def cell_labels(data: Path, split: str, n: int) -> dict[str, np.ndarray]:
    """Per-cell ground truth ``[num_images * N * N]`` of ``dominant``, ``place``, ``objects``, ``covered``."""
    scenes = load_scenes(data / split)
    labels = torch.from_numpy(np.stack([scene_label_map(s, 64) for s in scenes])).long()
    coverage, _ = cell_targets(labels, n, NUM_OBJECTS)  # [M, N, N, 36]
    coverage = coverage.reshape(len(scenes), n * n, NUM_OBJECTS).numpy()
    place = np.repeat([PLACES.index(s.place) for s in scenes], n * n)
    cov = coverage.reshape(-1, NUM_OBJECTS)
    background = 1 - cov.sum(-1)
    dominant = np.where(cov.max(-1) > background, cov.argmax(-1), NUM_OBJECTS + place)
    present = cov >= 0.1
    return {
        "dominant": dominant,
        "place": place,
        "objects": present.astype(np.int64) @ (np.int64(1) << np.arange(NUM_OBJECTS, dtype=np.int64)),
        "covered": cov.max(-1) >= 0.25,
    }


def split_labels(data: Path, n: int) -> tuple[dict, dict]:
    """``cell_labels`` of train and val, with the object-set bit codes renumbered jointly (dense)."""
    train_y, val_y = cell_labels(data, "train", n), cell_labels(data, "val", n)
    _, codes = np.unique(np.concatenate([train_y["objects"], val_y["objects"]]), return_inverse=True)
    train_y["objects"], val_y["objects"] = codes[: len(train_y["objects"])], codes[len(train_y["objects"]) :]
    return train_y, val_y


def fine_keys(ids: np.ndarray, n: int) -> np.ndarray:
    """Key of each FINE×FINE cell: (id of the N-grid cell holding it, its position inside that cell)."""
    r = FINE // n
    grid = ids.reshape(-1, n, n).repeat(r, axis=1).repeat(r, axis=2)
    sub = (np.arange(FINE) % r)[:, None] * r + (np.arange(FINE) % r)[None, :]
    return (grid * r * r + sub).reshape(-1)


def id_accuracy(train_ids: np.ndarray, train_y: np.ndarray, val_ids: np.ndarray, val_y: np.ndarray, k: int):
    """Per val cell: is ``y`` the majority train label of its id (unseen ids: the global majority)?"""
    table = np.zeros((k, int(max(train_y.max(), val_y.max())) + 1), np.int64)
    np.add.at(table, (train_ids, train_y), 1)
    best = table.argmax(1)
    best[table.sum(1) == 0] = np.bincount(train_y).argmax()
    return best[val_ids] == val_y


def pixel_features(data: Path, split: str, n: int) -> np.ndarray:
    """The prototype's features: each cell's raw RGB pixels, ``[num_images, N*N, 3 * (64/N)**2]``."""
    _, _, paths = split_images(data, split)
    images = np.stack([np.asarray(load_image(p, 64), np.float32) / 127.5 - 1 for p in paths])
    c = 64 // n
    cells = images.reshape(len(images), n, c, n, c, 3).transpose(0, 1, 3, 2, 4, 5)
    return cells.reshape(len(images), n * n, c * c * 3)


def store_features(
    data: Path, split: str, backbone_dir: Path, n: int, work: Path
) -> tuple[np.ndarray, float]:
    out = work / f"feats-{backbone_dir.name}-g{n}-{split}"
    extractor = GridFeatureExtractor(load_backbone(backbone_dir), n)
    start = time.perf_counter()
    store = extract_features(data, split, extractor, out, batch_size=64, progress=False)
    rate = len(store) / (time.perf_counter() - start)
    store = FeatureStore.open(out)
    return np.asarray(store.features, np.float32).reshape(len(store), n * n, store.dim), rate


def evaluate(name, train_f, val_f, train_y, val_y, fine_y, k, sample_size, balance, seed=0) -> dict:
    d = train_f.shape[-1]
    start = time.perf_counter()
    vocab = VisualVocabulary.build(
        train_f.reshape(-1, d), k, niter=20, sample_size=sample_size, seed=seed, balance=balance
    )
    seconds = time.perf_counter() - start
    _, train_ids = vocab._search(train_f)  # one exact search per split serves every metric below
    val_dist, val_ids = vocab._search(val_f)
    flat = val_f.reshape(-1, d).astype(np.float64)
    variance = float(((flat - flat.mean(0)) ** 2).sum(1).mean())
    counts = np.bincount(train_ids, minlength=k)
    p = counts[counts > 0] / counts.sum()
    row = {
        "features": name,
        "dim": d,
        "k": k,
        "balance": balance,
        "kmeans_s": round(seconds, 1),
        "rel_err": round(float(val_dist.mean()) / variance, 4),
        "dead": int((counts == 0).sum()),
        "perplexity": round(float(np.exp(-(p * np.log(p)).sum())), 1),
    }
    for key in ("dominant", "place", "objects"):
        row[key] = round(float(id_accuracy(train_ids, train_y[key], val_ids, val_y[key], k).mean()), 4)
    hits = id_accuracy(train_ids, train_y["dominant"], val_ids, val_y["dominant"], k)
    row["dominant_obj"] = round(float(hits[val_y["covered"]].mean()), 4)
    # Scored on the common 4-px grid, so 8×8 and 16×16 vocabularies compare directly.
    n = int(round(np.sqrt(train_f.shape[1])))
    r2 = (FINE // n) ** 2
    fine_train, fine_val = fine_keys(train_ids, n), fine_keys(val_ids, n)
    for key in ("dominant", "objects"):
        hits = id_accuracy(fine_train, fine_y[0][key], fine_val, fine_y[1][key], k * r2)
        row[f"fine_{key}"] = round(float(hits.mean()), 4)
    hits = id_accuracy(fine_train, fine_y[0]["dominant"], fine_val, fine_y[1]["dominant"], k * r2)
    row["fine_dominant_obj"] = round(float(hits[fine_y[1]["covered"]].mean()), 4)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="data root (generated if missing)")
    parser.add_argument("--work", type=Path, required=True, help="folder for backbones, stores, results")
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--val", type=int, default=500)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--dims", type=int, nargs="*", default=[128, 256])
    parser.add_argument("--grids", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--ks", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument(
        "--balance-ks",
        type=int,
        nargs="*",
        default=[1024],
        help="K values at which plain sampling is also run, against balanced",
    )
    parser.add_argument("--sample-size", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-pixels", action="store_true", help="skip the raw-pixel baseline")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    for split, count in (("train", args.train), ("val", args.val)):
        if not (args.data / split).is_dir():
            generate_split(args.data, split, count, size=64, seed=0, progress=False)
    args.work.mkdir(parents=True, exist_ok=True)
    results = []

    def record(row: dict) -> None:
        results.append(row)
        print(json.dumps(row), flush=True)
        (args.work / "results.json").write_text(json.dumps(results, indent=1) + "\n")

    for d in args.dims:
        bb = args.work / f"backbone-d{d}"
        if not (bb / "model.safetensors").is_file():
            start = time.perf_counter()
            metrics = train_backbone(
                args.data,
                ShapesBackboneConfig.from_preset("shapes-64", feature_dim=d),
                bb,
                steps=args.steps,
                batch_size=32,
                seed=0,
                progress=False,
            )
            record({"backbone": bb.name, "train_s": round(time.perf_counter() - start), **metrics})
        else:
            record({"backbone": bb.name, **json.loads((bb / "training.json").read_text())})
    fine_y = split_labels(args.data, FINE)
    for n in args.grids:
        train_y, val_y = split_labels(args.data, n)
        feature_sets = []  # (name, train features, val features, sampling is balanced by default)
        if not args.no_pixels:
            # The prototype's setting: raw pixels, plain k-means sample.
            pixels = (pixel_features(args.data, "train", n), pixel_features(args.data, "val", n))
            feature_sets.append(("pixels", *pixels, False))
        for d in args.dims:
            train_f, rate = store_features(args.data, "train", args.work / f"backbone-d{d}", n, args.work)
            val_f, _ = store_features(args.data, "val", args.work / f"backbone-d{d}", n, args.work)
            record({"extract": f"d{d}-g{n}", "images_per_s": round(rate, 1)})
            feature_sets.append((f"shapes-d{d}", train_f, val_f, True))
        for name, train_f, val_f, balanced in feature_sets:
            for k in args.ks:
                # Plain against balanced sampling only at --balance-ks (each costs another k-means).
                balances = (balanced, not balanced) if k in args.balance_ks else (balanced,)
                for balance in balances:
                    row = evaluate(name, train_f, val_f, train_y, val_y, fine_y, k, args.sample_size, balance)
                    record({"grid": n, **row})


if __name__ == "__main__":
    main()
