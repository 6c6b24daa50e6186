"""The single-stream family (X-UNITER, UNITER+Grid): sizes, heads, objectives, folders, painting."""

import json

import numpy as np
import pytest
import torch

from conftest import ANSWERS, GRID, D, K, build_tiny_model
from test_finetune import data, model_dir  # noqa: F401 - fixtures
from test_pretrain import cli_args, metrics, tiny  # noqa: F401 - tiny: a fixture
from xlxmert.errors import XLXMERTError
from xlxmert.models.families import (
    architecture_of,
    build_transformer,
    load_transformer,
    transformer_config,
)
from xlxmert.models.transformer import XLxmertForPreTraining
from xlxmert.models.uniter import XUniterConfig, XUniterForPreTraining
from xlxmert.training.pretrain import Batch, batch_losses
from xlxmert.utils.model_folder import component_class, update_model_index


def tiny_config(variant: str = "x", **overrides) -> XUniterConfig:
    sizes = dict(vocab_size=80, hidden_size=32, num_attention_heads=2, intermediate_size=64, num_layers=2)
    sizes.update(grid_size=GRID, num_clusters=K, feature_dim=D, num_answers=len(ANSWERS))
    return transformer_config("uniter", "shapes-64", variant, **{**sizes, **overrides})


def test_the_paper_preset_is_bert_base():
    config = transformer_config("uniter", "paper")
    assert (config.num_layers, config.hidden_size, config.num_attention_heads) == (12, 768, 12)
    assert (config.grid_size, config.num_clusters, config.feature_dim) == (8, 10000, 2048)
    bert = build_transformer(config).bert
    # BERT-base uncased: 109,482,240 weights (embeddings, 12 layers, pooler).
    assert sum(p.numel() for p in bert.parameters()) == 109_482_240
    assert (
        architecture_of(config) == "uniter"
        and architecture_of(transformer_config("lxmert", "paper")) == "lxmert"
    )


def test_variants_and_their_errors():
    assert tiny_config("x").variant == "x-uniter" and not tiny_config("x").exact_features
    grid = tiny_config("grid")
    assert (grid.variant, grid.visual_target, grid.exact_features) == ("uniter-grid", "regression", True)
    with pytest.raises(Exception, match="unknown variant"):
        transformer_config("uniter", "shapes-64", "both")
    with pytest.raises(Exception, match="unknown architecture"):
        transformer_config("vilbert", "shapes-64")


def inputs(batch=3, length=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 80, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, -2:] = 0
    visual_ids = torch.randint(0, K, (batch, GRID * GRID), generator=gen)
    visual_mask = torch.rand(batch, GRID * GRID, generator=gen) < 0.5
    return ids, mask, visual_ids, visual_mask


def test_heads_shapes_and_the_cached_text_give_the_same_predictions():
    torch.manual_seed(0)
    model = XUniterForPreTraining(tiny_config(), torch.randn(K, D)).eval()
    ids, mask, visual_ids, visual_mask = inputs()
    out = model(ids, mask, visual_ids=visual_ids, visual_mask=visual_mask)
    assert out.mlm_logits.shape == (3, 7, 80) and out.visual_logits.shape == (3, GRID * GRID, K)
    assert out.itm_logits.shape == (3, 2) and out.qa_logits.shape == (3, len(ANSWERS))
    assert out.vision_hidden.shape == (3, GRID * GRID, 32) and out.pooled.shape == (3, 32)
    cached = model.predict_visual(model.encode_text(ids, mask), visual_ids, visual_mask)
    assert torch.allclose(cached, out.visual_logits, atol=1e-5)
    # One stream: the words see the image (unlike LXMERT's language layers), so the MLM logits
    # change with the cells.
    other = model(ids, mask, visual_ids=(visual_ids + 1) % K, visual_mask=visual_mask)
    assert not torch.allclose(other.mlm_logits, out.mlm_logits)
    # A padded word changes nothing.
    padded = ids.clone()
    padded[0, -2:] = 7
    assert torch.allclose(
        model(padded, mask, visual_ids=visual_ids).pooled[0],
        model(ids, mask, visual_ids=visual_ids).pooled[0],
        atol=1e-5,
    )


@pytest.mark.parametrize("variant", ["x", "grid"])
def test_every_objective_trains(variant):
    """On one fixed batch per task, each loss falls: CCC (MVFR for +Grid), MLM, ITM and QA. (MVFR
    regresses random features of masked cells, learnt only by memorising them: it falls least.)"""
    torch.manual_seed(0)
    config = tiny_config(variant, dropout=0.0)
    model = build_transformer(config, torch.randn(K, D)).train()
    ids, mask, visual_ids, visual_mask = inputs(batch=4)
    feats = torch.randn(4, GRID * GRID, D) if config.exact_features else None
    mlm_labels = torch.full_like(ids, -100)
    mlm_labels[:, 2] = ids[:, 2]
    masked_ids = ids.clone()
    masked_ids[:, 2] = 3
    qa = torch.zeros(2, len(ANSWERS))
    qa[0, 1], qa[1, 3] = 1.0, 1.0
    batches = [
        Batch("visual", ids, mask, visual_ids, feats, visual_mask=visual_mask),
        Batch("text", masked_ids, mask, visual_ids, feats, mlm_labels=mlm_labels),
        Batch(
            "match", ids, mask, visual_ids, feats, itm_labels=torch.tensor([1, 0, 1, 0]),
            qa_rows=torch.tensor([0, 2]), qa_targets=qa,
        ),
    ]  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for _ in range(40):
        for batch in batches:
            losses = batch_losses(model, batch, config)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            for name, value in losses.items():
                first.setdefault(name, float(value.detach()))
                last[name] = float(value.detach())
    expected = {"mvfr" if config.exact_features else "ccc", "mlm", "itm", "qa"}
    assert set(first) == expected
    for name in expected:
        assert last[name] < (0.9 if name == "mvfr" else 0.6) * first[name], (name, first[name], last[name])


def test_a_folder_round_trips_and_records_its_family(tmp_path):
    torch.manual_seed(0)
    folder = build_tiny_model(tmp_path / "m")
    assert component_class(folder, "transformer") is XLxmertForPreTraining
    model = XUniterForPreTraining(
        tiny_config(vocab_size=load_transformer(folder).config.vocab_size), torch.zeros(K, D)
    )
    model.set_centroids(load_transformer(folder).centroids)
    model.answers = list(ANSWERS)
    model.save_pretrained(folder / "transformer")
    update_model_index(folder, {"transformer": model})
    index = json.loads((folder / "model_index.json").read_text())
    assert index["components"]["transformer"] == ["xlxmert", "XUniterForPreTraining"]
    loaded = load_transformer(folder).eval()
    assert isinstance(loaded, XUniterForPreTraining) and loaded.config == model.config
    assert loaded.answers == ANSWERS
    ids, mask, visual_ids, visual_mask = inputs()
    model.eval()
    assert torch.equal(
        loaded(ids, mask, visual_ids=visual_ids).visual_logits,
        model(ids, mask, visual_ids=visual_ids).visual_logits,
    )
    index["components"]["transformer"] = ["xlxmert", "Nope"]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(XLXMERTError, match="unknown transformer class xlxmert.Nope"):
        load_transformer(folder)


def uniter_folder(tmp_path, variant="x"):
    """The tiny model folder with an X-UNITER (or UNITER+Grid) transformer in place of X-LXMERT's."""
    folder = build_tiny_model(tmp_path / "m", variant="x-lxmert" if variant == "x" else "lxmert-grid")
    lxmert = load_transformer(folder)
    torch.manual_seed(1)
    model = XUniterForPreTraining(tiny_config(variant, vocab_size=lxmert.config.vocab_size), lxmert.centroids)
    model.answers = list(ANSWERS)
    model.save_pretrained(folder / "transformer")
    update_model_index(folder, {"transformer": model})
    return folder


@pytest.mark.parametrize("variant", ["x", "grid"])
def test_a_uniter_folder_paints_captions_and_answers_through_the_same_pipelines(tmp_path, variant):
    from PIL import Image

    from xlxmert.pipelines import AnswerPipeline, CaptionPipeline, PaintPipeline

    folder = uniter_folder(tmp_path, variant)
    pipe = PaintPipeline.from_pretrained(folder)
    assert isinstance(pipe.transformer, XUniterForPreTraining)
    captions = ["a red circle at night", "two green stars"]
    temperature = 1.0 if variant == "x" else 0.0  # +Grid regresses features: nothing to sample from
    first = pipe(captions, sampler="random", steps=4, temperature=temperature, seed=5)
    again = pipe(captions, sampler="random", steps=4, temperature=temperature, seed=5)
    assert len(first.images) == 2 and first.images[0].size == (16, 16)
    assert [list(im.getdata()) for im in first.images] == [list(im.getdata()) for im in again.images]
    for sampler, steps in (("mask-predict", 4), ("tl-br", None), ("easy-first", None)):
        assert len(pipe(captions[:1], sampler=sampler, steps=steps, seed=0).images) == 1
    image = Image.new("RGB", (16, 16), (28, 30, 48))
    answers = AnswerPipeline.from_pretrained(folder)([image], ["what color is the circle"])
    assert answers.answers[0] in ANSWERS
    caption = CaptionPipeline.from_pretrained(folder)([image], prefix="a")
    assert caption.captions[0].startswith("a")


@pytest.mark.slow
def test_pretrain_cli_trains_a_uniter_and_its_folder_loads(tiny, tmp_path, capsys):  # noqa: F811
    from xlxmert.cli import main

    out = tmp_path / "run"
    args = ["--architecture", "uniter", "--steps", "60", "--batch-size", "16", "--lr", "3e-3"]
    args += ["--eval-every", "60", "--checkpoint-every", "60", "--no-qa", "--quiet"]
    assert main(cli_args(tiny, out, *args)) == 0
    assert "x-uniter" in capsys.readouterr().out
    model = load_transformer(out)
    assert isinstance(model, XUniterForPreTraining) and model.config.num_layers == 10
    rows = metrics(out)
    for name, fall in (("loss_ccc", 0.8), ("loss_mlm", 0.9)):
        values = [v for _, split, m, v in rows if split == "train" and m == name]
        assert len(values) == 20 and np.mean(values[-4:]) < fall * np.mean(values[:4]), name
    # The +Grid variant reads the feature store and regresses it.
    grid_out = tmp_path / "grid"
    grid_args = ["--architecture", "uniter", "--variant", "grid", "--features", str(tiny["feats"])]
    assert main(cli_args(tiny, grid_out, *grid_args, "--steps", "2", "--batch-size", "4", "--quiet")) == 0
    assert load_transformer(grid_out).config.variant == "uniter-grid"
    assert "loss_mvfr" in {m for _, _, m, _ in metrics(grid_out)}


def test_a_uniter_folder_fine_tunes_and_answers_with_its_head(tmp_path, data, model_dir):  # noqa: F811
    import shutil

    from test_finetune import _config
    from xlxmert.pipelines import AnswerPipeline
    from xlxmert.training.finetune import finetune

    folder = tmp_path / "uniter"
    shutil.copytree(model_dir, folder)
    lxmert = load_transformer(folder)
    torch.manual_seed(0)
    uniter = XUniterForPreTraining(tiny_config(vocab_size=lxmert.config.vocab_size), lxmert.centroids)
    uniter.answers = list(lxmert.answers)
    uniter.save_pretrained(folder / "transformer")
    update_model_index(folder, {"transformer": uniter})
    report = finetune(folder, data, tmp_path / "ft", _config("vqa", epochs=8), progress=False)
    assert report["val"]["score"] > report["val"]["baselines"]["majority_answer"] + 0.05
    assert isinstance(load_transformer(tmp_path / "ft"), XUniterForPreTraining)
    pipe = AnswerPipeline.from_pretrained(tmp_path / "ft")
    assert pipe.head is not None and isinstance(pipe.transformer, XUniterForPreTraining)
