"""Generator training: losses, a tiny run whose reconstruction loss falls, exact resume, CLI, quality."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import ResNetConfig

from xlxmert.cli import main
from xlxmert.errors import XLXMERTError
from xlxmert.models.generator import SpadeGenerator
from xlxmert.training.generator import (
    GeneratorTrainConfig,
    PerceptualLoss,
    batch_indices,
    cluster_loss,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    reconstruction_quality,
    shapes_cell_agreement,
    train_generator,
)
from xlxmert.utils.model_folder import read_model_index
from xlxmert.visual.backbones import ResNetBackbone
from xlxmert.visual.vocabulary import VisualVocabulary

GRID, SIZE, K, D = 4, 32, 6, 16
PALETTE = np.array(
    [[215, 40, 40], [240, 220, 40], [40, 160, 60], [40, 90, 220], [236, 236, 236], [28, 30, 48]]
)


def _write_split(root, vocab, split, n, rng):
    """Images whose N×N cells are flat colours given by their ids (so ids determine the image)."""
    (root / split / "images").mkdir(parents=True)
    ids = rng.integers(0, K, size=(n, GRID * GRID)).astype(np.uint16)
    images, image_ids = [], []
    cell = SIZE // GRID
    for row, cells in enumerate(ids):
        pixels = PALETTE[cells].reshape(GRID, GRID, 3).repeat(cell, 0).repeat(cell, 1)
        pixels = np.clip(pixels + rng.integers(-6, 7, size=pixels.shape), 0, 255).astype(np.uint8)
        image_id = 100 + row
        name = f"shapes_{split}_{image_id:06d}.png"
        Image.fromarray(pixels).save(root / split / "images" / name)
        # COCO lists bare file names; ShapeScenes lists them relative to the split (images/...): both work.
        file_name = f"images/{name}" if split == "val" else name
        images.append({"id": image_id, "file_name": file_name, "width": SIZE, "height": SIZE})
        image_ids.append(image_id)
    (root / split / f"captions_{split}.json").write_text(json.dumps({"images": images, "annotations": []}))
    (vocab / "ids").mkdir(exist_ok=True)
    np.save(vocab / "ids" / f"{split}.npy", ids)
    (vocab / "ids" / f"{split}.json").write_text(json.dumps(image_ids))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("gen_world")
    root, vocab = base / "data", base / "vocab"
    vocab.mkdir(parents=True)
    rng = np.random.default_rng(0)
    _write_split(root, vocab, "train", 16, rng)
    _write_split(root, vocab, "val", 4, rng)
    VisualVocabulary(torch.from_numpy(rng.normal(size=(K, D)).astype(np.float32))).save_pretrained(vocab)
    torch.manual_seed(0)
    tiny_resnet = ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1], layer_type="basic"
    )
    ResNetBackbone.from_config(tiny_resnet, image_size=SIZE).save_pretrained(vocab / "backbone")
    return root, vocab


def _config(**kw):
    base = dict(
        output_size=SIZE,
        channels=8,
        spade_hidden=16,
        discriminator_channels=8,
        steps=4,
        batch_size=4,
        sample_every=2,
        checkpoint_every=2,
        num_samples=4,
    )
    return GeneratorTrainConfig(**{**base, **kw})


def test_hinge_losses_and_cluster_loss():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(0.25 + 0.5)
    assert hinge_generator_loss(fake).item() == pytest.approx(1.0)
    logits = torch.zeros(2, 4, 5)
    assert cluster_loss(logits, torch.zeros(2, 4, dtype=torch.long)).item() == pytest.approx(np.log(5))
    a = [torch.zeros(2, 3, 4, 4, requires_grad=True), torch.zeros(2, 3, 2, 2, requires_grad=True)]
    b = [torch.full((2, 3, 4, 4), 3.0, requires_grad=True), torch.full((2, 3, 2, 2), 0.5, requires_grad=True)]
    fm = feature_matching_loss(a, b)
    assert fm.item() == pytest.approx(2.5 + 0.125)  # Huber: |x| − 0.5 beyond 1, 0.5·x² within
    fm.backward()
    assert b[0].grad is None  # real features are targets


def test_perceptual_loss_is_frozen_and_zero_on_identical_images():
    torch.manual_seed(0)
    net = ResNetBackbone.from_config(
        ResNetConfig(embedding_size=8, hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1], layer_type="basic"),
        image_size=32,
    )
    loss = PerceptualLoss(net).train()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert loss(x, x).item() == 0
    fake = x.flip(-1).requires_grad_(True)
    value = loss(fake, x)
    value.backward()
    assert value.item() > 0 and fake.grad is not None
    assert all(p.grad is None for p in net.parameters())
    assert not net.training
    with pytest.raises(XLXMERTError, match="feature_stages"):
        PerceptualLoss(torch.nn.Conv2d(3, 3, 1))


def test_batch_indices_cover_each_epoch_once():
    seen = torch.cat([batch_indices(s, 4, 10, seed=3) for s in range(5)])  # 20 positions = 2 epochs
    assert sorted(seen[:10].tolist()) == list(range(10))
    assert sorted(seen[10:].tolist()) == list(range(10))
    assert torch.equal(batch_indices(3, 4, 10, 3), batch_indices(3, 4, 10, 3))


def test_tiny_training_run_reconstruction_loss_falls(world, tmp_path):
    root, vocab = world
    result = train_generator(
        root, vocab, tmp_path / "run", _config(steps=30, sample_every=30, checkpoint_every=30), progress=False
    )
    assert result.step == 30 and len(result.history) == 30
    first = np.mean([h["perceptual"] for h in result.history[:5]])
    last = np.mean([h["perceptual"] for h in result.history[-5:]])
    assert last < 0.8 * first
    first_l1 = np.mean([h["l1"] for h in result.history[:5]])
    last_l1 = np.mean([h["l1"] for h in result.history[-5:]])
    assert last_l1 < first_l1
    assert all(np.isfinite(h["loss_d"]) for h in result.history)
    # The component, the model index, the sample grid and the held-out report
    gen = SpadeGenerator.from_pretrained(tmp_path / "run" / "generator")
    assert gen.config.input_dim == D and gen.config.grid_size == GRID and gen.config.output_size == SIZE
    assert read_model_index(tmp_path / "run")["components"] == {"generator": ["xlxmert", "SpadeGenerator"]}
    grid = Image.open(tmp_path / "run" / "samples" / "step_000030.png")
    assert grid.size == (8 * SIZE + 9 * 2, SIZE + 2 * 2)  # 4 (original | reconstruction) pairs in a row
    report = json.loads((tmp_path / "run" / "generator" / "report.json").read_text())
    assert report["split"] == "val" and report["num_images"] == 4
    assert result.quality["l1"] == pytest.approx(report["l1"])
    assert result.images_per_second > 0


def test_exact_resume(world, tmp_path):
    root, vocab = world
    straight = train_generator(root, vocab, tmp_path / "a", _config(steps=4), progress=False)
    train_generator(root, vocab, tmp_path / "b", _config(steps=2), progress=False)  # "killed" after step 2
    resumed = train_generator(root, vocab, tmp_path / "b", _config(steps=4), progress=False)
    assert [h["step"] for h in resumed.history] == [3, 4]
    assert resumed.history == straight.history[2:]
    a = (tmp_path / "a" / "generator" / "model.safetensors").read_bytes()
    b = (tmp_path / "b" / "generator" / "model.safetensors").read_bytes()
    assert a == b
    with pytest.raises(XLXMERTError, match="different settings"):
        train_generator(root, vocab, tmp_path / "b", _config(steps=6, batch_size=2), progress=False)


def test_bf16_step_runs_and_stays_finite(world, tmp_path):
    root, vocab = world
    result = train_generator(root, vocab, tmp_path / "bf16", _config(steps=2, bf16=True), progress=False)
    assert all(np.isfinite(v) for h in result.history for v in h.values())


def test_reconstruction_quality_with_agreement_hook(world):
    root, vocab = world
    torch.manual_seed(0)
    centroids = VisualVocabulary.from_pretrained(vocab).centroids
    gen = SpadeGenerator(_config().generator_config(D, GRID))
    ids = torch.randint(0, K, (3, GRID * GRID))
    images = torch.rand(3, 3, SIZE, SIZE) * 2 - 1
    calls = []

    def hook(rec, orig):
        calls.append((rec.shape, orig.shape))
        return {"agreement": 0.5}

    q = reconstruction_quality(gen, centroids, images, ids, cell_agreement=hook)
    assert calls == [((3, 3, SIZE, SIZE), (3, 3, SIZE, SIZE))]
    assert q["agreement"] == 0.5 and q["l1"] > 0 and q["psnr"] == pytest.approx(10 * np.log10(4 / q["mse"]))


def test_cli_train_and_convert(world, tmp_path, capsys):
    root, vocab = world
    code = main(
        [
            "generator",
            "train",
            "--data",
            str(root),
            "--vocab",
            str(vocab),
            "--size",
            "64",
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "1",
            "--batch-size",
            "2",
            "--quiet",
        ]
    )
    # The CLI's --size is 64/128/256; this world's 4×4 grid at 64 px is 4 blocks.
    assert code == 0, capsys.readouterr().err
    assert "generator written to" in capsys.readouterr().out
    assert SpadeGenerator.from_pretrained(tmp_path / "run" / "generator").config.output_size == 64

    code = main(
        [
            "generator",
            "train",
            "--data",
            str(tmp_path / "nowhere"),
            "--vocab",
            str(vocab),
            "--out",
            str(tmp_path / "x"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "xlxmert: error:" in err

    code = main(["generator", "convert", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "g")])
    err = capsys.readouterr().err
    assert code == 1 and "checkpoint not found" in err and err.count("\n") == 1


class _ColourCells(torch.nn.Module):
    """A stand-in ShapeScenes backbone: a cell 'holds' colour channel c when its mean is > 0."""

    image_size = SIZE

    def feature_map(self, images):
        return images

    def predict_cells(self, cells):
        return {"place": cells, "objects": cells, "coverage": cells}


def test_shapes_cell_agreement_compares_per_cell_predictions():
    agreement = shapes_cell_agreement(_ColourCells(), GRID)
    x = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    assert agreement(x, x) == {
        "place_agreement": 1.0,
        "object_f1": pytest.approx(1.0),
        "object_agreement": 1.0,
    }
    flipped = agreement(-x, x)  # every predicted colour set inverted
    assert flipped["object_f1"] == 0 and flipped["object_agreement"] == 0
    assert flipped["place_agreement"] < 0.5
