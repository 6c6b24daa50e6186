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
