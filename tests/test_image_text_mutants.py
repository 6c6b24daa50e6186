"""Caption and answer pipelines and the helpers they share (common.py): what the mutation run
(issue 26, docs/testing.md) found no fast test reaching or checking. Tiny LXMERT+Grid folders
(random weights): a random X-LXMERT maps every cell to one visual word, blind to the image."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ANSWERS, GRID, IMAGE, D, build_tiny_model
from test_pipelines_mutants import exactly, picture
from xlxmert.data.images import pil_to_tensor
from xlxmert.errors import XLXMERTError
from xlxmert.models.heads import TaskModel, build_head, load_task_head, save_task_head
from xlxmert.pipelines.answer import AnswerPipeline
from xlxmert.pipelines.caption import CAPTION_SAMPLERS, CaptionPipeline
from xlxmert.pipelines.common import (
    ImageEncoder,
    images_to_tensor,
    load_core_components,
    model_device,
    tokenize_texts,
    visual_inputs,
)
from xlxmert.sampling.caption import CaptionTokens
from xlxmert.utils.model_folder import read_model_index


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("grid") / "model", variant="lxmert-grid")


def by_hand(folder, images, texts, head=None):
    """The transformer's (or a head's) logits for ``texts[b]`` about ``images[b]``, built by hand."""
    tokenizer, _, transformer = load_core_components(folder)
    if head is not None:
        head = load_task_head(folder, head, transformer)
    feats, _ = ImageEncoder.from_pretrained(folder, transformer.config.grid_size)(images)
    tokens = tokenizer(texts, max_length=transformer.config.max_text_length)
    with torch.no_grad():
        if head is not None:
            return TaskModel(transformer.eval(), head)(tokens.input_ids, tokens.attention_mask, feats)
        return transformer(tokens.input_ids, tokens.attention_mask, visual_feats=feats).qa_logits


QUESTIONS = ["what color is the circle", "is there a star"]
WHERE = ["left", "right", "up", "down", "top", "bottom", "middle"]


def test_answer_pipeline_is_the_qa_heads_softmax_for_each_question(grid_dir):
    pipe = AnswerPipeline.from_pretrained(grid_dir)
    assert pipe.head is None and pipe.answers == ANSWERS and not pipe.transformer.training
    images = [picture(0), picture(1)]
    out = pipe(images, QUESTIONS, top_k=10)  # more than the 5 answers: all of them
    probs = by_hand(grid_dir, images, QUESTIONS).softmax(-1)
    for b in range(2):
        assert len(out.top[b]) == len(ANSWERS)
        expected = sorted(zip(probs[b].tolist(), ANSWERS), reverse=True)
        assert [a for a, _ in out.top[b]] == [a for _, a in expected]
        assert np.allclose([p for _, p in out.top[b]], [p for p, _ in expected], atol=1e-6)
        assert out.answers[b] == expected[0][1] and out.probabilities[b] == out.top[b][0][1]
    assert len(pipe(images, QUESTIONS).top[0]) == 5
    one = pipe(picture(0), QUESTIONS)  # one image for every question
    expected = by_hand(grid_dir, [picture(0)] * 2, QUESTIONS).softmax(-1).max(-1).values
    assert np.allclose(one.probabilities, expected.tolist(), atol=1e-6)
    assert pipe(picture(0), QUESTIONS[0]).answers == one.answers[:1]  # one question as a string
    for n, questions in ((2, QUESTIONS[:1]), (3, QUESTIONS)):
        message = f"got {n} images for {len(questions)} questions; give one, or one each"
        with pytest.raises(XLXMERTError, match=exactly(message)):
            pipe([picture(i) for i in range(n)], questions)
    with pytest.raises(XLXMERTError, match=exactly("question 2 is empty; give some words")):
        pipe(images, [QUESTIONS[0], " "])


def test_answer_pipeline_answers_with_the_fine_tuned_heads(tmp_path):
    folder = build_tiny_model(tmp_path / "model", variant="lxmert-grid")
    tokenizer, _, transformer = load_core_components(folder)
    images = [picture(0), picture(1)]
    with pytest.raises(
        XLXMERTError,
        match=exactly(
            f"{folder} has no fine-tuned vqa head (heads/vqa/); "
            f"run xlxmert finetune --task vqa --model {folder} first"
        ),
    ):
        AnswerPipeline.from_pretrained(folder, head="vqa")
    with pytest.raises(
        XLXMERTError, match=exactly("unknown answer head 'nlvr2'; choose one of ('vqa', 'gqa')")
    ):
        AnswerPipeline.from_pretrained(folder, head="nlvr2")
    torch.manual_seed(2)
    gqa = build_head("gqa", transformer.config.hidden_size, WHERE)
    torch.nn.init.normal_(gqa.logit_fc[-1].weight, std=1.0)
    save_task_head(folder, gqa, transformer)
    pipe = AnswerPipeline.from_pretrained(folder)  # the only head: GQA
    assert pipe.head.config.task == "gqa" and pipe.answers == WHERE
    out = pipe(images, QUESTIONS)
    expected = by_hand(folder, images, QUESTIONS, "gqa").softmax(-1)
    assert np.allclose(out.probabilities, expected.max(-1).values.tolist(), atol=1e-6)
    assert [len(top) for top in out.top] == [5, 5]  # top_k's default, of 7 answers
    assert np.allclose(pipe(images, QUESTIONS, top_k=7).top[0][4][1], out.top[0][4][1])
    assert np.allclose([sum(p for _, p in top) for top in pipe(images, QUESTIONS, top_k=7).top], 1.0)
    with torch.no_grad():  # the VQA head comes with other transformer weights
        for param in transformer.parameters():
            param.add_(0.5 * torch.randn_like(param))
    vqa = build_head("vqa", transformer.config.hidden_size, ["yes", "no", "two"])
    torch.nn.init.normal_(vqa.logit_fc[-1].weight, std=1.0)
    save_task_head(folder, vqa, transformer)
    pipe = AnswerPipeline.from_pretrained(folder)  # VQA first
    assert pipe.head.config.task == "vqa" and pipe.answers == ["yes", "no", "two"]
    out = pipe(images, QUESTIONS, top_k=3)
    expected = by_hand(folder, images, QUESTIONS, "vqa").sigmoid()  # soft scores, not a softmax
    assert np.allclose(
        [[p for _, p in top] for top in out.top], expected.sort(-1, descending=True).values.tolist()
    )
    assert AnswerPipeline.from_pretrained(folder, head="gqa").answers == WHERE
    # A head answers without the pretraining QA head's answer list; an NLVR2 head cannot answer.
    del transformer.answers
    assert AnswerPipeline(tokenizer, transformer, pipe.image_encoder, pipe.head).answers == [
        "yes",
        "no",
        "two",
    ]
    nlvr2 = build_head("nlvr2", transformer.config.hidden_size)
    with pytest.raises(
        XLXMERTError, match=exactly("AnswerPipeline needs a vqa or gqa head, got a nlvr2 head")
    ):
        AnswerPipeline(tokenizer, transformer, pipe.image_encoder, nlvr2)
    with pytest.raises(
        XLXMERTError,
        match=exactly(
            "this model has no answer list (transformer/answers.json); pretrain it with question data"
        ),
    ):
        AnswerPipeline(tokenizer, transformer, pipe.image_encoder)
    transformer.answers = []
    with pytest.raises(XLXMERTError, match="this model has no answer list"):
        AnswerPipeline(tokenizer, transformer, pipe.image_encoder)
    transformer.answers = ["yes"]
    with pytest.raises(
        XLXMERTError,
        match=exactly(
            f"answers.json lists 1 answers but the QA head has {len(ANSWERS)}; "
            "the model folder is inconsistent"
        ),
    ):
        AnswerPipeline(tokenizer, transformer, pipe.image_encoder)


def test_caption_pipeline_captions_each_image_as_if_alone(grid_dir):
    pipe = CaptionPipeline.from_pretrained(grid_dir)
    images = [Image.new("RGB", (IMAGE, IMAGE), color) for color in ("red", "white")]
    for options in (
        dict(),
        dict(length="6", temperature=3.0, seed=3),  # each image draws from its own generator
        dict(sampler="gibbs", temperature=3.0, seed=3, num_captions=2),
        dict(sampler="gibbs", length=4, num_captions=2, temperature=3.0, seed=5),
    ):
        both = pipe(images, **options)
        alone = [pipe(image, **options) for image in images]
        assert both.captions == alone[0].captions + alone[1].captions
        # The scores read each image's own row (the two images' differ by 1e-4 here).
        assert np.allclose(both.scores, alone[0].scores + alone[1].scores, rtol=0, atol=2e-6)
        assert both.input_ids.dtype == torch.long
    seeded = [pipe(images[0], length=6, temperature=3.0, seed=s).captions[0] for s in range(4)]
    assert len(set(seeded)) > 1  # the seed reaches the sampler
    assert pipe(images[0], length=3).input_ids.shape[1] == pipe.transformer.config.max_text_length


def test_caption_pipeline_options_and_one_line_errors(grid_dir):
    pipe = CaptionPipeline.from_pretrained(grid_dir)
    image, limit = picture(0), pipe.transformer.config.max_text_length
    tokens = pipe.caption_tokens
    tok = pipe.tokenizer
    assert tokens == CaptionTokens(
        tok.cls_id, tok.sep_id, tok.mask_id, tok.pad_id, tuple(sorted(tok.special_ids))
    )
    assert pipe._prefix_ids("  ") == []
    ids = tok(["a red"]).input_ids[0].tolist()
    assert pipe._prefix_ids("a red") == ids[1 : ids.index(tok.sep_id)]
    out = pipe([image, picture(1)], prefix=["a red", "two"], length=6)
    assert out.captions[0].startswith("a red") and out.captions[1].startswith("two")
    for length in (1, limit - 2, str(limit - 2)):
        n = int(length)
        assert int(pipe(image, length=length).input_ids[0].ne(tok.pad_id).sum()) == n + 2
        assert int(pipe(image, length=length, sampler="gibbs").input_ids[0].ne(tok.pad_id).sum()) == n + 2
    for length in (0, limit - 1, "long", 2.0):
        with pytest.raises(
            XLXMERTError,
            match=exactly(
                f"caption length must be 'auto' or between 1 and {limit - 2} word pieces, got {length!r}"
            ),
        ):
            pipe(image, length=length)
    with pytest.raises(
        XLXMERTError, match=exactly("unknown caption sampler 'beam'; choose one of mask-predict, gibbs")
    ):
        pipe(image, sampler="beam")
    with pytest.raises(XLXMERTError, match=exactly("num_captions must be at least 1, got 0")):
        pipe(image, num_captions=0)
    with pytest.raises(
        XLXMERTError, match=exactly("got 1 prefixes for 2 images; give one, or one per image")
    ):
        pipe([image, image], prefix=["a"])
    long = " ".join(["red"] * limit)
    with pytest.raises(
        XLXMERTError, match=exactly(f"the prefix {long!r} is longer than the model's text limit; shorten it")
    ):
        pipe(image, prefix=long)
    with pytest.raises(
        XLXMERTError,
        match=exactly(
            "only 1 distinct captions of image 1 for 2 asked; "
            "let the length vary (length auto) or sample (temperature > 0)"
        ),
    ):
        pipe(image, sampler="gibbs", length=4, num_captions=2)
    # Gibbs at length auto: every length that fits after the longest prefix, the best kept first.
    out = pipe([image, picture(1)], prefix=["a", "a red"], sampler="gibbs", num_captions=3)
    lengths = [int(ids.ne(tok.pad_id).sum()) - 2 for ids in out.input_ids]
    longest = len(pipe._prefix_ids("a red"))
    for b in (0, 1):
        mine = lengths[3 * b : 3 * b + 3]
        assert len(set(mine)) == 3 and longest < min(mine) and max(mine) <= limit - 2
    assert out.scores[:3] == sorted(out.scores[:3], reverse=True)


def test_tokenize_texts_checks_and_warns(grid_dir):
    tokenizer, _, transformer = load_core_components(grid_dir)
    assert not transformer.training
    one = tokenize_texts(tokenizer, "a red circle", 20)
    assert (
        one.input_ids.shape == (1, 20)
        and one.input_ids.tolist() == tokenizer(["a red circle"], 20).input_ids.tolist()
    )
    with pytest.raises(XLXMERTError, match=exactly("no questions given")):
        tokenize_texts(tokenizer, [], 20, what="question")
    for texts in (["a red", " \n"], ["a red", None]):
        with pytest.raises(XLXMERTError, match=exactly("caption 2 is empty; give some words")):
            tokenize_texts(tokenizer, texts, 20)
    assert tokenize_texts(tokenizer, ["", "a red"], 20, allow_empty=True).input_ids.shape == (2, 20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tokenize_texts(tokenizer, ["a red circle", "zzz qqq"], 20)
        tokenize_texts(tokenizer, ["a red circle " * 5], 6)
    assert [str(w.message) for w in caught] == [
        "caption 2 has no word the model knows ('zzz qqq'); it reads as unknown words only",
        "caption 1 is longer than the model's limit of 4 word pieces; truncated to: 'a red c'",
    ]
    assert all(w.category is UserWarning for w in caught)
    assert not any(w.filename.endswith("common.py") for w in caught)  # the caller's line


def test_images_and_the_image_encoder(grid_dir, tmp_path):
    small = Image.new("L", (8, 8), 200)
    expected = pil_to_tensor(small.convert("RGB").resize((IMAGE, IMAGE), Image.BICUBIC))
    assert torch.equal(images_to_tensor(small, IMAGE), expected[None])
    square = picture(3)
    assert torch.equal(
        images_to_tensor([square, square.convert("L")], IMAGE)[1],
        pil_to_tensor(square.convert("L").convert("RGB")),
    )
    small.convert("RGB").save(tmp_path / "small.png")  # a file or an RGB image is resized too
    assert torch.equal(images_to_tensor([tmp_path / "small.png", small.convert("RGB")], IMAGE)[0], expected)
    assert torch.equal(images_to_tensor(small.convert("RGB"), IMAGE)[0], expected)
    square.save(tmp_path / "p.png")
    assert torch.equal(images_to_tensor(str(tmp_path / "p.png"), IMAGE), images_to_tensor(square, IMAGE))
    with pytest.raises(XLXMERTError, match=exactly("no images given")):
        images_to_tensor([], IMAGE)
    _, vocabulary, transformer = load_core_components(grid_dir)
    encoder = ImageEncoder.from_pretrained(grid_dir, transformer.config.grid_size)  # its vocabulary
    assert torch.equal(encoder.vocabulary.centroids, vocabulary.centroids)
    feats, ids = encoder([square, picture(4)])
    assert feats.shape == (2, GRID * GRID, D) and ids.dtype == torch.long
    assert torch.equal(ids, vocabulary.assign(feats).long())
    assert visual_inputs(transformer, feats, ids) == {"visual_feats": feats}
    encoder.extractor.to(torch.float64)  # the pixels follow the backbone's dtype
    wide, _ = encoder([square, picture(4)])
    assert wide.dtype == torch.float32 and torch.allclose(wide, feats, atol=1e-5)
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")
    # Each component must be of its kind, whatever the index maps it to.
    swapped = shutil.copytree(grid_dir, tmp_path / "swapped")
    index = json.loads((swapped / "model_index.json").read_text())
    encoder = ImageEncoder.from_pretrained
    for name, wrong, right, loaders in (
        ("backbone", "VisualVocabulary", "GridFeatureExtractor", [lambda f: encoder(f, GRID, vocabulary)]),
        ("vocabulary", "GridFeatureExtractor", "VisualVocabulary", [load_core_components, encoder]),
        ("tokenizer", "VisualVocabulary", "TextTokenizer", [load_core_components]),
    ):
        spec = index["components"][name]
        index["components"][name] = [spec[0], wrong]
        (swapped / "model_index.json").write_text(json.dumps(index))
        message = f"{swapped / 'model_index.json'}: the {name} class {wrong} is not a {right}"
        for load in loaders:
            with pytest.raises(XLXMERTError, match=exactly(message)):
                load(swapped) if load is not encoder else load(swapped, GRID)
        index["components"][name] = spec


def test_an_image_text_pipeline_moves_and_saves_every_component(tmp_path):
    folder = build_tiny_model(tmp_path / "model")
    pipe = CaptionPipeline.from_pretrained(folder)
    assert set(visual_inputs(pipe.transformer, torch.zeros(1), torch.zeros(1))) == {"visual_ids"}
    saved = pipe.save_pretrained(tmp_path / "copy")
    assert saved == tmp_path / "copy"
    index = read_model_index(saved)["components"]
    assert sorted(index) == ["backbone", "tokenizer", "transformer", "vocabulary"]
    again = CaptionPipeline.from_pretrained(saved)
    assert again(picture(0), length=4).captions == pipe(picture(0), length=4).captions
    # The index maps each component to its class (here subclasses, not the folder's defaults).
    parts = {
        "tokenizer": pipe.tokenizer,
        "backbone": pipe.image_encoder.extractor,
        "vocabulary": pipe.image_encoder.vocabulary,
        "transformer": pipe.transformer,
    }
    for part in parts.values():
        part.__class__ = type(f"My{type(part).__name__}", (type(part),), {})
    pipe.save_pretrained(tmp_path / "custom")
    index = json.loads((tmp_path / "custom" / "model_index.json").read_text())["components"]
    assert index == {name: [__name__, type(part).__name__] for name, part in parts.items()}
    answer = AnswerPipeline.from_pretrained(folder)
    answer.head = torch.nn.Linear(2, 2)
    assert answer.to(dtype=torch.float64) is answer and answer.device == torch.device("cpu")
    for module in (answer.transformer, answer.image_encoder.extractor, answer.head):
        assert next(module.parameters()).dtype == torch.float64


def test_caption_pipeline_hands_each_option_to_its_decoder(grid_dir, monkeypatch):
    from xlxmert.sampling.caption import CaptionSampler, MaskPredictCaptionDecoder

    pipe = CaptionPipeline.from_pretrained(grid_dir)
    image, limit = picture(0), pipe.transformer.config.max_text_length
    used = []  # the default decoder is Mask-Predict
    for cls, method in ((MaskPredictCaptionDecoder, "decode"), (CaptionSampler, "sample")):
        original = getattr(cls, method)

        def spy(self, *args, _original=original, **kwargs):
            used.append(type(self))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, method, spy)
    pipe(image)
    pipe(image, sampler="mask-predict", length=3)
    assert used == [MaskPredictCaptionDecoder] * 2
    monkeypatch.undo()
    for sampler in CAPTION_SAMPLERS:  # top-1 sampling is the argmax; the seed's default is 0
        hot = dict(sampler=sampler, length=6, temperature=3.0)
        assert pipe(image, top_k=1, **hot).captions == pipe(image, sampler=sampler, length=6).captions
        draws = [pipe(image, seed=s, **hot).captions[0] for s in range(4)]
        assert pipe(image, **hot).captions[0] == draws[0] and len(set(draws)) > 1
    gibbs = dict(sampler="gibbs", length=6, temperature=3.0, seed=1)
    sweeps = {n: pipe(image, sweeps=n, **gibbs).captions[0] for n in (1, 2, 3)}
    assert pipe(image, **gibbs).captions[0] == sweeps[2] and len(set(sweeps.values())) > 1
    # Gibbs: one draw per length at length auto, from the first length after the longest prefix to
    # the limit; at a fixed length, draw k of every image seeded with seed + k.
    calls = []
    sample = CaptionSampler.sample

    def spy(self, *args, **kwargs):
        calls.append(([g.initial_seed() for g in kwargs["generator"]], kwargs["num_words"]))
        return sample(self, *args, **kwargs)

    monkeypatch.setattr(CaptionSampler, "sample", spy)
    pipe([image, picture(1)], sampler="gibbs", length=5, num_captions=2, temperature=3.0, seed=5)
    assert calls == [([5, 5], 5), ([6, 6], 5)]
    calls.clear()
    longest = len(pipe._prefix_ids("a red"))
    lengths = list(range(longest + 1, limit - 1))
    out = pipe(image, prefix="a red", sampler="gibbs", num_captions=len(lengths), seed=2)
    assert calls == [([2], n) for n in lengths]
    assert sorted(int(ids.ne(pipe.tokenizer.pad_id).sum()) - 2 for ids in out.input_ids) == lengths
