"""Layout and wiring (issue 26): decode paints the layout the generator trains on, every CLI option
reaches its pipeline, ``$XLXMERT_MODEL`` is honoured, every pretraining switch changes the batches,
and the authors' checkpoint layout (written here from its key names, not from our model) loads."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from PIL import Image

import xlxmert.training.pretrain as pt
from conftest import GRID, IMAGE, K, build_tiny_model
from test_pretrain import MODEL, N, run, tiny  # noqa: F401 - `tiny` is a fixture
from xlxmert.cli import main
from xlxmert.data.images import tensor_to_pil
from xlxmert.data.tokenizer import TextTokenizer
from xlxmert.models.generator import NoiseInjection, SpadeGenerator, features_from_ids
from xlxmert.models.transformer import XLxmertForPreTraining
from xlxmert.pipelines import AnswerPipeline, CaptionPipeline, PaintPipeline
from xlxmert.training.generator import reconstruct
from xlxmert.training.pretrain import PretrainConfig
from xlxmert.utils.seeding import torch_generator


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The tiny model folder, its generator's noise switched on (its weights start at zero)."""
    folder = build_tiny_model(tmp_path_factory.mktemp("wiring") / "model")
    generator = SpadeGenerator.from_pretrained(folder / "generator")
    with torch.no_grad():
        for module in generator.modules():
            if isinstance(module, NoiseInjection):
                module.weight.fill_(0.5)
    generator.save_pretrained(folder / "generator")
    return folder


@pytest.fixture(scope="module")
def pipe(model_dir):
    return PaintPipeline.from_pretrained(model_dir)


def pixels(image: Image.Image) -> bytes:
    return image.convert("RGB").tobytes()


# ---------------------------------------------------------------------- decode layout
def asymmetric_ids(batch: int = 2) -> torch.Tensor:
    """``LongTensor[B, N*N]`` ids whose grid differs from its transpose and its flips."""
    ids = torch.randint(0, K, (batch, GRID * GRID), generator=torch.Generator().manual_seed(0))
    grid = ids.view(batch, GRID, GRID)
    for other in (grid.transpose(1, 2), grid.flip(1), grid.flip(2)):
        assert not torch.equal(grid, other)
    return ids


def test_decode_is_the_generator_on_the_training_layout(pipe):
    ids = asymmetric_ids()
    centroids = pipe.vocabulary.centroids
    # What generator training paints from ground-truth ids (training.generator.reconstruct).
    trained = reconstruct(pipe.generator, ids, centroids, noise=False)
    decoded = pipe.decode(ids, noise=False)
    assert [pixels(img) for img in decoded] == [pixels(img) for img in tensor_to_pil(trained)]
    # The same from features (LXMERT+Grid's path): cell i*N + j is row i, column j.
    feats = centroids[ids]
    assert [pixels(img) for img in pipe.decode(feats, noise=False)] == [pixels(img) for img in decoded]
    grid = features_from_ids(ids, centroids, GRID)
    i, j = 1, 3
    assert torch.equal(grid[:, :, i, j], centroids[ids[:, i * GRID + j]])
    # The layout matters to the generator: the transposed grid paints another image.
    transposed = ids.view(-1, GRID, GRID).transpose(1, 2).reshape(ids.shape)
    assert pixels(pipe.decode(transposed, noise=False)[0]) != pixels(decoded[0])


def test_decode_noise_is_seeded_like_the_generators(pipe):
    ids = asymmetric_ids(1)
    feats = features_from_ids(ids, pipe.vocabulary.centroids, GRID)
    with torch.no_grad():
        expected = pipe.generator(feats, noise=True, generator=torch_generator(5))
    assert pixels(pipe.decode(ids, seed=5, noise=True)[0]) == pixels(tensor_to_pil(expected)[0])
    assert pixels(pipe.decode(ids, seed=6, noise=True)[0]) != pixels(tensor_to_pil(expected)[0])


# ---------------------------------------------------------------------- paint: CLI == API
# name → (CLI flags, API keyword arguments, the case it differs from by one option)
PAINT_CASES = {
    "defaults": ([], {}, None),
    "seed": (["--seed", "3"], {"seed": 3}, "defaults"),
    "no-noise": (["--no-noise"], {"noise": False}, "defaults"),
    # A random tiny model's text moves its logits by ~0.004: the largest scale the CLI takes (100) shows it.
    "guidance": (
        ["--sampler", "random", "--temperature", "2", "--guidance-scale", "100"],
        {"sampler": "random", "temperature": 2.0, "guidance_scale": 100.0},
        "random",
    ),
    "sampler": (
        ["--sampler", "easy-first", "--temperature", "2"],
        {"sampler": "easy-first", "temperature": 2.0},
        "random",
    ),
    "random": (
        ["--sampler", "random", "--temperature", "2"],
        {"sampler": "random", "temperature": 2.0},
        None,
    ),
    "steps": (
        ["--sampler", "random", "--temperature", "2", "--steps", "4"],
        {"sampler": "random", "temperature": 2.0, "steps": 4},
        "random",
    ),
    "anneal": (
        ["--sampler", "random", "--temperature", "2", "--anneal"],
        {"sampler": "random", "temperature": 2.0, "anneal": True},
        "random",
    ),
    "top-k": (
        ["--sampler", "random", "--temperature", "2", "--top-k", "1"],
        {"sampler": "random", "temperature": 2.0, "top_k": 1},
        "random",
    ),
    "temperature": (
        ["--sampler", "random", "--temperature", "0"],
        {"sampler": "random", "temperature": 0.0},
        "random",
    ),
}
CAPTION = "a red circle to the left of a blue square"


@pytest.fixture(scope="module")
def paintings(model_dir, pipe, tmp_path_factory):
    """Per case: (the CLI's image, the API's image)."""
    tmp = tmp_path_factory.mktemp("paint_cases")
    out = {}
    for name, (flags, kwargs, _) in PAINT_CASES.items():
        path = tmp / f"{name}.png"
        assert main(["paint", CAPTION, "-o", str(path), "--model", str(model_dir), *flags]) == 0
        with Image.open(path) as img:
            out[name] = (pixels(img), pixels(pipe(CAPTION, **kwargs).images[0]))
    return out


@pytest.mark.parametrize("name", sorted(PAINT_CASES))
def test_every_paint_option_reaches_the_pipeline(paintings, name):
    cli, api = paintings[name]
    assert cli == api  # the CLI paints what the API paints with the same option
    parent = PAINT_CASES[name][2]
    if parent is not None:
        assert cli != paintings[parent][0]  # and the option changes the painting


def test_paint_strip_ends_with_the_painting(model_dir, pipe, tmp_path, capsys):
    path = tmp_path / "p.png"
    assert main(["paint", CAPTION, "-o", str(path), "--model", str(model_dir), "--strip"]) == 0
    with Image.open(path) as painting, Image.open(tmp_path / "p_strip.png") as strip:
        frames = pipe(CAPTION, return_intermediates=True).intermediates[0]
        pad, w = 2, IMAGE
        last = strip.crop(
            (pad + (len(frames) - 1) * (w + pad), pad, pad + (len(frames) - 1) * (w + pad) + w, pad + w)
        )
        assert pixels(last) == pixels(painting) == pixels(frames[-1])
        first = strip.crop((pad, pad, pad + w, pad + w))
        assert pixels(first) == pixels(frames[0])


def test_paint_honours_the_model_from_the_environment(model_dir, tmp_path, capsys, monkeypatch):
    other = tmp_path / "other"
    build_tiny_model(other, seed=1)
    monkeypatch.setenv("XLXMERT_MODEL", str(other))
    assert main(["paint", CAPTION, "-o", str(tmp_path / "env.png")]) == 0
    assert main(["paint", CAPTION, "-o", str(tmp_path / "flag.png"), "--model", str(model_dir)]) == 0
    with Image.open(tmp_path / "env.png") as env, Image.open(tmp_path / "flag.png") as flag:
        expected = PaintPipeline.from_pretrained(other)(CAPTION).images[0]
        assert pixels(env) == pixels(expected)  # the environment's model painted it ...
        assert pixels(flag) != pixels(env)  # ... and --model still wins over it


def test_caption_and_answer_honour_the_environment_and_their_options(
    model_dir, tmp_path, capsys, monkeypatch
):
    image = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (IMAGE, IMAGE, 3), dtype=np.uint8)).save(image)
    other = tmp_path / "other"
    build_tiny_model(other, seed=2)
    monkeypatch.setenv("XLXMERT_MODEL", str(other))
    captioner, answerer = CaptionPipeline.from_pretrained(other), AnswerPipeline.from_pretrained(other)
    for flags, kwargs in [
        ([], {}),
        (["--prefix", "a", "--length", "6"], {"prefix": "a", "length": 6}),
        (["--seed", "4", "--temperature", "1.5", "--top-k", "3", "--sweeps", "3"],
         {"seed": 4, "temperature": 1.5, "top_k": 3, "sweeps": 3}),
    ]:  # fmt: skip
        capsys.readouterr()
        assert main(["caption", str(image), *flags]) == 0
        assert capsys.readouterr().out.strip() == captioner([str(image)], **kwargs).captions[0]
    assert main(["answer", str(image), "what color is the circle", "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    top = answerer([str(image)], ["what color is the circle"], top_k=3).top[0]
    assert lines == [f"{a}\t{p:.3f}" for a, p in top]


# ---------------------------------------------------------------------- pretraining switches
def _visual_masks(tiny, **overrides) -> torch.Tensor:  # noqa: F811
    data = pt.load_pretrain_data(tiny["data"], tiny["vocab"], "train", None)
    tok = TextTokenizer.from_pretrained(tiny["tok"])
    config = PretrainConfig.from_preset("shapes-64", steps=1, batch_size=8, lr=1e-3, **overrides)
    examples = np.tile(np.arange(len(data.texts)), 6)
    gen = torch.Generator().manual_seed(0)
    return pt.make_batch("visual", examples, data, tok, config, N * N, 4, gen).visual_mask


def test_visual_masking_switch_sets_the_masking_rate(tiny):  # noqa: F811
    m = N * N
    uniform = _visual_masks(tiny)
    bern15 = _visual_masks(tiny, visual_masking="bernoulli")
    bern30 = _visual_masks(tiny, visual_masking="bernoulli", mask_prob=0.3)
    rows = uniform.shape[0]
    # Uniform: n ~ U{1..M} cells per row, mean (M + 1) / 2M; every count from 1 to M occurs.
    uniform_sd = math.sqrt((m * m - 1) / 12) / m / math.sqrt(rows)
    assert abs(uniform.float().mean() - (m + 1) / (2 * m)) < 4 * uniform_sd
    assert set(uniform.sum(1).tolist()) == set(range(1, m + 1))
    for mask, p in ((bern15, 0.15), (bern30, 0.3)):
        sd = math.sqrt(p * (1 - p) / mask.numel())
        assert abs(mask.float().mean() - p) < 4 * sd
        assert int((mask.sum(1) == 0).sum()) > 0  # Bernoulli leaves some rows unmasked, uniform never


def _texts_seen(tiny, tmp_path, monkeypatch, **overrides):  # noqa: F811
    """(task, is-a-question) of every example pretrain() puts in a batch."""
    seen = []
    real = pt.make_batch

    def recording(task, examples, data, *args, **kwargs):
        seen.extend((task, bool(data.is_question[i])) for i in examples)
        return real(task, examples, data, *args, **kwargs)

    monkeypatch.setattr(pt, "make_batch", recording)
    run(tiny, tmp_path / "run", steps=6, batch_size=16, checkpoint_every=6, eval_every=100, **overrides)
    return seen


@pytest.mark.parametrize("ccc_data", ["captions", "all"])
def test_ccc_data_switch_sets_the_visual_tasks_text_source(tiny, tmp_path, monkeypatch, ccc_data):  # noqa: F811
    seen = _texts_seen(tiny, tmp_path, monkeypatch, ccc_data=ccc_data)
    visual = [q for task, q in seen if task == "visual"]
    others = [q for task, q in seen if task != "visual"]
    assert len(visual) == 32 and len(others) == 64
    # 32 of the split's 96 texts are questions: "all" draws about a third of them.
    assert sum(visual) == 0 if ccc_data == "captions" else 4 <= sum(visual) <= 20
    assert sum(others) >= 8  # the text and matching tasks read questions either way


def test_qa_switch_removes_the_questions(tiny, tmp_path, monkeypatch):  # noqa: F811
    seen = _texts_seen(tiny, tmp_path, monkeypatch, ccc_data="all", qa=False)
    assert not any(q for _, q in seen)


# ---------------------------------------------------------------------- the authors' checkpoint layout
def _bert_layer(prefix: str, h: int, i: int, attention: str = "attention.self") -> dict:
    shapes = {}
    for proj in ("query", "key", "value"):
        shapes[f"{prefix}.{attention}.{proj}.weight"] = (h, h)
        shapes[f"{prefix}.{attention}.{proj}.bias"] = (h,)
    return shapes


def _output(prefix: str, h: int, fan_in: int) -> dict:
    return {
        f"{prefix}.dense.weight": (h, fan_in),
        f"{prefix}.dense.bias": (h,),
        f"{prefix}.LayerNorm.weight": (h,),
        f"{prefix}.LayerNorm.bias": (h,),
    }


def _ffn(prefix: str, h: int, i: int, inter: str = "intermediate", out: str = "output") -> dict:
    return {
        f"{prefix}.{inter}.dense.weight": (i, h),
        f"{prefix}.{inter}.dense.bias": (i,),
        **_output(f"{prefix}.{out}", h, i),
    }


def authors_layout(
    v: int, h: int, i: int, layers: tuple[int, int, int], d: int, k: int, answers: int
) -> dict:
    """Key → shape of an ``Epoch20_LXRT.pth`` state dict (LXMERT's names, REFERENCE.md's heads)."""
    shapes = {
        "bert.embeddings.word_embeddings.weight": (v, h),
        "bert.embeddings.position_embeddings.weight": (512, h),
        "bert.embeddings.token_type_embeddings.weight": (2, h),
        "bert.embeddings.LayerNorm.weight": (h,),
        "bert.embeddings.LayerNorm.bias": (h,),
        "bert.encoder.visn_fc.visn_fc.weight": (h, d),
        "bert.encoder.visn_fc.visn_fc.bias": (h,),
        "bert.encoder.visn_fc.visn_layer_norm.weight": (h,),
        "bert.encoder.visn_fc.visn_layer_norm.bias": (h,),
        "bert.encoder.visn_fc.box_fc.weight": (h, 4),
        "bert.encoder.visn_fc.box_fc.bias": (h,),
        "bert.encoder.visn_fc.box_layer_norm.weight": (h,),
        "bert.encoder.visn_fc.box_layer_norm.bias": (h,),
        "bert.pooler.dense.weight": (h, h),
        "bert.pooler.dense.bias": (h,),
        "cls.predictions.bias": (v,),
        "cls.predictions.transform.dense.weight": (h, h),
        "cls.predictions.transform.dense.bias": (h,),
        "cls.predictions.transform.LayerNorm.weight": (h,),
        "cls.predictions.transform.LayerNorm.bias": (h,),
        "cls.predictions.decoder.weight": (v, h),
        "cls.seq_relationship.weight": (2, h),
        "cls.seq_relationship.bias": (2,),
        "obj_predict_head.transform.dense.weight": (h, h),
        "obj_predict_head.transform.dense.bias": (h,),
        "obj_predict_head.transform.LayerNorm.weight": (h,),
        "obj_predict_head.transform.LayerNorm.bias": (h,),
        "obj_predict_head.linear_feat.weight": (d, h),
        "obj_predict_head.linear_feat.bias": (d,),
        "obj_predict_head.out_cluster.weight": (k, d),
        "obj_predict_head.out_cluster.bias": (k,),
        "mask_feat": (d,),
        "answer_head.logit_fc.0.weight": (2 * h, h),
        "answer_head.logit_fc.0.bias": (2 * h,),
        "answer_head.logit_fc.2.weight": (2 * h,),
        "answer_head.logit_fc.2.bias": (2 * h,),
        "answer_head.logit_fc.3.weight": (answers, 2 * h),
        "answer_head.logit_fc.3.bias": (answers,),
    }
    n_l, n_r, n_x = layers
    for stack, n in (("layer", n_l), ("r_layers", n_r)):
        for j in range(n):
            p = f"bert.encoder.{stack}.{j}"
            shapes |= _bert_layer(p, h, i) | _output(f"{p}.attention.output", h, h) | _ffn(p, h, i)
    for j in range(n_x):
        p = f"bert.encoder.x_layers.{j}"
        shapes |= _bert_layer(p, h, i, "visual_attention.att") | _output(f"{p}.visual_attention.output", h, h)
        for side in ("lang", "visn"):
            shapes |= _bert_layer(p, h, i, f"{side}_self_att.self") | _output(
                f"{p}.{side}_self_att.output", h, h
            )
            shapes |= _ffn(p, h, i, f"{side}_inter", f"{side}_output")
    return shapes


def full_key(key: str, prefix: str) -> str:
    """The authors' ``key`` as stored under ``prefix`` (``module.``; HF's ``lxmert.`` for ``bert.``)."""
    if prefix.endswith("lxmert.") and key.startswith("bert."):
        return prefix + key.removeprefix("bert.")
    return "module." + key


@pytest.mark.parametrize("prefix", ["module.", "module.lxmert."])
def test_the_authors_key_layout_loads_every_tensor_where_it_belongs(prefix):
    config = dataclasses.replace(
        MODEL, vocab_size=50, num_answers=5, grid_size=N, num_clusters=12, feature_dim=8
    )
    h, i = config.hidden_size, config.intermediate_size
    layout = authors_layout(50, h, i, (config.l_layers, config.r_layers, config.x_layers), 8, 12, 5)
    g = torch.Generator().manual_seed(0)
    state = {full_key(key, prefix): torch.randn(shape, generator=g) for key, shape in layout.items()}
    # BERT ties the MLM decoder to the word embeddings, so the file holds the same matrix twice.
    tied = state[full_key("bert.embeddings.word_embeddings.weight", prefix)]
    state[full_key("cls.predictions.decoder.weight", prefix)] = tied.clone()
    model = XLxmertForPreTraining(config, None)
    assert model.load_reference_state_dict(state) == {"missing": [], "unexpected": []}
    ours = model.state_dict()
    for key in layout:
        if key == "obj_predict_head.out_cluster.weight":  # the centroids: the visual vocabulary
            assert torch.equal(model.centroids, state[full_key(key, prefix)])
        else:
            assert torch.equal(ours[key], state[full_key(key, prefix)]), key
