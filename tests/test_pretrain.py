"""Pretraining: learning on a tiny split, exact resume, every ablation switch, 2-process DDP, CLI."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import xlxmert.training.pretrain as pt
from xlxmert.cli import main as cli_main
from xlxmert.data.tokenizer import TextTokenizer
from xlxmert.models.families import load_transformer
from xlxmert.models.transformer import XLxmertConfig
from xlxmert.training.pretrain import PretrainConfig, pretrain
from xlxmert.utils.checkpoint import checkpoint_folders, read_checkpoint, save_checkpoint
from xlxmert.visual.vocabulary import VisualVocabulary

torch.set_num_threads(1)  # tiny models: threads only contend on a shared CPU

N, D = 4, 8
COLORS = ("red", "blue", "green", "yellow")
SHAPES = ("circle", "square")
PLACES = ("snow", "sand", "fog", "night")
NUM_IMAGES = 32


def _scene(i: int, rng: np.random.Generator):
    c, s, p = int(rng.integers(4)), int(rng.integers(2)), int(rng.integers(4))
    ids = np.full((N, N), 8 + p, dtype=np.uint16)  # background word = the place
    r0, c0 = rng.integers(0, N - 1, size=2)
    ids[r0 : r0 + 2, c0 : c0 + 2] = 2 * c + s  # a 2×2 object word = colour and shape
    return c, s, p, ids.reshape(-1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A hand-made split: captions, VQA files, visual ids, centroids, a feature store, a tokenizer."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    images, captions, questions, annotations, ids = [], [], [], [], []
    for i in range(NUM_IMAGES):
        c, s, p, grid = _scene(i, rng)
        image_id = 100 + i
        images.append({"id": image_id, "file_name": f"img_{i}.png", "width": 64, "height": 64})
        for k, text in enumerate(
            (f"a {COLORS[c]} {SHAPES[s]} in the {PLACES[p]}", f"one {SHAPES[s]} in the {PLACES[p]}")
        ):
            captions.append({"id": 10 * i + k, "image_id": image_id, "caption": text})
        questions.append(
            {"question_id": i, "image_id": image_id, "question": f"what color is the {SHAPES[s]}"}
        )
        annotations.append(
            {
                "question_id": i,
                "image_id": image_id,
                "multiple_choice_answer": COLORS[c],
                "answers": [{"answer": COLORS[c], "answer_id": j} for j in range(10)],
            }
        )
        ids.append(grid)
    split = root / "data" / "train"
    split.mkdir(parents=True)
    (split / "captions_train.json").write_text(json.dumps({"images": images, "annotations": captions}))
    (split / "questions_train.json").write_text(json.dumps({"questions": questions}))
    (split / "annotations_train.json").write_text(json.dumps({"annotations": annotations}))
    vocab = root / "vocab"
    (vocab / "ids").mkdir(parents=True)
    centroids = torch.randn(12, D, generator=torch.Generator().manual_seed(0))
    VisualVocabulary(centroids).save_pretrained(vocab)
    ids = np.stack(ids)
    np.save(vocab / "ids" / "train.npy", ids)
    (vocab / "ids" / "train.json").write_text(json.dumps([im["id"] for im in images]))
    # Exact features = centroid + noise, stored in the reversed row order to exercise the reordering.
    feats_dir = root / "feats"
    feats_dir.mkdir()
    exact = centroids[torch.from_numpy(ids.astype(np.int64))] + 0.1 * torch.randn(NUM_IMAGES, N * N, D)
    rev = list(range(NUM_IMAGES))[::-1]
    np.save(feats_dir / "features.npy", exact[rev].reshape(NUM_IMAGES, N, N, D).numpy().astype(np.float16))
    (feats_dir / "index.json").write_text(
        json.dumps(
            {
                "split": "train",
                "image_ids": [images[r]["id"] for r in rev],
                "file_names": [images[r]["file_name"] for r in rev],
                "grid_size": N,
                "dim": D,
                "num_chunks": 1,
                "chunks_done": [0],
            }
        )
    )
    tok = TextTokenizer.train(
        [c["caption"] for c in captions] + [q["question"] for q in questions], vocab_size=60
    )
    tok.save_pretrained(root / "tok")
    return {"root": root, "data": root / "data", "vocab": vocab, "feats": feats_dir, "tok": root / "tok"}


MODEL = XLxmertConfig.from_preset(
    "shapes-64",
    hidden_size=64,
    num_attention_heads=2,
    intermediate_size=128,
    l_layers=1,
    r_layers=1,
    x_layers=2,
    dropout=0.0,
)


def run(tiny, out, model=MODEL, features=False, init_from=None, **overrides):
    config = PretrainConfig.from_preset(
        "shapes-64",
        **{
            "steps": 6,
            "batch_size": 8,
            "lr": 2e-3,
            "checkpoint_every": 3,
            "eval_every": 100,
            "eval_samples": 32,
            **overrides,
        },
    )
    return pretrain(
        tiny["data"],
        tiny["vocab"],
        tiny["tok"],
        out,
        model,
        config,
        features_dir=tiny["feats"] if features else None,
        progress=False,
        init_from=init_from,
    )


def cli_args(tiny, out: Path, *extra: str, data: Path | None = None) -> list[str]:
    """``pretrain`` arguments for the tiny split (``data`` overrides its data root)."""
    paths = ["--data", str(data or tiny["data"]), "--vocab", str(tiny["vocab"])]
    return ["pretrain", *paths, "--tokenizer", str(tiny["tok"]), "--out", str(out), *extra]


def metrics(out: Path) -> list[tuple[int, str, str, float]]:
    with (out / "metrics.csv").open() as f:
        return [(int(r["step"]), r["split"], r["metric"], float(r["value"])) for r in csv.DictReader(f)]


@pytest.mark.slow
def test_tiny_run_learns_every_loss_and_beats_majority_cluster(tiny, tmp_path):
    # Captions only: at this size, questions as ITM texts (nearly indistinguishable when swapped)
    # delay the matching task past the test's budget; the QA loss is checked in the next test.
    out = tmp_path / "run"
    model = run(tiny, out, steps=450, batch_size=32, lr=3e-3, checkpoint_every=450, eval_every=450, qa=False)
    rows = metrics(out)
    for name in ("loss_ccc", "loss_mlm", "loss_itm"):
        values = [v for _, split, m, v in rows if split == "train" and m == name]
        assert len(values) == 150, name
        assert np.mean(values[-10:]) < 0.7 * np.mean(values[:10]), name
    val = {m: v for s, split, m, v in rows if split == "val" and s == 450}
    for ratio in (0.15, 0.5, 1.0):
        assert f"ccc_top5@{ratio}" in val
    assert val["ccc_top1@0.5"] > val["ccc_majority_top1@0.5"] + 0.1
    assert {"mlm_acc", "itm_acc"} <= set(val)
    # The run folder is a model folder that loads back.
    index = json.loads((out / "model_index.json").read_text())
    assert set(index["components"]) >= {"tokenizer", "vocabulary", "transformer"}
    assert val["itm_acc"] > 0.7 and val["mlm_acc"] > 0.5
    again = load_transformer(out)
    assert again.config == model.config
    assert len(checkpoint_folders(out / "checkpoints")) == 1


def test_resume_after_interruption_repeats_the_losses(tiny, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    run(tiny, straight, steps=7)
    interrupted = tmp_path / "interrupted"
    real = pt._write_model_folder

    def killed_after_checkpoint(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(pt, "_write_model_folder", killed_after_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run(tiny, interrupted, steps=7)
    monkeypatch.setattr(pt, "_write_model_folder", real)
    assert [p.name for p in checkpoint_folders(interrupted / "checkpoints")] == ["step_0000003"]
    run(tiny, interrupted, steps=7)

    def losses(out):
        return [(s, m, v) for s, split, m, v in metrics(out) if split == "train" and m.startswith("loss")]

    assert losses(interrupted) == losses(straight)
    assert {s for s, _, _ in losses(straight)} >= {4, 5, 6}


@pytest.mark.parametrize(
    "model_overrides, overrides, features",
    [
        ({"variant": "lxmert-grid", "visual_target": "regression"}, {"visual_masking": "bernoulli"}, True),
        (
            {"variant": "lxmert-grid", "visual_target": "clusters"},
            {"ccc_data": "all", "task_choice": "random"},
            True,
        ),
        (
            {"visual_target": "regression"},
            {"visual_masking": "bernoulli", "mask_prob": 0.3, "qa": False},
            False,
        ),
    ],
)
def test_every_switch_trains(tiny, tmp_path, model_overrides, overrides, features):
    model_cfg = XLxmertConfig(**{**MODEL.__dict__, **model_overrides})
    model = run(tiny, tmp_path / "run", model=model_cfg, features=features, eval_every=6, **overrides)
    rows = metrics(tmp_path / "run")
    losses = [v for _, split, m, v in rows if split == "train" and m.startswith("loss")]
    assert len(losses) >= 6 and all(np.isfinite(losses))
    val = {m for _, split, m, _ in rows if split == "val"}
    assert ("mvfr@0.5" in val) == (model_overrides.get("visual_target") == "regression")
    assert model.config.variant == model_cfg.variant


def test_qa_loss_falls_in_bf16(tiny, tmp_path):
    out = tmp_path / "run"
    model = run(tiny, out, steps=90, batch_size=32, lr=3e-3, mixed_precision="bf16", checkpoint_every=90)
    values = [v for _, split, m, v in metrics(out) if split == "train" and m == "loss_qa"]
    assert len(values) == 30 and all(np.isfinite(values))
    assert np.mean(values[-5:]) < 0.8 * np.mean(values[:5])
    again = load_transformer(out)
    assert again.answers == model.answers and set(again.answers) == set(COLORS)


def test_two_process_data_parallel_run_writes_one_checkpoint(tiny, tmp_path):
    # torchrun + gloo: this Accelerate's `launch --cpu --num_processes 2` starts a single process.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(port),
        "-m",
        "xlxmert",
        *cli_args(tiny, out, "--steps", "2", "--batch-size", "4", "--checkpoint-every", "2"),
        *("--eval-every", "2", "--quiet"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XLXMERT_DEBUG": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in checkpoint_folders(out / "checkpoints")] == ["step_0000002"]
    assert (out / "transformer" / "model.safetensors").is_file()
    # Two processes × batch 4: each step consumed 8 examples of its pool (one process would take 4).
    state = read_checkpoint(out / "checkpoints" / "step_0000002").state
    assert state["cursors"] == {"visual": 8, "all": 8}


def test_cli_errors_are_one_line(tiny, tmp_path, capsys):
    code = cli_main(cli_args(tiny, tmp_path / "x", "--variant", "grid", "--steps", "1"))
    err = capsys.readouterr().err
    assert code == 1 and "--features" in err and len(err.strip().splitlines()) == 1
    code = cli_main(cli_args(tiny, tmp_path / "y", "--steps", "1", data=tmp_path))
    err = capsys.readouterr().err
    assert code == 1 and "captions_train.json" in err and len(err.strip().splitlines()) == 1


def test_resume_with_other_settings_is_refused(tiny, tmp_path):
    out = tmp_path / "run"
    run(tiny, out, steps=3)
    with pytest.raises(pt.XLXMERTError, match="other settings"):
        run(tiny, out, steps=3, lr=1e-3)


def test_caption_dropout_empties_only_visual_masking_texts(tiny):
    data = pt.load_pretrain_data(tiny["data"], tiny["vocab"], "train", None)
    tok = TextTokenizer.from_pretrained(tiny["tok"])
    config = PretrainConfig.from_preset("shapes-64", steps=1, batch_size=8, lr=1e-3, caption_dropout=0.5)
    examples = np.arange(64)

    def lengths(task, seed=0, cfg=config):
        batch = pt.make_batch(task, examples, data, tok, cfg, N * N, 4, torch.Generator().manual_seed(seed))
        return batch.attention_mask.sum(1)

    visual = lengths("visual")
    assert 10 < int((visual == 2).sum()) < 54  # [CLS] [SEP] only: about half of 64
    assert torch.equal(visual, lengths("visual"))  # drawn from the step's generator
    assert bool((lengths("text") > 2).all()) and bool((lengths("match") > 2).all())
    assert bool(
        (
            lengths("visual", cfg=PretrainConfig.from_preset("shapes-64", steps=1, batch_size=8, lr=1e-3)) > 2
        ).all()
    )
    with pytest.raises(pt.XLXMERTError, match="caption_dropout"):
        PretrainConfig.from_preset("shapes-64", steps=1, batch_size=8, lr=1e-3, caption_dropout=1.0)


def test_full_mask_prob_masks_every_cell_of_some_visual_examples(tiny):
    data = pt.load_pretrain_data(tiny["data"], tiny["vocab"], "train", None)
    tok = TextTokenizer.from_pretrained(tiny["tok"])
    examples = np.arange(64)

    def masks(prob):
        cfg = PretrainConfig.from_preset("shapes-64", steps=1, batch_size=8, lr=1e-3, full_mask_prob=prob)
        return pt.make_batch("visual", examples, data, tok, cfg, N * N, 4, torch.Generator().manual_seed(0))

    plain, half, every = masks(0.0).visual_mask, masks(0.5).visual_mask, masks(1.0).visual_mask
    assert bool(every.all())
    full = half.all(dim=1)
    assert 10 < int(full.sum()) < 54  # about half of 64 rows
    # The other rows keep the uniform masks the same generator draws without the option.
    assert torch.equal(half[~full], plain[~full])
    assert torch.equal(half, masks(0.5).visual_mask)  # drawn from the step's generator
    with pytest.raises(pt.XLXMERTError, match="full_mask_prob"):
        PretrainConfig.from_preset("shapes-64", steps=1, batch_size=8, lr=1e-3, full_mask_prob=1.5)


def test_ccc_class_balance_weights_rare_words_up(tiny, tmp_path):
    ids = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 2, 2]])
    assert pt.ccc_class_weights(ids, 4, 0.0) is None  # the paper's plain loss
    counts = torch.tensor([14.0, 2.0, 3.0, 1.0])  # +1 each; word 3 never occurs
    full = pt.ccc_class_weights(ids, 4, 1.0)
    assert torch.allclose(full, counts.mean() / counts)
    half = pt.ccc_class_weights(ids, 4, 0.5)
    assert torch.allclose(half, full.sqrt())
    assert half[1] > half[2] > half[0]

    # The weighted CCC loss is the weighted mean over the masked cells.
    data = pt.load_pretrain_data(tiny["data"], tiny["vocab"], "train", None)
    tok = TextTokenizer.from_pretrained(tiny["tok"])
    config = PretrainConfig.from_preset("shapes-64", steps=1, batch_size=8, lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    batch = pt.make_batch("visual", np.arange(8), data, tok, config, N * N, 4, gen)
    model = run(tiny, tmp_path / "model", steps=1).eval()
    cfg = model.config
    weights = pt.ccc_class_weights(data.visual_ids, cfg.num_clusters, 1.0)
    plain = pt.batch_losses(model, batch, cfg)["ccc"]
    weighted = pt.batch_losses(model, batch, cfg, weights)["ccc"]
    with torch.no_grad():
        logits = model(
            batch.input_ids, batch.attention_mask, visual_ids=batch.visual_ids, visual_mask=batch.visual_mask
        ).visual_logits.float()
    target = batch.visual_ids[batch.visual_mask]
    nll = -logits[batch.visual_mask].log_softmax(-1).gather(1, target[:, None])[:, 0]
    assert torch.allclose(plain, nll.mean(), atol=1e-5)
    assert torch.allclose(weighted, (weights[target] * nll).sum() / weights[target].sum(), atol=1e-5)
    assert not torch.allclose(plain, weighted)
    with pytest.raises(pt.XLXMERTError, match="ccc_class_balance"):
        PretrainConfig.from_preset("shapes-64", steps=1, batch_size=8, lr=1e-3, ccc_class_balance=2.0)


def test_object_cells_come_from_the_scenes_and_score_ccc_on_objects_alone(tiny, tmp_path):
    split = tmp_path / "val"
    split.mkdir()
    assert pt.object_cells_of(split, {7: 0}, N) is None  # no ShapeScenes ground truth (COCO)
    circle = {
        "shape": "circle",
        "color": "red",
        "size": "large",
        "cx": 0.375,
        "cy": 0.375,
        "bbox": [0, 0, 1, 1],
    }
    scenes = [
        {"id": 7, "file_name": "a.png", "place": "fog", "objects": [circle]},
        {"id": 99, "file_name": "b.png", "place": "fog", "objects": [circle]},  # no visual ids: skipped
    ]
    (split / "scenes_val.json").write_text(json.dumps({"images": scenes}))
    cells = pt.object_cells_of(split, {7: 1, 8: 0}, N)
    # A large circle (d = 0.34) centred in cell (1, 1) of a 4×4 grid covers that cell and less
    # than half of each neighbour; row 0 (image 8) has no scene.
    assert cells.shape == (2, N * N) and cells[1].nonzero().flatten().tolist() == [N + 1]
    assert not bool(cells[0].any())

    data = pt.load_pretrain_data(tiny["data"], tiny["vocab"], "train", None)
    assert data.object_cells is None  # only asked for by validation
    tok = TextTokenizer.from_pretrained(tiny["tok"])
    model = run(tiny, tmp_path / "model", steps=1)
    examples = np.arange(16)
    plain = pt.evaluate(model, data, tok, examples, 8, seed=0)
    assert not any("objects" in k for k in plain)
    data.object_cells = torch.ones_like(data.visual_ids, dtype=torch.bool)
    every = pt.evaluate(model, data, tok, examples, 8, seed=0)
    for ratio in (0.15, 0.5, 1.0):  # every cell an object cell: the plain scores exactly
        assert every[f"ccc_top1_objects@{ratio}"] == every[f"ccc_top1@{ratio}"]
        assert every[f"ccc_top5_objects@{ratio}"] == every[f"ccc_top5@{ratio}"]
    data.object_cells = data.visual_ids < 8  # the tiny world's 2×2 object words
    objects = pt.evaluate(model, data, tok, examples, 8, seed=0)
    data.object_cells = ~data.object_cells
    background = pt.evaluate(model, data, tok, examples, 8, seed=0)
    # With every cell masked, objects and background split the plain score by their cell counts.
    n_obj = int((data.visual_ids[torch.from_numpy(data.rows[examples])] < 8).sum())
    n_all = len(examples) * N * N
    for k in ("top1", "top5"):
        mixed = n_obj * objects[f"ccc_{k}_objects@1.0"] + (n_all - n_obj) * background[f"ccc_{k}_objects@1.0"]
        assert mixed / n_all == pytest.approx(every[f"ccc_{k}@1.0"], abs=1e-9)
    assert 0.0 <= objects["ccc_top1_objects@1.0"] <= objects["ccc_top5_objects@1.0"] <= 1.0


def test_batch_to_moves_every_tensor(tiny):
    data = pt.load_pretrain_data(tiny["data"], tiny["vocab"], "train", None)
    tok = TextTokenizer.from_pretrained(tiny["tok"])
    config = PretrainConfig.from_preset("shapes-64", steps=1, batch_size=8, lr=1e-3)
    batch = pt.make_batch("visual", np.arange(8), data, tok, config, N * N, 4, torch.Generator())
    moved = batch.to("meta")
    tensors = [v for v in vars(moved).values() if isinstance(v, torch.Tensor)]
    assert len(tensors) >= 4 and all(t.device.type == "meta" for t in tensors)
    assert moved.task == "visual" and batch.input_ids.device.type == "cpu"


def test_init_from_starts_at_the_given_weights(tiny, tmp_path):
    first = run(tiny, tmp_path / "first", steps=6)
    # A near-zero learning rate: the continued run must still hold the first run's weights.
    again = run(tiny, tmp_path / "again", steps=1, lr=1e-12, warmup_ratio=0.0, init_from=tmp_path / "first")
    for (name, a), b in zip(first.state_dict().items(), again.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    fresh = run(tiny, tmp_path / "fresh", steps=1, lr=1e-12)
    assert not torch.allclose(
        fresh.bert.embeddings.word_embeddings.weight, first.bert.embeddings.word_embeddings.weight
    )
    wider = XLxmertConfig(**{**MODEL.__dict__, "hidden_size": 32})
    with pytest.raises(pt.XLXMERTError, match="another transformer config"):
        run(tiny, tmp_path / "wider", model=wider, steps=1, init_from=tmp_path / "first")


def test_cli_continues_a_run_with_caption_dropout_and_plain_features(tiny, tmp_path, capsys):
    small = ["--batch-size", "4", "--eval-samples", "8", "--quiet", "--steps", "2"]
    assert cli_main(cli_args(tiny, tmp_path / "a", *small, "--no-standardize-features")) == 0
    init = ["--init", str(tmp_path / "a")]
    args = [*small, *init, "--caption-dropout", "0.3", "--full-mask-prob", "0.2", "--no-standardize-features"]
    assert cli_main(cli_args(tiny, tmp_path / "b", *args, "--ccc-class-balance", "0.5")) == 0
    saved = json.loads((tmp_path / "b" / "pretrain_config.json").read_text())
    assert saved["caption_dropout"] == 0.3 and saved["full_mask_prob"] == 0.2
    assert saved["ccc_class_balance"] == 0.5
    assert (
        json.loads((tmp_path / "b" / "transformer" / "config.json").read_text())["standardize_features"]
        is False
    )
    capsys.readouterr()
    # Standardized features: a different config from the run it would continue.
    assert cli_main(cli_args(tiny, tmp_path / "c", *small, *init, "--standardize-features")) == 1
    err = capsys.readouterr().err
    assert "another transformer config" in err and len(err.strip().splitlines()) == 1
    # The CCC output may switch to the standardized centroids on the way.
    args = [*small, *init, "--no-standardize-features", "--standardize-ccc-output"]
    assert cli_main(cli_args(tiny, tmp_path / "d", *args)) == 0
    saved = json.loads((tmp_path / "d" / "transformer" / "config.json").read_text())
    assert saved["standardize_ccc_output"] is True


def test_task_ratio_sets_the_share_of_each_task():
    config = PretrainConfig.from_preset("shapes-64", steps=12, batch_size=4, lr=1e-3, task_ratio=(2, 1, 0))
    assert [pt._task_of(s, config) for s in range(6)] == ["visual", "visual", "text"] * 2
    drawn = PretrainConfig.from_preset("shapes-64", steps=1, batch_size=4, lr=1e-3, task_ratio=[4, 1, 1])
    assert drawn.task_ratio == (4, 1, 1)
    drawn = dataclasses.replace(drawn, task_choice="random")
    tasks = [pt._task_of(s, drawn) for s in range(3000)]
    assert 0.62 < tasks.count("visual") / len(tasks) < 0.72 and tasks.count("match") > 300
    assert tasks == [pt._task_of(s, drawn) for s in range(3000)]  # a function of the step
    for bad in ((0, 0, 0), (1, -1, 1), (1, 1), (1.5, 1, 1)):
        with pytest.raises(pt.XLXMERTError, match="task_ratio"):
            PretrainConfig.from_preset("shapes-64", steps=1, batch_size=4, lr=1e-3, task_ratio=bad)


def test_cli_task_ratio_is_saved_and_bad_values_are_one_line(tiny, tmp_path, capsys):
    small = ["--batch-size", "4", "--eval-samples", "8", "--quiet", "--steps", "3"]
    assert cli_main(cli_args(tiny, tmp_path / "a", *small, "--task-ratio", "1,0,2")) == 0
    saved = json.loads((tmp_path / "a" / "pretrain_config.json").read_text())
    assert saved["task_ratio"] == [1, 0, 2]
    trained = {m for _, split, m, _ in metrics(tmp_path / "a") if split == "train"}
    assert "loss_ccc" in trained and "loss_itm" in trained and "loss_mlm" not in trained
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli_main(cli_args(tiny, tmp_path / "b", *small, "--task-ratio", "0,0,0"))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--task-ratio: must be three whole numbers" in err


def test_a_checkpoint_from_before_a_new_setting_resumes_only_at_its_default(tiny, tmp_path):
    out = tmp_path / "run"
    run(tiny, out, steps=3)
    state = read_checkpoint(out / "checkpoints" / "step_0000003").state
    del state["pretrain_config"]["task_ratio"]  # as written by a version without the fields
    del state["transformer_config"]["standardize_ccc_output"]
    save_checkpoint(out / "checkpoints", 3, state)
    with pytest.raises(pt.XLXMERTError, match="other settings"):
        run(tiny, out, steps=5, task_ratio=(2, 1, 1))
    run(tiny, out, steps=5)  # the fields' defaults: it resumes
    assert json.loads((out / "pretrain_config.json").read_text())["steps"] == 5
    assert max(s for s, *_ in metrics(out)) == 5


GPU_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pretrain_gpu.sh"


def run_gpu_script(tiny, tmp_path, **env):
    """scripts/pretrain_gpu.sh on the tiny split (on the CPU here), WORK laid out as train-all's."""
    work = tmp_path / "work"
    work.mkdir()
    for name, target in (("data", tiny["data"]), ("vocab", tiny["vocab"]), ("tokenizer", tiny["tok"])):
        (work / name).symlink_to(target)
    results = tmp_path / "results"
    small = "--batch-size 4 --lr 1e-3 --eval-samples 8"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "THREADS": "1",
        "CAL_S": "2",
        "PRESET": "shapes-64",
        "ARGS_A": small,
        "ARGS_B": f"{small} --task-ratio 4,1,1",
        "ARGS_C": f"{small} --full-mask-prob 0.5",
        **env,
    }
    result = subprocess.run(
        ["bash", str(GPU_SCRIPT), str(work), str(results), "600"],
        capture_output=True,
        text=True,
        env=env,
        cwd=GPU_SCRIPT.parents[1],
        timeout=300,
    )
    return result, results


@pytest.mark.slow
def test_gpu_script_trains_three_variants_and_packs_each(tiny, tmp_path):
    small = "--batch-size 4 --lr 1e-3 --eval-samples 8"
    result, results = run_gpu_script(tiny, tmp_path, STEPS="6")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = (results / "summary.txt").read_text()
    for v, extra in (("A", ""), ("B", "--task-ratio 4,1,1"), ("C", "--full-mask-prob 0.5")):
        assert f"calibration {v}: " in summary
        command = "  xlxmert pretrain --preset shapes-64 --steps 6 --eval-every 1 --checkpoint-every 1 "
        command += f" {small} {extra}"
        assert command.rstrip() in summary.splitlines()
        assert f"variant {v}: 6 of 6 steps; last val:" in summary
        (results / v).mkdir()
        subprocess.run(["tar", "-xzf", str(results / f"{v}.tar.gz"), "-C", str(results / v)], check=True)
        assert (results / v / "transformer" / "model.safetensors").is_file()
        config = json.loads((results / v / "pretrain_config.json").read_text())
        assert config["steps"] == 6 and config["batch_size"] == 4
        assert config["task_ratio"] == ([4, 1, 1] if v == "B" else [1, 1, 1])
        assert config["full_mask_prob"] == (0.5 if v == "C" else 0.0)
        assert max(step for step, *_ in metrics(results / v)) == 6
    assert "ccc_top5@1.0" in summary
    assert (results / "logs.tar.gz").is_file()


def test_gpu_script_stops_early_with_the_failing_variants_error(tiny, tmp_path):
    result, results = run_gpu_script(tiny, tmp_path, ARGS_B="--task-ratio 0,0,0")
    assert result.returncode == 1
    summary = (results / "summary.txt").read_text()
    assert "variant B stopped in calibration; its log ends:" in summary
    assert "--task-ratio" in summary  # the log's tail: the argument error
    assert not list(results.glob("*.tar.gz"))
