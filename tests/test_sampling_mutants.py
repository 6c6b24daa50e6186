"""Samplers and caption decoders: what the mutation run (issue 26, docs/testing.md) found untested
in the options' checks, defaults and one-line errors, the Gibbs sampler's starting grid, the
feature mode and the tie order of Mask-Predict. Expected values are fixed by the definitions."""

from __future__ import annotations

import re

import pytest
import torch

from test_sampling import CLS, MASK, PAD, SEP, SPECIAL, L, V
from xlxmert.errors import XLXMERTError
from xlxmert.sampling import (
    CaptionSampler,
    CaptionTokens,
    MaskPredictCaptionDecoder,
    MaskPredictSampler,
    RandomSampler,
    get_sampler,
)
from xlxmert.sampling.caption import caption_scores, word_log_probs
from xlxmert.utils.seeding import torch_generator


def exactly(message: str) -> str:
    return "^" + re.escape(message) + "$"


TOKENS = CaptionTokens(CLS, SEP, MASK, PAD, tuple(SPECIAL))


def gibbs(sampler: CaptionSampler, predict, prefixes, num_words=4, **kwargs):
    return sampler.sample(
        predict,
        prefixes,
        num_words=num_words,
        max_length=L,
        cls_id=CLS,
        sep_id=SEP,
        mask_id=MASK,
        pad_id=PAD,
        special_ids=kwargs.pop("special_ids", SPECIAL),
        generator=torch_generator(0),
        **kwargs,
    )


def table_predict(seed: int = 0, vocab: int = V):
    """A text model whose logits depend on the position only; records its queries."""
    table = torch.randn(L, vocab, generator=torch_generator(seed))
    queries = []

    def predict(input_ids, attention_mask):
        queries.append(input_ids.clone())
        return table[None].expand(input_ids.shape[0], -1, -1)

    return predict, table, queries


# --------------------------------------------------------------------------- CaptionSampler (Gibbs)
def test_caption_sampler_options_defaults_and_errors():
    sampler = CaptionSampler()
    assert (sampler.sweeps, sampler.temperature, sampler.top_k) == (2, 0.0, None)
    assert CaptionSampler(sweeps=1).sweeps == 1
    assert CaptionSampler(temperature=1.0, top_k=3).top_k == 3
    with pytest.raises(XLXMERTError, match=exactly("caption sampling needs at least 1 sweep, got 0")):
        CaptionSampler(sweeps=0)
    with pytest.raises(XLXMERTError, match=exactly("temperature must be >= 0 (0 = argmax), got -1.0")):
        CaptionSampler(temperature=-1.0)
    with pytest.raises(
        XLXMERTError, match=exactly("top-k sampling needs a temperature > 0 (temperature 0 means argmax)")
    ):
        CaptionSampler(top_k=3)


def test_gibbs_starts_from_masks_and_keeps_each_step():
    predict, table, queries = table_predict()
    out = gibbs(CaptionSampler(sweeps=1), predict, [[], [7], []], num_words=4)
    assert out.intermediates == []  # only when asked for
    assert out.attention_mask.dtype == torch.long and out.attention_mask.sum(1).tolist() == [6, 6, 6]
    # The first query: [CLS], every word position [MASK] (the prefix aside), [SEP].
    assert queries[0][:, :6].tolist() == [
        [CLS, MASK, MASK, MASK, MASK, SEP],
        [CLS, 7, MASK, MASK, MASK, SEP],
        [CLS, MASK, MASK, MASK, MASK, SEP],
    ]
    queries.clear()
    kept = gibbs(CaptionSampler(sweeps=1), predict, [[], [7]], num_words=4, return_intermediates=True)
    assert len(kept.intermediates) == len(queries) == 4
    assert torch.equal(kept.intermediates[-1], kept.input_ids)
    assert [int((step[0] == MASK).sum()) for step in kept.intermediates] == [3, 2, 1, 0]


def test_gibbs_top_k_and_special_ids_beyond_the_vocabulary():
    predict, table, _ = table_predict()
    best = table[1:5, 5:].argmax(-1) + 5  # argmax among the non-special ids
    hot = gibbs(CaptionSampler(temperature=50.0, top_k=1), predict, [[]], num_words=4)
    assert hot.input_ids[0, 1:5].tolist() == best.tolist()  # top-1 is argmax at any temperature
    # A special id the model has no logit for (the tokenizer's, beyond the head) is skipped.
    out = gibbs(CaptionSampler(), predict, [[]], num_words=4, special_ids=[*SPECIAL, V, V + 5])
    assert out.input_ids[0, 1:5].tolist() == best.tolist()


# --------------------------------------------------------------------------- mask-predict decoder
def test_mask_predict_decoder_options_defaults_and_errors():
    decoder = MaskPredictCaptionDecoder()
    assert (decoder.order, decoder.beam, decoder.refine_steps) == ("confidence", 4, 0)
    assert (decoder.match_weight, decoder.temperature, decoder.top_k, decoder.chunk) == (1.0, 0.0, None, 256)
    assert MaskPredictCaptionDecoder(beam=1, chunk=1).beam == 1
    assert MaskPredictCaptionDecoder(temperature=1.0, top_k=2).top_k == 2
    with pytest.raises(
        XLXMERTError, match=exactly("unknown fill order 'random'; choose one of confidence, left-to-right")
    ):
        MaskPredictCaptionDecoder(order="random")
    for bad in ({"beam": 0}, {"refine_steps": -1}, {"chunk": 0}):
        with pytest.raises(XLXMERTError, match=exactly("beam and chunk must be >= 1 and refine_steps >= 0")):
            MaskPredictCaptionDecoder(**bad)
    with pytest.raises(XLXMERTError, match=exactly("temperature must be >= 0 (0 = argmax), got -0.5")):
        MaskPredictCaptionDecoder(temperature=-0.5)
    with pytest.raises(
        XLXMERTError, match=exactly("top-k sampling needs a temperature > 0 (temperature 0 means argmax)")
    ):
        MaskPredictCaptionDecoder(top_k=2)


def test_fill_returns_each_rows_mean_log_probability_of_its_written_words():
    table = torch.randn(L, V, generator=torch_generator(1))

    def predict_rows(input_ids, attention_mask, rows):
        n, width = input_ids.shape
        return table[:width][None].expand(n, -1, -1), torch.zeros(n)

    blank = TOKENS.blank([[7, 8, 9], []], [4, 4], L)  # one mask in row 0, four in row 1
    filled, mean_lp = MaskPredictCaptionDecoder().fill(
        predict_rows, blank, torch.arange(2), TOKENS, [None] * 2
    )
    best = TOKENS.log_probs(table).max(-1).values  # position-only logits: each write is the best word
    assert (filled[:, 1:5] != MASK).all()
    assert torch.allclose(mean_lp, torch.stack([best[4], best[1:5].mean()]))
    hot, _ = MaskPredictCaptionDecoder(temperature=50.0, top_k=1).fill(
        predict_rows, blank, torch.arange(2), TOKENS, [torch_generator(0)] * 2
    )
    assert torch.equal(hot, filled)  # top-1 is argmax at any temperature


def test_left_to_right_fill_writes_each_rows_leftmost_mask():
    table = torch.randn(L, V, generator=torch_generator(2))
    queries = []

    def predict_rows(input_ids, attention_mask, rows):
        queries.append(input_ids.clone())
        n, width = input_ids.shape
        return table[:width][None].expand(n, -1, -1), torch.zeros(n)

    blank = TOKENS.blank([[7, 8, 9], [7]], [5, 5], L)  # masks at 4-5 and at 2-5
    MaskPredictCaptionDecoder(order="left-to-right").fill(
        predict_rows, blank, torch.arange(2), TOKENS, [None] * 2
    )
    assert [(q[:, 1:6] == MASK).tolist() for q in queries[:2]] == [
        [[False, False, False, True, True], [False, True, True, True, True]],
        [[False, False, False, False, True], [False, False, True, True, True]],
    ]


# --------------------------------------------------------------------------- visual samplers
def test_sampler_repr_names_its_class_and_settings():
    assert repr(get_sampler("random", steps=80, temperature=1.0, top_k=5)) == (
        "RandomSampler(steps=80, temperature=1.0, anneal=False, top_k=5)"
    )


def test_random_plans_one_permutation_per_round():
    gens = [torch_generator(0), torch_generator(1)]
    assert RandomSampler(steps=10).plan(2, 64, gens).shape == (2, 64)
    assert RandomSampler().plan(2, 64, gens).shape == (2, 64)
    assert RandomSampler(steps=65).plan(2, 64, gens).shape == (2, 128)


def test_mask_predict_remasks_a_single_cell_and_breaks_ties_in_raster_order():
    calls = []

    def flat(ids, mask):  # every cell equally confident
        calls.append(mask.clone())
        return torch.zeros(ids.shape[0], ids.shape[1], 8)

    out = MaskPredictSampler(steps=4).sample(flat, 1, 4, torch_generator(0), return_intermediates=True)
    assert [int(u.sum()) for u in out.updated] == [4, 3, 2, 1]  # the last pass re-masks one cell
    calls.clear()
    MaskPredictSampler(steps=4).sample(flat, 2, 64, torch_generator(0))
    assert [m[0].nonzero().flatten().tolist() for m in calls[1:]] == [
        list(range(48)),
        list(range(32)),
        list(range(16)),
    ]


def test_feature_mode_defaults_errors_and_random_order():
    D = 3

    def predict(feats, mask):
        return (
            torch.arange(feats.shape[1], dtype=torch.float)[None, :, None].expand(feats.shape[0], -1, D) + 1
        )

    out = get_sampler("mask-predict").sample_features(predict, 2, 16, D, torch_generator(0))
    assert out.intermediates == [] and out.updated == []  # only when asked for
    with pytest.raises(
        XLXMERTError,
        match=exactly("temperature / top-k sampling needs id logits; LXMERT+Grid regresses features"),
    ):
        get_sampler("mask-predict", temperature=1.0).sample_features(predict, 2, 16, D)
    with pytest.raises(XLXMERTError, match=exactly("predict returned (2, 16, 3); expected [2, 16, 4]")):
        get_sampler("mask-predict").sample_features(predict, 2, 16, 4)
    # Random's order in feature mode comes from the generator: seeded, one per row.
    first = RandomSampler().sample_features(predict, 2, 16, D, torch_generator(5), return_intermediates=True)
    again = RandomSampler().sample_features(predict, 2, 16, D, torch_generator(5), return_intermediates=True)
    order = torch.stack([u.float().argmax(1) for u in first.updated], 1)
    assert torch.equal(torch.stack(first.updated), torch.stack(again.updated))
    assert sorted(order[0].tolist()) == list(range(16)) and not torch.equal(order[0], order[1])


def position_rows(table: torch.Tensor, calls: list | None = None, match: float = -0.7):
    """``predict_rows`` with logits that depend on the position only and a constant log p(match)."""

    def predict_rows(input_ids, attention_mask, rows):
        if calls is not None:
            calls.append(len(input_ids))
        n, width = input_ids.shape
        return table[:width][None].expand(n, -1, -1), torch.full((n,), match)

    return predict_rows


def test_decode_lengths_scores_chunks_and_errors():
    table = torch.randn(L, V, generator=torch_generator(3))
    rows = position_rows(table)
    # The shortest and the longest lengths the text limit allows are candidates.
    for n in (2, L - 2):
        out = MaskPredictCaptionDecoder().decode(rows, [[7]], L, TOKENS, lengths=[n])
        assert int(out.attention_mask.sum()) == n + 2
        # The score is caption_scores with the decoder's match weight (here 1: lp - 0.7).
        free = (out.input_ids != MASK) & (torch.arange(L) >= 2) & (torch.arange(L) <= n)
        lp = TOKENS.log_probs(table).gather(1, out.input_ids[0][:, None])[:, 0]
        assert torch.allclose(out.scores, (lp[free[0]].mean() - 0.7)[None])
    with pytest.raises(
        XLXMERTError,
        match=exactly(
            "no caption length fits: the prefix has 3 word pieces and the model reads at most 18; "
            "ask for a length between 4 and 18"
        ),
    ):
        MaskPredictCaptionDecoder().decode(rows, [[7, 8, 9]], L, TOKENS, lengths=[3])
    calls = []
    chunked = MaskPredictCaptionDecoder(chunk=2, refine_steps=2).decode(
        position_rows(table, calls), [[7], []], L, TOKENS, lengths=[3, 4, 5]
    )
    assert max(calls) == 2  # every model call holds at most `chunk` rows
    assert chunked.input_ids.shape == (2, L)


def test_decode_samples_one_caption_per_draw_and_names_too_few_distinct_ones():
    table = torch.randn(L, V, generator=torch_generator(4))
    rows = position_rows(table)
    sampled = MaskPredictCaptionDecoder(temperature=3.0).decode(
        rows, [[]], L, TOKENS, lengths=[4], num_captions=2, generator=torch_generator(0)
    )
    assert len({tuple(ids) for ids in sampled.input_ids.tolist()}) == 2  # two draws at one length
    with pytest.raises(
        XLXMERTError,
        match=exactly(
            "only 1 distinct captions of image 1 for 2 asked; "
            "let the length vary (length auto) or sample (temperature > 0)"
        ),
    ):  # top-1 sampling draws the argmax caption twice
        MaskPredictCaptionDecoder(temperature=3.0, top_k=1).decode(
            rows, [[]], L, TOKENS, lengths=[4], num_captions=2, generator=torch_generator(0)
        )


def test_decode_breaks_ties_towards_the_shortest_length():
    flat = position_rows(torch.zeros(L, V), match=0.0)  # every caption scores the same
    out = MaskPredictCaptionDecoder().decode(flat, [[7]], L, TOKENS)
    assert int(out.attention_mask[0].sum()) == 2 + 2  # the first length, prefix + one word


def test_refine_rewrites_a_word_that_gains_less_than_one_nat():
    table = torch.full((L, V), -50.0)
    table[:, 10] = 0.0  # the word written first
    table[2, 11] = 0.5  # at position 2 the model prefers word 11, by half a nat
    ids = TOKENS.blank([[]], [3], L)
    ids[0, 1:4] = 10
    free = TOKENS.blank([[]], [3], L) == MASK
    refined = MaskPredictCaptionDecoder(refine_steps=3).refine(
        position_rows(table), ids, free, torch.arange(1), TOKENS
    )
    assert refined[0, 1:4].tolist() == [10, 11, 10]


def test_sampler_config_checks_and_merges():
    from xlxmert.sampling import SamplerConfig

    assert SamplerConfig(steps=1).steps == 1 and SamplerConfig(steps=1024).steps == 1024
    for bad, message in [
        (
            {"name": "zigzag"},
            "unknown sampler 'zigzag'; choose one of tl-br, random, easy-first, mask-predict",
        ),
        ({"temperature": -1.0}, "temperature must be a finite number >= 0 (0 = argmax), got -1.0"),
        ({"temperature": float("inf")}, "temperature must be a finite number >= 0 (0 = argmax), got inf"),
        ({"steps": 0}, "steps must be in [1, 1024], got 0"),
        ({"steps": 1025}, "steps must be in [1, 1024], got 1025"),
        ({"top_k": 0}, "top_k must be at least 1, got 0"),
    ]:
        with pytest.raises(XLXMERTError, match=exactly(message)):
            SamplerConfig(**bad)
    hot = SamplerConfig(temperature=2.0, anneal=True)
    assert hot.merged(temperature=0).anneal is False  # argmax switches annealing off
    assert hot.merged(temperature=0, anneal=True).anneal is True  # unless asked for


def test_log_probs_ban_the_special_ids_the_logits_have():
    tokens = CaptionTokens(CLS, SEP, MASK, PAD, (*SPECIAL, 25, V, V + 3))  # V, V + 3: beyond the head
    lp = tokens.log_probs(torch.zeros(2, 6, V))  # [rows, positions, V], fewer positions than 25
    banned = [PAD, 1, CLS, SEP, MASK, 25]
    assert torch.isinf(lp[..., banned]).all()
    assert torch.allclose(lp[..., 5:25].exp(), torch.full((2, 6, 20), 1 / (V - 6)))


def test_visual_sampler_checks_and_messages():
    assert get_sampler("random", steps=1).steps == 1
    assert get_sampler("random", temperature=1.0, top_k=5).top_k == 5
    for args, message in [
        (("zigzag",), "unknown sampler 'zigzag'; choose one of tl-br, random, easy-first, mask-predict"),
        (("random", 0), "random: steps must be at least 1, got 0"),
        (("random", None, 1.0, False, 0), "top-k must be at least 1, got 0"),
        (
            ("random", None, 0.0, False, 3),
            "top-k sampling needs a temperature > 0 (temperature 0 means argmax)",
        ),
        (("random", None, 0.0, True), "annealing needs a starting temperature > 0"),
    ]:
        with pytest.raises(XLXMERTError, match=exactly(message)):
            get_sampler(*args)


def test_one_step_random_and_annealing_over_one_and_two_steps():
    K = 8

    def visual(ids, mask):
        return torch.arange(K, dtype=torch.float).expand(ids.shape[0], ids.shape[1], K)

    out = get_sampler("random", steps=1).sample(visual, 2, 16, torch_generator(0))
    assert out.intermediates == [] and out.updated == []  # only when asked for
    assert (out.ids == K - 1).all()  # one step fills every cell
    assert get_sampler("mask-predict", steps=1, temperature=2.0, anneal=True).temperature_at(0, 1) == 2.0
    assert get_sampler("mask-predict", steps=2, temperature=2.0, anneal=True).temperature_at(1, 2) == 0.0
    hot = get_sampler("random", temperature=50.0, top_k=1).sample(visual, 2, 16, torch_generator(0))
    assert (hot.ids == K - 1).all()  # top-1 is argmax at any temperature
    with pytest.raises(XLXMERTError, match=exactly("predict returned (2, 16, 8); expected [3, 16, K]")):
        get_sampler("random").sample(lambda ids, mask: visual(ids[:2], mask), 3, 16)


def test_the_loop_keeps_the_feature_dtype_and_names_unfilled_cells():
    def doubles(feats, mask):
        return torch.ones(feats.shape, dtype=torch.float64)

    out = get_sampler("mask-predict").sample_features(doubles, 2, 16, 3, torch_generator(0))
    assert out.features.dtype == torch.float32

    class Idle(MaskPredictSampler):
        name = "idle"

        def masked_cells(self, step, plan, filled, confidence):
            return torch.zeros_like(filled)

    with pytest.raises(XLXMERTError, match=exactly("idle: 4 steps left cells unfilled; use more steps")):
        Idle().sample(lambda ids, mask: torch.zeros(*ids.shape, 8), 2, 16, torch_generator(0))


def test_caption_scores_by_hand_and_the_default_chunks():
    table = torch.randn(L, V, generator=torch_generator(3))
    calls = []

    def predict_rows(input_ids, attention_mask, rows):
        calls.append(len(input_ids))
        logits = table[None, : input_ids.shape[1]].expand(len(input_ids), -1, -1)
        return logits, -0.1 * (rows.float() + 1)  # log p(match) of image r: -0.1 (r + 1)

    ids = torch.tensor([[CLS, 10, 11, 12, SEP, PAD], [CLS, 10, 13, SEP, PAD, PAD]])
    free = torch.tensor([[0, 1, 1, 1, 0, 0], [0, 0, 1, 0, 0, 0]]).bool()  # 3 and 1 free words
    lp = TOKENS.log_probs(table)
    words = torch.stack([(lp[1, 10] + lp[2, 11] + lp[3, 12]) / 3, lp[2, 13]])
    scores = caption_scores(predict_rows, ids, free, torch.tensor([0, 1]), TOKENS)
    assert torch.allclose(scores, words + torch.tensor([-0.1, -0.2]))
    weighted = caption_scores(predict_rows, ids, free, torch.tensor([0, 1]), TOKENS, match_weight=2.0)
    assert torch.allclose(weighted, words + torch.tensor([-0.2, -0.4]))
    # 300 captions of one free word each: chunks of 256 rows by default.
    many, one = ids[1:].repeat(300, 1), free[1:].repeat(300, 1)
    calls.clear()
    word_log_probs(predict_rows, many, one, torch.zeros(300).long(), TOKENS)
    assert calls == [256, 44]
    calls.clear()
    caption_scores(predict_rows, many, one, torch.zeros(300).long(), TOKENS)
    assert calls == [256, 44, 256, 44]
