"""Feature store: round trip, resume after a kill, bounded memory, one-line errors."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from xlxmert.data.images import load_image, pil_to_tensor
from xlxmert.errors import XLXMERTError
from xlxmert.visual.backbones import ShapesBackbone, ShapesBackboneConfig
from xlxmert.visual.grid import GridFeatureExtractor
from xlxmert.visual.store import FeatureStore, extract_features


def make_split(root, split="train", n=10, size=64, seed=0):
    """A data root with ``n`` random-noise PNGs and a scenes file (all the store reads)."""
    rng = np.random.default_rng(seed)
    (root / split / "images").mkdir(parents=True)
    entries = []
    for k in range(n):
        name = f"images/shapes_{split}_{k:06d}.png"  # relative to the split folder, as the world writes
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / split / name)
        entries.append({"id": 100 + k, "file_name": name, "place": "snow", "objects": []})
    (root / split / f"scenes_{split}.json").write_text(json.dumps({"images": entries}))
    return root


class Counting(nn.Module):
    """A pointwise backbone that counts the images it sees and can fail after ``fail_after`` of them."""

    def __init__(self, dim=6, fail_after=None):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.AvgPool2d(4), nn.Conv2d(3, dim, 1))
        self.seen = 0
        self.fail_after = fail_after

    def forward(self, images):
        if self.fail_after is not None and self.seen + len(images) > self.fail_after:
            raise KeyboardInterrupt  # what a kill looks like to the loop
        self.seen += len(images)
        return self.net(images)


def test_round_trip(tmp_path):
    root = make_split(tmp_path / "data", n=5)
    torch.manual_seed(0)
    extractor = GridFeatureExtractor(
        ShapesBackbone(ShapesBackboneConfig(widths=(4, 8, 8), feature_dim=10)), 8
    )
    store = extract_features(
        root, "train", extractor, tmp_path / "feats", chunk_size=2, batch_size=2, progress=False
    )
    store = FeatureStore.open(tmp_path / "feats")
    assert len(store) == 5 and store.grid_size == 8 and store.dim == 10 and store.split == "train"
    assert store.image_ids == [100, 101, 102, 103, 104]
    assert store.features.dtype == np.float16 and store.features.shape == (5, 8, 8, 10)
    assert isinstance(store.features, np.memmap)
    index = json.loads((tmp_path / "feats" / "index.json").read_text())
    assert index["chunks_done"] == [0, 1, 2] and index["file_names"][0] == "images/shapes_train_000000.png"
    images = torch.stack([pil_to_tensor(load_image(root / "train" / f)) for f in store.file_names])
    with torch.no_grad():
        expected = extractor(images).numpy()
    np.testing.assert_allclose(store.features.astype(np.float32), expected, rtol=1e-2, atol=2e-3)
    assert (tmp_path / "feats" / "backbone" / "model.safetensors").is_file()
    blocks = list(store.iter_chunks(rows=2))
    assert [s for s, _ in blocks] == [0, 2, 4] and blocks[0][1].shape == (2, 64, 10)


def test_killed_extraction_resumes_without_redoing_or_losing_chunks(tmp_path):
    root = make_split(tmp_path / "data", n=10)
    clean = extract_features(
        root,
        "train",
        GridFeatureExtractor(Counting(), 4),
        tmp_path / "clean",
        chunk_size=3,
        batch_size=2,
        progress=False,
    )
    # Killed in the middle of chunk 2 (rows 6..8): chunks 0 and 1 are on disk, chunk 2 half-written.
    dying = Counting(fail_after=7)
    with pytest.raises(KeyboardInterrupt):
        extract_features(
            root,
            "train",
            GridFeatureExtractor(dying, 4),
            tmp_path / "feats",
            chunk_size=3,
            batch_size=2,
            progress=False,
        )
    assert json.loads((tmp_path / "feats" / "index.json").read_text())["chunks_done"] == [0, 1]
    with pytest.raises(XLXMERTError, match="incomplete"):
        FeatureStore.open(tmp_path / "feats")
    resumed = Counting()
    store = extract_features(
        root,
        "train",
        GridFeatureExtractor(resumed, 4),
        tmp_path / "feats",
        chunk_size=3,
        batch_size=2,
        progress=False,
    )
    assert resumed.seen == 4  # chunk 2 redone (3 images) + chunk 3 (1 image); chunks 0-1 skipped
    np.testing.assert_array_equal(np.asarray(store.features), np.asarray(clean.features))
    # A finished store is not touched again.
    again = Counting()
    extract_features(
        root,
        "train",
        GridFeatureExtractor(again, 4),
        tmp_path / "feats",
        chunk_size=3,
        batch_size=2,
        progress=False,
    )
    assert again.seen == 0


def test_memory_stays_bounded_on_a_store_several_chunks_large(tmp_path):
    # 48 images × 8×8 cells × 1024 dims fp16 = 6.3 MB on disk; a chunk is 8 images (1 MB). numpy
    # and PIL report their allocations to tracemalloc, so the peak shows whether the loop ever
    # holds the whole array (it must stay near one batch, far below the store).
    root = make_split(tmp_path / "data", n=48)
    extractor = GridFeatureExtractor(Counting(dim=1024), 8)
    tracemalloc.start()
    store = extract_features(
        root, "train", extractor, tmp_path / "feats", chunk_size=8, batch_size=4, progress=False
    )
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    total = store.features.size * 2
    assert store.index["num_chunks"] == 6
    assert peak < total / 4, (peak, total)


def test_mismatched_rerun_is_refused(tmp_path):
    root = make_split(tmp_path / "data", n=3)
    extract_features(root, "train", GridFeatureExtractor(Counting(), 4), tmp_path / "feats", progress=False)
    with pytest.raises(XLXMERTError, match="different extraction"):
        extract_features(
            root, "train", GridFeatureExtractor(Counting(), 2), tmp_path / "feats", progress=False
        )


def test_missing_images_one_line_error(tmp_path):
    root = make_split(tmp_path / "data", n=4)
    (root / "train" / "images" / "shapes_train_000002.png").unlink()
    with pytest.raises(XLXMERTError) as err:
        extract_features(
            root, "train", GridFeatureExtractor(Counting(), 4), tmp_path / "feats", progress=False
        )
    assert "1 of 4 images of split 'train' are missing" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(XLXMERTError, match="split folder not found"):
        extract_features(root, "val", GridFeatureExtractor(Counting(), 4), tmp_path / "feats", progress=False)


def test_corrupt_png_one_line_error(tmp_path):
    root = make_split(tmp_path / "data", n=4)
    (root / "train" / "images" / "shapes_train_000003.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(XLXMERTError) as err:
        extract_features(
            root,
            "train",
            GridFeatureExtractor(Counting(), 4),
            tmp_path / "feats",
            chunk_size=2,
            progress=False,
        )
    assert "shapes_train_000003.png" in str(err.value) and "\n" not in str(err.value)
    # The chunk before the corrupt file is kept.
    assert json.loads((tmp_path / "feats" / "index.json").read_text())["chunks_done"] == [0]


def test_feature_array_of_the_wrong_shape_one_line_error(tmp_path):
    root = make_split(tmp_path / "data", n=3)
    extract_features(root, "train", GridFeatureExtractor(Counting(), 4), tmp_path / "feats", progress=False)
    np.save(tmp_path / "feats" / "features.npy", np.zeros((3, 4, 4, 5), np.float16))
    with pytest.raises(XLXMERTError) as err:
        FeatureStore.open(tmp_path / "feats")
    assert (
        "(3, 4, 4, 5)" in str(err.value) and "(3, 4, 4, 6)" in str(err.value) and "\n" not in str(err.value)
    )
    with pytest.raises(XLXMERTError, match="not a feature store"):
        FeatureStore.open(tmp_path)


def test_coco_style_file_names_resolve_under_images(tmp_path):
    root = make_split(tmp_path / "data", n=2)
    scenes = root / "train" / "scenes_train.json"
    data = json.loads(scenes.read_text())
    for entry in data["images"]:
        entry["file_name"] = entry["file_name"].removeprefix("images/")  # COCO: bare names
    scenes.write_text(json.dumps(data))
    store = extract_features(
        root, "train", GridFeatureExtractor(Counting(), 4), tmp_path / "feats", progress=False
    )
    assert store.file_names == ["shapes_train_000000.png", "shapes_train_000001.png"]
