"""Visual vocabulary: k-means recovers clusters, assignment is exact, ids on disk, reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_visual_store import Counting, make_split
from xlxmert.errors import XLXMERTError
from xlxmert.visual.grid import GridFeatureExtractor
from xlxmert.visual.store import FeatureStore, extract_features
from xlxmert.visual.vocabulary import (
    VisualVocabulary,
    VocabularyConfig,
    assign_store,
    build_vocabulary,
    load_ids,
)


def clustered(k=6, per=150, dim=8, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)).astype(np.float32) * 3
    labels = np.repeat(np.arange(k), per)
    points = centres[labels] + rng.normal(size=(k * per, dim)).astype(np.float32) * spread
    return points, labels, centres


def test_kmeans_recovers_synthetic_clusters():
    points, labels, centres = clustered()
    vocab = VisualVocabulary.build(points, k=6, niter=20, sample_size=10_000, nredo=5, seed=0)
    assert vocab.num_clusters == 6 and vocab.dim == 8
    # Every true centre has a centroid next to it ...
    dist = np.linalg.norm(centres[:, None] - vocab.centroids.numpy()[None], axis=-1)
    assert dist.min(1).max() < 0.1
    # ... and the ids partition the points exactly as the true clusters do.
    ids = vocab.assign(points).numpy()
    for c in range(6):
        assert len(set(ids[labels == c])) == 1
    assert len(set(ids)) == 6


def test_assignment_equals_brute_force():
    rng = np.random.default_rng(1)
    centroids = torch.from_numpy(rng.normal(size=(50, 16)).astype(np.float32))
    vocab = VisualVocabulary(centroids)
    feats = torch.from_numpy(rng.normal(size=(3, 7, 16)).astype(np.float32))
    ids = vocab.assign(feats)
    assert ids.shape == (3, 7) and ids.dtype == torch.long
    brute = torch.cdist(feats.reshape(-1, 16).double(), centroids.double()).argmin(1).reshape(3, 7)
    assert torch.equal(ids, brute)
    looked = vocab.lookup(ids)
    assert looked.shape == (3, 7, 16) and torch.equal(looked[1, 2], centroids[ids[1, 2]])
    with pytest.raises(XLXMERTError, match="visual ids must be in"):
        vocab.lookup(torch.tensor([50]))
    with pytest.raises(XLXMERTError, match="D = 5"):
        vocab.assign(torch.zeros(2, 5))


def test_build_is_seeded_and_saves(tmp_path):
    points, _, _ = clustered(k=4, spread=0.5)
    a = VisualVocabulary.build(points, k=10, sample_size=300, seed=3)
    b = VisualVocabulary.build(points, k=10, sample_size=300, seed=3)
    assert torch.equal(a.centroids, b.centroids)
    assert a.config == VocabularyConfig(
        num_clusters=10, dim=8, grid_size=16, niter=20, nredo=1, sample_size=300, seed=3, balance=False
    )
    a.save_pretrained(tmp_path / "v")
    loaded = VisualVocabulary.from_pretrained(tmp_path / "v")
    assert torch.equal(loaded.centroids, a.centroids) and loaded.config == a.config
    assert (tmp_path / "v" / "centroids.safetensors").is_file()


def test_balanced_sample_keeps_the_dense_background_from_eating_the_codebook():
    # 90% of the vectors are near-identical "background"; 10% spread over 8 object clusters.
    rng = np.random.default_rng(0)
    background = rng.normal(size=(9000, 8)).astype(np.float32) * 0.3
    objects, _, _ = clustered(k=8, per=125, spread=0.3, seed=1)
    feats = np.concatenate([background, objects + 6])

    def near_background(vocab):
        return int((np.linalg.norm(vocab.centroids.numpy(), axis=1) < 2).sum())

    plain = VisualVocabulary.build(feats, k=32, sample_size=2000, seed=0, balance=False)
    balanced = VisualVocabulary.build(feats, k=32, sample_size=2000, seed=0, balance=True)
    assert near_background(balanced) < near_background(plain)
    assert balanced.config.balance


def test_report_counts_dead_clusters_and_error(tmp_path):
    points, _, centres = clustered(k=3, spread=0.1)
    far = np.full((1, 8), 100.0, np.float32)
    vocab = VisualVocabulary(torch.from_numpy(np.concatenate([centres, far])))
    report = vocab.report(points, tmp_path)
    assert report["counts"] == [150, 150, 150, 0]
    assert report["num_dead_clusters"] == 1 and report["dead_clusters"] == [3]
    assert report["mean_sq_error"] == pytest.approx(8 * 0.1**2, rel=0.2)
    assert 0 < report["relative_error"] < 0.01
    assert report["usage_perplexity"] == pytest.approx(3.0)
    assert json.loads((tmp_path / "report.json").read_text())["num_dead_clusters"] == 1


def test_store_to_ids_on_disk(tmp_path):
    root = make_split(tmp_path / "data", n=6)
    store = extract_features(
        root,
        "train",
        GridFeatureExtractor(Counting(dim=6), 4),
        tmp_path / "feats",
        chunk_size=4,
        progress=False,
    )
    vocab, report = build_vocabulary(
        store, VocabularyConfig(num_clusters=5, dim=6, grid_size=4, sample_size=1000), tmp_path / "vocab"
    )
    assert report["num_vectors"] == 6 * 16 and sum(report["counts"]) == 96
    path = assign_store(FeatureStore.open(tmp_path / "feats"), vocab, tmp_path / "vocab")
    assert path == tmp_path / "vocab" / "ids" / "train.npy"
    ids, image_ids = load_ids(tmp_path / "vocab", "train")
    assert ids.dtype == np.uint16 and ids.shape == (6, 16) and image_ids == store.image_ids
    # Row-major: column i*N + j is cell (i, j).
    expected = vocab.assign(np.asarray(store.features, np.float32)).numpy().reshape(6, 16)
    np.testing.assert_array_equal(ids, expected)
    assert ids[2, 1 * 4 + 3] == vocab.assign(np.asarray(store.features[2, 1, 3], np.float32)[None])[0]
    assert (tmp_path / "vocab" / "backbone").is_dir() is False  # this toy backbone cannot be saved
    with pytest.raises(XLXMERTError, match="vocab assign"):
        load_ids(tmp_path / "vocab", "val")


def test_shape_errors():
    with pytest.raises(XLXMERTError, match=r"\[M, D\]"):
        VisualVocabulary.build(np.zeros((2, 3, 4), np.float32), k=2)
    with pytest.raises(XLXMERTError, match="at least K"):
        VisualVocabulary.build(np.zeros((3, 4), np.float32), k=5)
    with pytest.raises(XLXMERTError, match=r"\[K, D\]"):
        VisualVocabulary(torch.zeros(3))


def test_presets():
    paper = VocabularyConfig.from_preset("paper")
    assert (paper.num_clusters, paper.dim, paper.grid_size, paper.niter) == (10000, 2048, 8, 20)
    assert VocabularyConfig.from_preset("shapes-64", num_clusters=7).num_clusters == 7
