"""Paint, caption and answer pipelines on a tiny real model folder (random weights)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import xlxmert.pipelines as pipelines
from conftest import ANSWERS, GRID, IMAGE, build_tiny_model
from xlxmert.errors import XLXMERTError
from xlxmert.pipelines import AnswerPipeline, CaptionPipeline, PaintPipeline, default_model_dir
from xlxmert.utils.model_folder import COMPONENTS, read_model_index

M = GRID * GRID


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def grid_model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-grid") / "model", variant="lxmert-grid")


@pytest.fixture(scope="module")
def painter(model_dir):
    return PaintPipeline.from_pretrained(model_dir)


CAPTIONS = ["a red circle to the left of a blue square", "two green stars at night", "a yellow diamond"]


def test_paint_returns_one_image_per_caption_and_is_seeded(painter):
    out = painter(CAPTIONS, sampler="mask-predict", steps=4, seed=0)
    assert len(out.images) == 3 and all(isinstance(i, Image.Image) for i in out.images)
    assert out.images[0].size == (IMAGE, IMAGE)
    assert out.ids.shape == (3, M) and out.ids.dtype == torch.long
    assert out.features.shape == (3, M, 12) and out.intermediates is None
    again = painter(CAPTIONS, sampler="mask-predict", steps=4, seed=0)
    assert torch.equal(out.ids, again.ids)
    assert [i.tobytes() for i in out.images] == [i.tobytes() for i in again.images]


@pytest.mark.parametrize(
    "options",
    [
        dict(sampler="mask-predict", steps=4),
        dict(sampler="tl-br"),
        dict(sampler="easy-first"),
        dict(sampler="random", steps=2 * M, temperature=1.0, top_k=4),
    ],
)
def test_text_cache_gives_the_ids_of_the_naive_recomputation(painter, options, monkeypatch):
    calls = []
    encode = painter.transformer.encode_text
    monkeypatch.setattr(painter.transformer, "encode_text", lambda *a: calls.append(1) or encode(*a))
    cached = painter.sample(CAPTIONS, _sampler(options), seed=1, use_text_cache=True)
    assert len(calls) == 1  # the language stream ran once for all steps
    naive = painter.sample(CAPTIONS, _sampler(options), seed=1, use_text_cache=False)
    assert len(calls) == 1 + _sampler(options).num_steps(M)  # ... against once per step
    assert torch.equal(cached.ids, naive.ids)


def _sampler(options):
    from xlxmert.sampling import get_sampler

    return get_sampler(
        options["sampler"], options.get("steps"), options.get("temperature", 0.0), top_k=options.get("top_k")
    )


@pytest.mark.parametrize(
    "options", [dict(sampler="mask-predict"), dict(sampler="random", steps=40, temperature=1.0)]
)
def test_a_batch_equals_the_same_captions_one_by_one(painter, options):
    # Item i of a batch is seeded with seed + i: it equals its caption painted alone with that seed.
    batch = painter(CAPTIONS, seed=5, **options)
    for i, caption in enumerate(CAPTIONS):
        alone = painter([caption], seed=5 + i, **options)
        assert torch.equal(alone.ids[0], batch.ids[i])
        assert alone.images[0].tobytes() == batch.images[i].tobytes()


def test_intermediates_decode_every_step(painter):
    out = painter(CAPTIONS[:2], sampler="random", steps=20, seed=0, return_intermediates=True)
    assert len(out.intermediates) == 2 and all(len(strip) == 20 for strip in out.intermediates)
    assert out.intermediates[0][-1].tobytes() == out.images[0].tobytes()


def test_empty_caption_is_an_error_and_a_long_one_is_truncated_with_a_warning(painter):
    with pytest.raises(XLXMERTError, match="empty"):
        painter(["a red circle", "  "])
    long = " ".join(["a red circle to the left of a blue square"] * 4)
    with pytest.warns(UserWarning, match="truncated"):
        out = painter([long])
    assert out.ids.shape == (1, M)


def test_empty_caption_is_admitted_for_the_evaluation_control(painter):
    from xlxmert.pipelines.common import tokenize_texts

    empty = painter([""], seed=0, allow_empty=True)
    assert empty.ids.shape == (1, M) and len(empty.images) == 1
    tok = painter.tokenizer
    tokens = tokenize_texts(tok, [""], 20, allow_empty=True)
    assert tokens.input_ids[0, :3].tolist() == [tok.cls_id, tok.sep_id, tok.pad_id]


def test_predictor_mixes_the_conditional_and_empty_caption_predictions(painter):
    ids = torch.zeros(len(CAPTIONS), M, dtype=torch.long)
    mask = torch.ones(len(CAPTIONS), M, dtype=torch.bool)
    with torch.no_grad():
        cond = painter.predictor(CAPTIONS)(ids, mask)
        uncond = painter.predictor([""] * len(CAPTIONS), allow_empty=True)(ids, mask)
        guided = painter.predictor(CAPTIONS, guidance_scale=2.5)(ids, mask)
        naive = painter.predictor(CAPTIONS, guidance_scale=2.5, use_text_cache=False)(ids, mask)
    assert cond.shape == (len(CAPTIONS), M, painter.transformer.config.num_clusters)
    assert torch.allclose(guided, uncond + 2.5 * (cond - uncond), atol=1e-5)
    assert torch.allclose(naive, guided, atol=1e-5)
    with pytest.raises(XLXMERTError, match="guidance_scale"):
        painter.predictor(CAPTIONS, guidance_scale=-0.5)


def test_classifier_free_guidance(painter):
    plain = painter(CAPTIONS, steps=4, seed=0, temperature=1.0)
    assert torch.equal(painter(CAPTIONS, steps=4, seed=0, temperature=1.0, guidance_scale=1.0).ids, plain.ids)
    # Scale 0 keeps only the unconditional (empty-caption) prediction: every caption paints as the
    # empty caption does with the same seed.
    empty = painter([""] * len(CAPTIONS), steps=4, seed=0, temperature=1.0, allow_empty=True)
    zero = painter(CAPTIONS, steps=4, seed=0, temperature=1.0, guidance_scale=0.0)
    assert torch.equal(zero.ids, empty.ids)
    guided = painter(CAPTIONS, steps=4, seed=0, temperature=1.0, guidance_scale=4.0)
    assert not torch.equal(guided.ids, plain.ids)
    assert torch.equal(
        guided.ids, painter(CAPTIONS, steps=4, seed=0, temperature=1.0, guidance_scale=4.0).ids
    )
    with pytest.raises(XLXMERTError, match="guidance_scale"):
        painter(CAPTIONS, guidance_scale=-1.0)


def test_save_pretrained_round_trip(painter, tmp_path):
    painter.save_pretrained(tmp_path / "copy")
    copy = PaintPipeline.from_pretrained(tmp_path / "copy")
    assert torch.equal(copy(CAPTIONS, seed=0).ids, painter(CAPTIONS, seed=0).ids)


def test_the_model_folders_sampler_settings_are_the_default(model_dir, tmp_path):
    import shutil

    from xlxmert.sampling import SamplerConfig

    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    settings = SamplerConfig("mask-predict", steps=3, temperature=2.0, anneal=True, guidance_scale=3.0)
    settings.save_pretrained(folder / "sampler")
    pipe = PaintPipeline.from_pretrained(folder)
    assert pipe.sampler == settings
    explicit = dict(sampler="mask-predict", steps=3, temperature=2.0, anneal=True, guidance_scale=3.0)
    assert torch.equal(pipe(CAPTIONS, seed=0).ids, pipe(CAPTIONS, seed=0, **explicit).ids)
    assert not torch.equal(pipe(CAPTIONS, seed=0).ids, pipe(CAPTIONS, seed=0, guidance_scale=1.0).ids)
    # A named option overrides one setting and keeps the rest; another sampler starts afresh.
    assert pipe.sampler.merged(temperature=0.5) == SamplerConfig("mask-predict", 3, 0.5, True, None, 3.0)
    assert pipe.sampler.merged("tl-br") == SamplerConfig("tl-br")
    assert torch.equal(
        pipe(CAPTIONS, seed=0, temperature=0.0).ids,
        pipe(CAPTIONS, seed=0, sampler="mask-predict", steps=3, temperature=0.0).ids,
    )
    # Without sampler/ the pipeline paints like the paper: Mask-Predict-4, argmax.
    plain = PaintPipeline.from_pretrained(model_dir)
    assert plain.sampler == SamplerConfig("mask-predict", None, 0.0, False)
    assert torch.equal(plain(CAPTIONS, seed=0).ids, plain(CAPTIONS, seed=0, steps=4, temperature=0.0).ids)
    pipe.save_pretrained(tmp_path / "copy")
    assert PaintPipeline.from_pretrained(tmp_path / "copy").sampler == settings
    with pytest.raises(XLXMERTError, match="unknown sampler"):
        SamplerConfig("zigzag")
    with pytest.raises(XLXMERTError, match="guidance_scale"):
        SamplerConfig(guidance_scale=-1.0)
    # A sampler/ saved before guidance_scale existed loads as no guidance.
    path = folder / "sampler" / "config.json"
    saved = json.loads(path.read_text())
    del saved["guidance_scale"]
    path.write_text(json.dumps(saved))
    assert SamplerConfig.from_pretrained(folder / "sampler").guidance_scale == 1.0


def test_lxmert_grid_paints_regressed_features(grid_model_dir):
    pipe = PaintPipeline.from_pretrained(grid_model_dir)
    assert pipe.paints_features
    out = pipe(CAPTIONS[:2], sampler="tl-br", return_intermediates=True)
    assert out.ids is None and out.features.shape == (2, M, 12)
    assert len(out.images) == 2 and out.images[0].size == (IMAGE, IMAGE)
    assert len(out.intermediates[0]) == M
    cached = pipe.sample(CAPTIONS[:2], _sampler(dict(sampler="mask-predict")), use_text_cache=True)
    naive = pipe.sample(CAPTIONS[:2], _sampler(dict(sampler="mask-predict")), use_text_cache=False)
    torch.testing.assert_close(cached.features, naive.features)
    # the features the sampler wrote are the model's regression of the final masked pass
    assert not torch.allclose(out.features[0], out.features[0, :1].expand(M, -1))


def _scene(color):
    return Image.new("RGB", (IMAGE, IMAGE), color)


def test_caption_keeps_the_prefix_and_is_seeded(model_dir):
    pipe = CaptionPipeline.from_pretrained(model_dir)
    out = pipe([_scene("red"), _scene("blue")], prefix="a red", length=6, seed=0)
    assert len(out.captions) == 2
    prefix = pipe.tokenizer(["a red"]).input_ids[0, 1:-1]
    prefix = prefix[prefix != pipe.tokenizer.pad_id][:-1]  # word pieces between [CLS] and [SEP]
    assert torch.equal(out.input_ids[:, 1 : 1 + len(prefix)], prefix.expand(2, -1))
    assert all(c.startswith("a r") for c in out.captions)
    assert out.input_ids[:, 0].eq(pipe.tokenizer.cls_id).all()
    assert out.input_ids[:, 7].eq(pipe.tokenizer.sep_id).all()
    assert not out.input_ids[:, 1:7].eq(pipe.tokenizer.mask_id).any()
    assert pipe([_scene("red"), _scene("blue")], prefix="a red", length=6, seed=0).captions == out.captions
    with pytest.raises(XLXMERTError, match="length"):
        pipe([_scene("red")], length=40)


def test_caption_reads_image_files_and_reports_unreadable_ones(model_dir, tmp_path):
    pipe = CaptionPipeline.from_pretrained(model_dir)
    _scene("green").save(tmp_path / "g.png")
    assert len(pipe([tmp_path / "g.png"]).captions) == 1
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(XLXMERTError, match="cannot read image"):
        pipe([tmp_path / "bad.png"])


@pytest.mark.parametrize("fixture", ["model_dir", "grid_model_dir"])
def test_answer_returns_an_answer_of_the_list_with_its_probability(fixture, request):
    pipe = AnswerPipeline.from_pretrained(request.getfixturevalue(fixture))
    out = pipe(_scene("red"), ["what color is the circle", "is there a star"], top_k=3)
    assert len(out.answers) == 2 and all(a in ANSWERS for a in out.answers)
    assert all(0 < p <= 1 for p in out.probabilities)
    assert [t[0][0] for t in out.top] == out.answers and len(out.top[0]) == 3
    probs = [p for _, p in out.top[0]]
    assert probs == sorted(probs, reverse=True)


def test_missing_model_folder_is_an_error(tmp_path):
    with pytest.raises(XLXMERTError, match="model folder not found"):
        PaintPipeline.from_pretrained(tmp_path / "nowhere")


def test_default_model_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XLXMERT_MODEL", str(tmp_path / "env-model"))
    assert default_model_dir() == tmp_path / "env-model"
    monkeypatch.delenv("XLXMERT_MODEL")
    monkeypatch.setattr(
        pipelines, "__file__", str(tmp_path / "a" / "src" / "xlxmert" / "pipelines" / "__init__.py")
    )
    with pytest.raises(XLXMERTError, match="--model"):
        default_model_dir()
    (tmp_path / "a" / "models" / "shapes-64").mkdir(parents=True)
    assert default_model_dir() == tmp_path / "a" / "models" / "shapes-64"


def test_the_shipped_model_paints_the_captions_place_with_its_own_sampler():
    from pathlib import Path

    from xlxmert.sampling import SamplerConfig

    shipped = Path(__file__).resolve().parents[1] / "models" / "shapes-64"
    pipe = PaintPipeline.from_pretrained(shipped)
    assert pipe.sampler == SamplerConfig("random", 16, temperature=1.0, guidance_scale=3.0)
    out = pipe(["a red circle at night", "a blue square in the snow"], seed=0)
    night, snow = (np.asarray(image, dtype=np.float32) for image in out.images)
    assert night.shape == snow.shape == (64, 64, 3)

    # Backgrounds (the corner pixels' median) are those of the places: night (28, 30, 48), snow 236.
    def corners(a):
        return np.median(np.concatenate([a[:4, :4], a[:4, -4:], a[-4:, :4], a[-4:, -4:]]).reshape(-1, 3), 0)

    assert corners(night).max() < 70 and corners(snow).min() > 200


def test_tiny_model_folder_has_every_component(tmp_path):
    folder = build_tiny_model(tmp_path / "m")
    assert sorted(read_model_index(folder)["components"]) == sorted(COMPONENTS)
