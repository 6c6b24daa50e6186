"""Caption decoders (mask-predict with the length chosen, Gibbs) and the caption metrics."""

from __future__ import annotations

import json

import pytest
import torch

from xlxmert.cli import main as cli_main
from xlxmert.data.shapes.captions import write_captions
from xlxmert.data.shapes.scene import sample_scene
from xlxmert.data.shapes.world import COLORS, PLACES, SHAPES
from xlxmert.data.tokenizer import TextTokenizer
from xlxmert.errors import XLXMERTError
from xlxmert.evaluation.metrics.captions import (
    bleu_cider,
    caption_metrics,
    grammar_family,
    has_dangling_article,
    has_repeated_word,
    in_grammar,
    names_objects,
    other_image_references,
)
from xlxmert.evaluation.metrics.tasks import caption_correctness
from xlxmert.evaluation.split import load_examples
from xlxmert.models.masking import uniform_text_mask
from xlxmert.models.transformer import XLxmertConfig, XLxmertForPreTraining
from xlxmert.sampling.caption import (
    CaptionSampler,
    CaptionTokens,
    MaskPredictCaptionDecoder,
    caption_scores,
)
from xlxmert.utils.seeding import numpy_rng, torch_generator

torch.set_num_threads(1)

CLS, SEP, MASK, PAD, UNK = 2, 3, 4, 0, 1
SPECIAL = (PAD, UNK, CLS, SEP, MASK)
TOKENS = CaptionTokens(CLS, SEP, MASK, PAD, SPECIAL)
V, L = 30, 20


def table_model(seed: int = 0, prefer_length: int | None = None):
    """A fake model: fixed per-position logits that love the special tokens; log p(match) peaks
    at ``prefer_length`` words. Records every query."""
    table = torch.randn(L, V, generator=torch_generator(seed))
    table[:, list(SPECIAL)] += 100.0
    queries = []

    def predict_rows(input_ids, attention_mask, rows):
        queries.append((input_ids.clone(), rows))
        words = attention_mask.sum(1) - 2
        match = (
            torch.zeros(len(input_ids)) if prefer_length is None else -(words - prefer_length).abs().float()
        )
        return table[None, : input_ids.shape[1]].expand(input_ids.shape[0], -1, -1), match

    return predict_rows, queries


def _row_structure(ids: torch.Tensor, prefixes, lengths):
    for row, prefix, n in zip(ids, prefixes, lengths):
        assert row[0] == CLS and row[n + 1] == SEP and (row[n + 2 :] == PAD).all()
        assert row[1 : 1 + len(prefix)].tolist() == list(prefix)
        assert not any(w in SPECIAL for w in row[1 : n + 1].tolist())


@pytest.mark.parametrize("order", ["confidence", "left-to-right"])
def test_mask_predict_keeps_prefix_and_never_writes_cls_sep_or_special_tokens(order):
    predict_rows, queries = table_model()
    prefixes = [[7, 8], []]
    out = MaskPredictCaptionDecoder(order=order).decode(predict_rows, prefixes, L, TOKENS, lengths=[6])
    _row_structure(out.input_ids, prefixes, [6, 6])
    for q, rows in queries:  # every query: [CLS] first, the prefix in place, one [SEP]
        assert (q[:, 0] == CLS).all() and ((q == SEP).sum(1) == 1).all()
        assert all(row[1:3].tolist() == [7, 8] for row in q[rows == 0])
    assert out.scores.shape == (2,) and torch.isfinite(out.scores).all()


def test_confidence_order_fills_the_most_confident_position_first_and_left_to_right_the_leftmost():
    table = torch.zeros(L, V)
    table[:, 10] = torch.arange(L).float()  # later positions are more confident
    seen = []

    def predict_rows(input_ids, attention_mask, rows):
        seen.append((input_ids[0] == MASK).nonzero().flatten().tolist())
        return table[None, : input_ids.shape[1]].expand(len(input_ids), -1, -1), torch.zeros(len(input_ids))

    decoder = MaskPredictCaptionDecoder(refine_steps=0)
    decoder.decode(predict_rows, [[]], L, TOKENS, lengths=[4])
    assert seen[:4] == [[1, 2, 3, 4], [1, 2, 3], [1, 2], [1]]  # position 4 first, then 3, 2, 1
    seen.clear()
    MaskPredictCaptionDecoder(order="left-to-right", refine_steps=0).decode(
        predict_rows, [[]], L, TOKENS, lengths=[4]
    )
    assert seen[:4] == [[1, 2, 3, 4], [2, 3, 4], [3, 4], [4]]


def test_length_auto_picks_the_length_the_score_prefers_and_a_fixed_length_is_kept():
    predict_rows, _ = table_model(prefer_length=5)
    prefixes = [[9], [9, 9, 9]]
    out = MaskPredictCaptionDecoder().decode(predict_rows, prefixes, L, TOKENS)
    assert (out.attention_mask.sum(1) - 2).tolist() == [5, 5]
    _row_structure(out.input_ids, prefixes, [5, 5])
    predict_rows, _ = table_model(prefer_length=12)
    out = MaskPredictCaptionDecoder().decode(predict_rows, prefixes, L, TOKENS)
    assert (out.attention_mask.sum(1) - 2).tolist() == [12, 12]
    out = MaskPredictCaptionDecoder().decode(predict_rows, prefixes, L, TOKENS, lengths=[7])
    assert (out.attention_mask.sum(1) - 2).tolist() == [7, 7]
    # N captions per image, best first, distinct, from different lengths
    out = MaskPredictCaptionDecoder(beam=3).decode(predict_rows, [[]], L, TOKENS, num_captions=3)
    assert (out.attention_mask.sum(1) - 2).tolist() == [12, 11, 13] or (out.attention_mask.sum(1) - 2)[
        0
    ] == 12
    assert out.scores[0] >= out.scores[1] >= out.scores[2]
    with pytest.raises(XLXMERTError, match="distinct"):
        MaskPredictCaptionDecoder().decode(predict_rows, [[]], L, TOKENS, lengths=[7], num_captions=2)
    with pytest.raises(XLXMERTError, match="length"):
        MaskPredictCaptionDecoder().decode(predict_rows, [[9, 9, 9]], L, TOKENS, lengths=[3])


def test_refinement_rewrites_a_word_the_model_prefers_when_it_alone_is_masked():
    # Fill sees several masks and writes word 10 everywhere; alone-masked, position 2 prefers 11
    # when its neighbours are filled. Refinement must find it; without refinement it stays 10.
    def predict_rows(input_ids, attention_mask, rows):
        logits = torch.zeros(len(input_ids), input_ids.shape[1], V)
        logits[..., 10] = 1.0
        alone = (input_ids == MASK).sum(1) == 1
        logits[alone, 2, 11] = 5.0
        return logits, torch.zeros(len(input_ids))

    plain = MaskPredictCaptionDecoder(refine_steps=0).decode(predict_rows, [[]], L, TOKENS, lengths=[3])
    refined = MaskPredictCaptionDecoder(refine_steps=8).decode(predict_rows, [[]], L, TOKENS, lengths=[3])
    assert plain.input_ids[0, 1:4].tolist() in ([10, 10, 10], [10, 11, 10])
    assert refined.input_ids[0, 1:4].tolist() == [10, 11, 10]
    assert refined.scores[0] > plain.scores[0] or plain.input_ids[0, 2] == 11


@pytest.mark.parametrize("decoder", ["mask-predict", "gibbs"])
def test_each_decoder_is_deterministic_under_a_seed(decoder):
    predict_rows, _ = table_model(seed=3)

    def run(seed):
        gens = [torch_generator(seed), torch_generator(seed)]
        if decoder == "mask-predict":
            # refine_steps 0: refinement rewrites argmax words and may undo the sampled ones
            return (
                MaskPredictCaptionDecoder(temperature=5.0, refine_steps=0)
                .decode(predict_rows, [[], [7]], L, TOKENS, lengths=[8], generator=gens)
                .input_ids
            )
        return (
            CaptionSampler(sweeps=2, temperature=5.0)
            .sample(
                lambda ids, mask: predict_rows(ids, mask, None)[0],
                [[], [7]],
                num_words=8,
                max_length=L,
                cls_id=CLS,
                sep_id=SEP,
                mask_id=MASK,
                pad_id=PAD,
                special_ids=SPECIAL,
                generator=gens,
            )
            .input_ids
        )

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_caption_scores_rank_the_models_preferred_caption_first():
    predict_rows, _ = table_model(seed=1)
    best = MaskPredictCaptionDecoder().decode(predict_rows, [[]], L, TOKENS, lengths=[5]).input_ids
    worse = best.clone()
    worse[0, 3] = 29 if best[0, 3] != 29 else 28
    free = (best != PAD) & (best != CLS) & (best != SEP)
    scores = caption_scores(
        predict_rows, torch.cat([best, worse]), free.repeat(2, 1), torch.zeros(2).long(), TOKENS
    )
    assert scores[0] > scores[1]


# --- metrics ---------------------------------------------------------------------------------
def test_grammar_accepts_every_caption_the_world_writes(tiny_shapes):
    for split in ("train", "test", "compositional"):
        for ex in load_examples(tiny_shapes, split):
            for caption in ex.captions:
                assert in_grammar(caption), caption
    rng = numpy_rng(7)
    families = set()
    for i in range(300):  # more scenes than the fixture holds, every family
        scene = sample_scene(rng, "test", i)
        for caption in write_captions(scene, rng):
            assert in_grammar(caption), caption
            families.add(grammar_family(caption))
    assert families == {"listing", "relation", "position", "count", "place"}


@pytest.mark.parametrize(
    "broken",
    [
        "a a red circle at night",
        "a red circle and a blue square at",
        "a red circle, a blue square at night",
        "an red circle at night",
        "a orange star in the snow",
        "a circle",
        "five red circles at night",
        "two red circles, a blue square, a green star and a red star in the fog",
        "a red circle to the left of the blue square",
        "a blue circle, a red circle and a a triangle at",
        "a green circle, a purple diamond and a red the sand",
        "where is this",
        "A red circle at night",
        "a red circle at night night",
        "",
    ],
)
def test_grammar_rejects_broken_captions(broken):
    assert not in_grammar(broken)


def test_repeated_words_and_dangling_articles():
    assert has_repeated_word("a blue circle and a a triangle") and has_repeated_word("on the sand sand")
    assert not has_repeated_word("a red circle and a blue square at night")
    assert has_dangling_article("a red circle and a") and has_dangling_article("a circle and a at night")
    assert has_dangling_article("a, a circle") and not has_dangling_article("a red circle in the snow")


def test_metric_oracle_and_mismatched(tiny_shapes):
    examples = load_examples(tiny_shapes, "test")
    refs = [list(ex.captions) for ex in examples]
    scenes = [ex.scene for ex in examples]
    own = caption_metrics([r[0] for r in refs], refs, scenes)
    assert own["bleu4"] == pytest.approx(1.0) and own["facts_true"] == 1.0 and own["all_true"] == 1.0
    assert own["outside_grammar"] == own["repeated_word"] == own["dangling_article"] == 0.0
    assert own["two_objects_named"] == 1.0 and own["n_two_objects"] > 0
    other = caption_metrics(other_image_references(refs, 0), refs, scenes)
    assert other["bleu4"] < 0.5 and other["cider_d"] < 0.5 * own["cider_d"]
    assert other["facts_true"] < 0.6 and other["two_objects_named"] < 0.5
    assert other["outside_grammar"] == 0.0  # another image's caption is still in the grammar
    # chance of facts: measured the same way as the metric, from the fact checker directly
    assert other["facts_true"] == caption_correctness(other_image_references(refs, 0), scenes)["facts_true"]
    assert other_image_references(refs, 0) == other_image_references(refs, 0)
    with pytest.raises(XLXMERTError, match="reference"):
        bleu_cider(["a"], [[]])
    with pytest.raises(XLXMERTError, match="one of each"):
        caption_metrics(["a"], refs, scenes)


def test_names_objects_needs_each_object_with_its_colour(tiny_shapes):
    ex = next(e for e in load_examples(tiny_shapes, "test") if len(e.scene.objects) == 2)
    a, b = ex.scene.objects
    both = f"a {a.color} {a.shape} and a {b.color} {b.shape} in the snow"
    assert names_objects(both, ex.scene)
    swapped = f"a {b.color} {a.shape} and a {a.color} {b.shape} in the snow"
    assert names_objects(swapped, ex.scene) == (
        (a.color, a.shape) == (b.color, b.shape) or a.color == b.color
    )
    assert not names_objects(f"a {a.shape} and a {b.shape} in the snow", ex.scene)


# --- pipeline and CLI --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from conftest import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_caption_model"))


@pytest.fixture(scope="module")
def images(model_dir, tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("caption_images")
    paths = []
    for color in ("red", "blue"):
        Image.new("RGB", (16, 16), color).save(folder / f"{color}.png")
        paths.append(str(folder / f"{color}.png"))
    return paths


@pytest.mark.parametrize("sampler", ["mask-predict", "gibbs"])
def test_pipeline_returns_scored_captions_best_first_with_the_prefix(model_dir, images, sampler):
    from xlxmert.pipelines import CaptionPipeline

    pipe = CaptionPipeline.from_pretrained(model_dir)
    out = pipe(images, prefix="a", sampler=sampler, num_captions=2, seed=0)
    assert len(out.captions) == len(out.scores) == 4 and all(isinstance(s, float) for s in out.scores)
    assert out.scores[0] >= out.scores[1] and out.scores[2] >= out.scores[3]
    assert out.captions[0] != out.captions[1] and all(c.startswith("a") for c in out.captions)
    assert (out.input_ids[:, 0] == pipe.tokenizer.cls_id).all()
    again = pipe(images, prefix="a", sampler=sampler, num_captions=2, seed=0)
    assert again.captions == out.captions and again.scores == out.scores
    fixed = pipe(images[:1], sampler=sampler, length=5)
    assert int(fixed.input_ids[0].ne(pipe.tokenizer.pad_id).sum()) == 7
    with pytest.raises(XLXMERTError, match="length"):
        pipe(images[:1], sampler=sampler, length="long")
    with pytest.raises(XLXMERTError, match="sampler"):
        pipe(images[:1], sampler="beam")


def test_cli_captions_several_images_with_scores(model_dir, images, capsys):
    assert cli_main(["caption", *images, "--model", str(model_dir), "--num-captions", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and [line.split("\t")[0] for line in lines] == [images[0]] * 2 + [images[1]] * 2
    assert all(len(line.split("\t")) == 3 and float(line.split("\t")[1]) < 0 for line in lines)
    assert cli_main(["caption", images[0], "--model", str(model_dir), "--sampler", "gibbs"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1
    assert cli_main(["caption", images[0], "--model", str(model_dir), "--length", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "length" in err[0]


def test_cli_evaluate_captions_writes_the_table(model_dir, tiny_shapes, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["evaluate-captions", "--model", str(model_dir), "--data", str(tiny_shapes), "--n", "6"]
    assert cli_main([*argv, "--seed", "0", "1", "--out", str(out), "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["n"] == 6 and results["seeds"] == [0, 1]
    chance = results["rows"]["Control: a reference caption of another image (chance)"]
    assert len(chance["seeds"]) == 2 and chance["mean"]["outside_grammar"] == 0.0
    assert "BLEU-4" in (out / "table.md").read_text() and "BLEU-4" in capsys.readouterr().out


# --- a tiny trained model beats chance ---------------------------------------------------------
def _scene_ids(scene, grid: int = 4) -> torch.Tensor:
    """Visual words of a scene: the place's background word, each object's colour×shape word in
    the cells its centre falls in (a hand-made stand-in for backbone + vocabulary)."""
    ids = torch.full((grid, grid), list(PLACES).index(scene.place))
    for o in scene.objects:
        r, c = min(int(o.cy * grid), grid - 1), min(int(o.cx * grid), grid - 1)
        ids[r, c] = 4 + COLORS_INDEX[o.color] * len(SHAPES) + SHAPES.index(o.shape)
    return ids.flatten()


COLORS_INDEX = {c: i for i, c in enumerate(COLORS)}


def test_a_tiny_trained_model_writes_captions_truer_than_chance():
    rng = numpy_rng(0)
    scenes = []
    while len(scenes) < 300:  # one-object scenes: what a tiny model learns in seconds
        scene = sample_scene(rng, "train", len(scenes))
        if len(scene.objects) == 1:
            scenes.append(scene)
    captions = [write_captions(s, rng) for s in scenes]
    tok = TextTokenizer.train([c for caps in captions for c in caps], vocab_size=120)
    grids = torch.stack([_scene_ids(s) for s in scenes])
    config = XLxmertConfig.from_preset(
        "shapes-64",
        vocab_size=tok.vocab_size,
        hidden_size=64,
        num_attention_heads=2,
        intermediate_size=128,
        l_layers=1,
        r_layers=1,
        x_layers=1,
        grid_size=4,
        num_clusters=4 + len(COLORS) * len(SHAPES),
        feature_dim=8,
        dropout=0.0,
    )
    torch.manual_seed(0)
    model = XLxmertForPreTraining(config, torch.randn(config.num_clusters, 8))
    train, test = range(0, 250), range(250, 300)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch_generator(0)
    for _ in range(250):
        batch = torch.randint(0, len(train), (32,), generator=gen)
        texts = [captions[i][int(torch.randint(5, (1,), generator=gen))] for i in batch.tolist()]
        enc = tok(texts, max_length=config.max_text_length)
        masked, labels = uniform_text_mask(
            enc.input_ids, enc.attention_mask, tok.special_ids, tok.mask_id, gen
        )
        out = model(masked, enc.attention_mask, visual_ids=grids[batch])
        loss = torch.nn.functional.cross_entropy(
            out.mlm_logits.flatten(0, 1), labels.flatten(), ignore_index=-100
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    tokens = CaptionTokens(tok.cls_id, tok.sep_id, tok.mask_id, tok.pad_id, tuple(sorted(tok.special_ids)))
    test_grids = grids[list(test)]

    def predict_rows(input_ids, attention_mask, rows):
        with torch.no_grad():
            o = model(input_ids, attention_mask, visual_ids=test_grids[rows])
        return o.mlm_logits, o.itm_logits.float().log_softmax(-1)[:, 1]

    out = MaskPredictCaptionDecoder().decode(predict_rows, [[]] * len(test), config.max_text_length, tokens)
    written = tok.batch_decode(out.input_ids)
    truth = [scenes[i] for i in test]
    model_facts = caption_correctness(written, truth)["facts_true"]
    chance = caption_correctness(other_image_references([captions[i] for i in test], 0), truth)["facts_true"]
    assert model_facts > chance + 0.2, (model_facts, chance, written[:5])


def test_uniform_text_mask_masks_from_one_word_to_the_whole_caption():
    ids = torch.tensor([[CLS, 10, 11, 12, 13, SEP, PAD]] * 400)
    masked, labels = uniform_text_mask(ids, (ids != PAD).long(), SPECIAL, MASK, torch_generator(0))
    counts = (masked == MASK).sum(1)
    assert set(counts.tolist()) == {1, 2, 3, 4}  # every share, the whole caption included
    assert (masked[:, 0] == CLS).all() and (masked[:, 5] == SEP).all() and (masked[:, 6] == PAD).all()
    assert torch.equal(labels != -100, masked == MASK) and torch.equal(
        labels[labels != -100], ids[labels != -100]
    )
    from xlxmert.training.pretrain import PretrainConfig

    assert PretrainConfig(steps=1, batch_size=1, lr=1e-3, text_masking="uniform").text_masking == "uniform"
    with pytest.raises(XLXMERTError, match="text_masking"):
        PretrainConfig(steps=1, batch_size=1, lr=1e-3, text_masking="all")
