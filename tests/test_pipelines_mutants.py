"""Pipelines: what the mutation run (issue 26, docs/testing.md) found no fast test reaching or
checking: NLVR2Pipeline on a tiny model folder with an NLVR2 head (random weights)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from test_pipelines_tiny import IMAGE, build_tiny_model
from xlxmert.errors import XLXMERTError
from xlxmert.models.heads import TaskModel, build_head, save_task_head
from xlxmert.pipelines.common import ImageEncoder, load_tokenizer_and_transformer
from xlxmert.pipelines.verify import NLVR2Pipeline, VerifyOutput


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
    _, transformer = load_tokenizer_and_transformer(folder)
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
    tokenizer, transformer = load_tokenizer_and_transformer(verify_dir)
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


def test_nlvr2_pipeline_errors(verify_dir):
    pipe = NLVR2Pipeline.from_pretrained(verify_dir)
    with pytest.raises(
        XLXMERTError,
        match=exactly("got 2 left images, 1 right images and 2 statements; give one pair per statement"),
    ):
        pipe([picture(0)] * 2, [picture(1)], STATEMENTS[:2])
    with pytest.raises(XLXMERTError, match=exactly("statement 1 is empty; give some words")):
        pipe([picture(0)], [picture(1)], [" "])
    _, transformer = load_tokenizer_and_transformer(verify_dir)
    vqa = build_head("vqa", transformer.config.hidden_size, ["yes", "no"])
    with pytest.raises(XLXMERTError, match=exactly("NLVR2Pipeline needs an nlvr2 head, got a vqa head")):
        NLVR2Pipeline(pipe.tokenizer, transformer, vqa, pipe.image_encoder)


@pytest.fixture(scope="module")
def painter(tmp_path_factory):
    from xlxmert.pipelines import PaintPipeline

    return PaintPipeline.from_pretrained(build_tiny_model(tmp_path_factory.mktemp("paint") / "model"))


@pytest.mark.parametrize(
    "options",
    [
        dict(sampler="mask-predict", steps=4),
        dict(sampler="random", steps=20, temperature=1.5, top_k=4, guidance_scale=2.0, noise=False),
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


def test_to_casts_the_transformer_and_the_generator(painter):
    assert painter.to(dtype=torch.float64) is painter
    try:
        assert next(painter.transformer.parameters()).dtype == torch.float64
        assert next(painter.generator.parameters()).dtype == torch.float64
    finally:
        painter.to(dtype=torch.float32)


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
