"""Pipelines: what the mutation run (issue 26, docs/testing.md) found no fast test reaching or
checking: NLVR2Pipeline on a tiny model folder with an NLVR2 head (random weights)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import IMAGE, build_tiny_model
from xlxmert.errors import XLXMERTError
from xlxmert.models.heads import TaskModel, build_head, save_task_head
from xlxmert.pipelines.common import ImageEncoder, load_core_components
from xlxmert.pipelines.verify import NLVR2Pipeline, VerifyOutput
from xlxmert.sampling import get_sampler


def exactly(message: str) -> str:
    return "^" + re.escape(message) + "$"


def picture(seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


STATEMENTS = ["a red circle in the snow", "two green stars at night", "a yellow diamond"]


@pytest.fixture(scope="module")
def verify_dir(tmp_path_factory):
    # LXMERT+Grid reads exact features: a random X-LXMERT maps every cell to one visual word.
    folder = build_tiny_model(tmp_path_factory.mktemp("nlvr2") / "model", variant="lxmert-grid")
    torch.manual_seed(1)
    _, _, transformer = load_core_components(folder)
    head = build_head("nlvr2", transformer.config.hidden_size)
    torch.nn.init.normal_(head.logit_fc[-1].weight, std=1.0)  # judgements far from 0.5
    save_task_head(folder, head, transformer)
    return folder


def test_nlvr2_pipeline_judges_each_pair_with_the_fine_tuned_head(verify_dir):
    pipe = NLVR2Pipeline.from_pretrained(verify_dir)
    left, right = [picture(i) for i in range(3)], [picture(10 + i) for i in range(3)]
    out = pipe(left, right, STATEMENTS)
    assert isinstance(out, VerifyOutput) and len(out.probabilities) == 3
    # The probability of True from the transformer and the head, the left image first.
    tokenizer, _, transformer = load_core_components(verify_dir)
    head = pipe.model.head
    encoder = ImageEncoder.from_pretrained(verify_dir, transformer.config.grid_size)
    tokens = tokenizer(STATEMENTS, max_length=transformer.config.max_text_length)
    visual = torch.stack([encoder(left)[0], encoder(right)[0]], dim=1)  # [B, 2, M, D]
    with torch.no_grad():
        logits = TaskModel(transformer.eval(), head)(tokens.input_ids, tokens.attention_mask, visual)
    expected = logits.softmax(-1)[:, 1]
    assert np.allclose(out.probabilities, expected.tolist(), atol=1e-5)
    assert out.labels == [p > 0.5 for p in out.probabilities]
    assert pipe(right, left, STATEMENTS).probabilities != out.probabilities  # the order matters
    one = pipe(left[:1], right[:1], STATEMENTS[0])  # one statement as a string
    assert np.allclose(one.probabilities, out.probabilities[:1], atol=1e-5)


def test_nlvr2_pipeline_reads_visual_words_of_an_x_lxmert_folder(tmp_path):
    folder = build_tiny_model(tmp_path / "model")
    _, _, transformer = load_core_components(folder)
    save_task_head(folder, build_head("nlvr2", transformer.config.hidden_size), transformer)
    out = NLVR2Pipeline.from_pretrained(folder)([picture(0)], [picture(1)], STATEMENTS[:1])
    assert len(out.labels) == 1 and 0.0 < out.probabilities[0] < 1.0


def test_nlvr2_pipeline_errors(verify_dir):
    pipe = NLVR2Pipeline.from_pretrained(verify_dir)
    with pytest.raises(
        XLXMERTError,
        match=exactly("got 2 left images, 1 right images and 2 statements; give one pair per statement"),
    ):
        pipe([picture(0)] * 2, [picture(1)], STATEMENTS[:2])
    with pytest.raises(XLXMERTError, match=exactly("statement 1 is empty; give some words")):
        pipe([picture(0)], [picture(1)], [" "])
    _, _, transformer = load_core_components(verify_dir)
    vqa = build_head("vqa", transformer.config.hidden_size, ["yes", "no"])
    with pytest.raises(XLXMERTError, match=exactly("NLVR2Pipeline needs an nlvr2 head, got a vqa head")):
        NLVR2Pipeline(pipe.tokenizer, transformer, vqa, pipe.image_encoder)


@pytest.fixture(scope="module")
def paint_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("paint") / "model")


@pytest.fixture(scope="module")
def painter(paint_dir):
    from xlxmert.pipelines import PaintPipeline

    return PaintPipeline.from_pretrained(paint_dir)


@pytest.mark.parametrize(
    "options",
    [
        dict(sampler="mask-predict", steps=4),
        dict(
            sampler="random", steps=20, temperature=1.5, anneal=True, top_k=4, guidance_scale=2.0, noise=False
        ),
    ],
)
def test_paint_steps_are_the_strip_of_the_painting(painter, options):
    caption = "a red circle to the left of a blue square"
    strip = painter(caption, seed=3, return_intermediates=True, **options).intermediates[0]
    steps = list(painter.paint_steps(caption, seed=3, **options))
    assert len(steps) == len(strip) == options["steps"]
    assert [image.tobytes() for image in steps] == [image.tobytes() for image in strip]
    other = list(painter.paint_steps(caption, seed=4, **options))
    # Argmax paints the same strip whatever the seed; sampling draws from it.
    assert ([image.tobytes() for image in other] != [image.tobytes() for image in steps]) == (
        "temperature" in options
    )


def test_paint_steps_hands_every_option_on(painter, monkeypatch):
    calls = []
    sample, decode = painter.sample, painter.decode
    monkeypatch.setattr(painter, "sample", lambda *a, **k: calls.append(("sample", a, k)) or sample(*a, **k))
    monkeypatch.setattr(painter, "decode", lambda *a, **k: calls.append(("decode", a, k)) or decode(*a, **k))
    options = dict(sampler="random", steps=3, temperature=1.5, anneal=True, top_k=4, noise=False)
    list(painter.paint_steps("a red circle", guidance_scale=2.0, **options))
    (_, (captions, sampler, seed, *_), kwargs), *decodes = calls
    assert captions == ["a red circle"] and seed == 0 and kwargs["guidance_scale"] == 2.0
    assert (sampler.steps, sampler.temperature, sampler.anneal, sampler.top_k) == (3, 1.5, True, 4)
    assert [(a[1:], k) for _, a, k in decodes] == [((0, False), {})] * 3
    instance = get_sampler("tl-br")
    assert painter.resolve_sampler(instance) == (instance, 1.0)
    assert painter.resolve_sampler(instance, guidance_scale=2.0) == (instance, 2.0)


def test_a_generator_for_another_grid_is_refused(painter):
    from xlxmert.models.generator import GeneratorConfig, SpadeGenerator
    from xlxmert.pipelines import PaintPipeline

    other = SpadeGenerator(
        GeneratorConfig(input_dim=5, grid_size=2, output_size=IMAGE, channels=8, bottleneck_dim=8)
    )
    with pytest.raises(
        XLXMERTError,
        match=exactly(
            "generator reads 2x2x5 features but the transformer paints 4x4x12; "
            "train the generator on this vocabulary"
        ),
    ):
        PaintPipeline(painter.tokenizer, painter.transformer, painter.vocabulary, other)


def test_decode_seeds_each_image_and_follows_the_models_dtype(paint_dir):
    from xlxmert.pipelines import PaintPipeline

    pipe = PaintPipeline.from_pretrained(paint_dir)
    with torch.no_grad():  # the noise injections start at zero: give them weight
        for name, param in pipe.generator.named_parameters():
            if "noise" in name:
                param.fill_(1.0)
    ids = torch.randint(0, 16, (2, 16), generator=torch.Generator().manual_seed(0))

    def pixels(images):
        return [image.tobytes() for image in images]

    alone = {
        (b, s): pixels(pipe.decode(ids[b : b + 1], s, noise=True))[0] for b in (0, 1) for s in (0, 3, 5, 6)
    }
    assert pixels(pipe.decode(ids, noise=True)) == [
        alone[0, 0],
        pixels(pipe.decode(ids[1:], 1, noise=True))[0],
    ]
    assert pixels(pipe.decode(ids, 5, noise=True)) == [alone[0, 5], alone[1, 6]]
    assert pixels(pipe.decode(ids, [3, 0], noise=True)) == [alone[0, 3], alone[1, 0]]
    assert alone[0, 0] != alone[0, 5]  # the noise draws from the seed
    assert pipe.to(dtype=torch.float64) is pipe
    assert next(pipe.transformer.parameters()).dtype == torch.float64
    assert next(pipe.generator.parameters()).dtype == torch.float64
    assert len(pipe.decode(ids)) == 2  # the grid follows the generator's dtype


def test_default_model_dir_finds_an_installed_model_and_names_where_it_looked(monkeypatch, tmp_path):
    import xlxmert.pipelines as pipelines

    monkeypatch.delenv("XLXMERT_MODEL", raising=False)
    monkeypatch.setattr(
        pipelines, "__file__", str(tmp_path / "src" / "xlxmert" / "pipelines" / "__init__.py")
    )
    monkeypatch.setattr(pipelines.sysconfig, "get_path", lambda name: str(tmp_path / "prefix"))
    checkout = tmp_path / "models" / "shapes-64"
    installed = tmp_path / "prefix" / "share" / "xlxmert" / "models" / "shapes-64"
    with pytest.raises(
        XLXMERTError,
        match=exactly(
            f"no model folder given and none found (XLXMERT_MODEL is unset; looked in {checkout}, "
            f"{installed}); pass --model DIR (a folder written by pretraining)"
        ),
    ):
        pipelines.default_model_dir()
    installed.mkdir(parents=True)
    assert pipelines.default_model_dir() == installed


def test_the_package_names_each_pipeline_and_output_lazily():
    import xlxmert.pipelines as pipelines
    from xlxmert.pipelines import answer, caption, paint, verify

    homes = {
        "PaintPipeline": paint,
        "PaintOutput": paint,
        "CaptionPipeline": caption,
        "CaptionOutput": caption,
        "AnswerPipeline": answer,
        "AnswerOutput": answer,
        "NLVR2Pipeline": verify,
        "VerifyOutput": verify,
    }
    assert sorted(homes) == sorted(set(pipelines.__all__) - {"default_model_dir"})
    for name, module in homes.items():
        assert getattr(pipelines, name) is getattr(module, name)
    with pytest.raises(
        AttributeError, match=exactly("module 'xlxmert.pipelines' has no attribute 'Painter'")
    ):
        pipelines.Painter  # noqa: B018


def noisy(paint_dir):
    """The tiny pipeline with its generator's noise injections switched on (they start at 0)."""
    from xlxmert.pipelines import PaintPipeline

    pipe = PaintPipeline.from_pretrained(paint_dir)
    with torch.no_grad():
        for name, param in pipe.generator.named_parameters():
            if "noise" in name:
                param.fill_(1.0)
    return pipe


def test_generators_replace_the_seeds_for_sampling_and_noise(paint_dir):
    from xlxmert.utils.seeding import torch_generator

    pipe = noisy(paint_dir)
    captions = ["a red circle", "two green stars at night"]
    options = dict(sampler="random", steps=20, temperature=1.5)
    out = pipe(captions, generator=[torch_generator(5), torch_generator(9)], **options)
    # Image i: sampled from generator i, its noise seeded with a draw from it after sampling.
    for i, seed in enumerate((5, 9)):
        gen = torch_generator(seed)
        alone = pipe.sample(captions[i : i + 1], get_sampler("random", 20, 1.5), generators=[gen])
        noise_seed = int(torch.randint(2**62, (1,), generator=gen))
        assert torch.equal(out.ids[i], alone.ids[0])
        assert out.images[i].tobytes() == pipe.decode(alone.ids, [noise_seed])[0].tobytes()
    shared = pipe(captions, generator=torch_generator(5), **options)  # one generator, in order
    again = pipe(captions, generator=torch_generator(5), **options)
    assert torch.equal(shared.ids, again.ids) and not torch.equal(shared.ids[0], out.ids[1])
    with pytest.raises(XLXMERTError, match=exactly("1 generators for 2 images; give one per image")):
        pipe(captions, generator=[torch_generator(5)], **options)
    with pytest.raises(XLXMERTError, match=exactly("num_images_per_prompt must be at least 1, got 0")):
        pipe(captions, num_images_per_prompt=0)


def test_noise_switch_reaches_the_painting_and_its_strip(paint_dir):
    pipe = noisy(paint_dir)
    noisy_out = pipe("a red circle", return_intermediates=True)
    quiet = pipe("a red circle", noise=False, return_intermediates=True)
    assert noisy_out.images[0].tobytes() != quiet.images[0].tobytes()
    assert quiet.intermediates[0][-1].tobytes() == quiet.images[0].tobytes()
    assert noisy_out.intermediates[0][-1].tobytes() == noisy_out.images[0].tobytes()


def test_sample_and_predictor_defaults(painter, monkeypatch):
    from xlxmert.utils.seeding import torch_generator

    sampler = get_sampler("random", 20, 1.5)
    default = painter.sample(["a red circle"], sampler)
    assert default.intermediates == []  # only when asked for
    assert torch.equal(default.ids, painter.sample(["a red circle"], sampler, seed=0).ids)
    given = painter.sample(["a red circle"], sampler, generators=[torch_generator(5)])
    assert torch.equal(given.ids, painter.sample(["a red circle"], sampler, seed=5).ids)
    assert not torch.equal(given.ids, default.ids)
    for call in (
        lambda: painter.predictor([""]),
        lambda: painter.sample([""], sampler),
        lambda: painter([""]),
    ):
        with pytest.raises(XLXMERTError, match=exactly("caption 1 is empty; give some words")):
            call()
    # The text is encoded once per call by default (the cache), without it at every step.
    encoded = []
    encode = painter.transformer.encode_text
    monkeypatch.setattr(painter.transformer, "encode_text", lambda *a: encoded.append(1) or encode(*a))
    for call in (
        lambda: painter.predictor(["a red circle"]),
        lambda: painter.sample(["a red circle"], sampler),
        lambda: painter("a red circle"),
    ):
        encoded.clear()
        call()
        assert encoded == [1]
    encoded.clear()
    painter("a red circle", use_text_cache=False)
    assert encoded == [1] * 4  # Mask-Predict-4's four steps
