"""Samplers: each schedule (which and how many cells per step), options, determinism; caption Gibbs."""

import pytest
import torch
import torch.nn.functional as F

from xlxmert.errors import XLXMERTError
from xlxmert.sampling import (
    CaptionSampler,
    EasyFirstSampler,
    MaskPredictSampler,
    RandomSampler,
    TopLeftToBottomRightSampler,
    choose_ids,
    get_sampler,
)
from xlxmert.utils.seeding import torch_generator

M, K = 64, 16


class FakeVisualModel:
    """A model-shaped function: logits depend on the cell and on the visible (unmasked) ids of the
    same row only, so rows are independent; records every call."""

    def __init__(self, num_cells: int = M, num_clusters: int = K, seed: int = 0) -> None:
        g = torch_generator(seed)
        self.base = torch.randn(num_cells, num_clusters, generator=g) * 2
        self.mix = torch.randn(num_clusters, num_clusters, generator=g)
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.calls.append((ids.clone(), mask.clone()))
        visible = F.one_hot(ids, self.base.shape[1]).float() * (~mask)[..., None].float()
        context = visible.mean(dim=1) @ self.mix  # [B, K]
        return self.base[None] + context[:, None, :]


def run(sampler, batch=2, seed=0, model=None):
    model = model or FakeVisualModel()
    out = sampler.sample(model, batch, M, torch_generator(seed), return_intermediates=True)
    return out, model


def test_mask_predict_4_updates_64_48_32_16_lowest_confidence_cells():
    sampler = MaskPredictSampler(steps=4)
    out, model = run(sampler)
    assert [int(u[0].sum()) for u in out.updated] == [64, 48, 32, 16]
    assert [int(mask[0].sum()) for _, mask in model.calls] == [64, 48, 32, 16]
    # Replay: the cells re-masked at pass i are the lowest-confidence ones after pass i-1, and
    # only masked cells change.
    confidence = None
    for step, (ids_in, mask) in enumerate(list(model.calls)):
        if step > 0:
            count = int(mask[0].sum())
            for b in range(2):
                lowest = set(confidence[b].argsort(stable=True)[:count].tolist())
                assert set(mask[b].nonzero().flatten().tolist()) == lowest
            before = out.intermediates[step - 1]
            after = out.intermediates[step]
            assert torch.equal(before[~mask], after[~mask])
        probs = model(ids_in, mask).softmax(-1)
        conf_now = probs.max(-1).values
        confidence = conf_now if confidence is None else torch.where(mask, conf_now, confidence)
    assert torch.equal(out.ids, out.intermediates[-1])


def test_mask_predict_counts_follow_the_linear_decay():
    eight = [MaskPredictSampler(steps=8).num_masked(i, 64) for i in range(8)]
    assert eight == [64, 56, 48, 40, 32, 24, 16, 8]
    # the paper's 2×2 example
    assert [MaskPredictSampler(steps=4).num_masked(i, 4) for i in range(4)] == [4, 3, 2, 1]
    assert get_sampler("mask-predict").steps == 4


def test_tl_br_fills_cells_in_raster_order_with_the_rest_masked():
    out, model = run(TopLeftToBottomRightSampler())
    assert len(out.updated) == M
    for i, written in enumerate(out.updated):
        assert written.sum(1).tolist() == [1, 1]
        assert written[:, i].all()
        mask = model.calls[i][1]
        assert mask[:, i:].all() and not mask[:, :i].any()  # filled cells visible, the rest [MASK]


def test_easy_first_picks_the_most_confident_unfilled_cell():
    out, model = run(EasyFirstSampler())
    filled = torch.zeros(2, M, dtype=torch.bool)
    for step, (ids_in, mask) in enumerate(list(model.calls)):
        assert torch.equal(mask, ~filled)
        conf = model(ids_in, mask).softmax(-1).max(-1).values.masked_fill(filled, -1)
        written = out.updated[step]
        assert written.sum(1).tolist() == [1, 1]
        assert torch.equal(written.float().argmax(1), conf.argmax(1))
        filled |= written
    assert filled.all()


def test_random_200_fills_a_permutation_then_remasks_one_cell_at_a_time():
    out, model = run(RandomSampler(steps=200))
    assert len(out.updated) == 200
    order = torch.stack([u.float().argmax(1) for u in out.updated], dim=1)  # [B, 200]
    assert all(u.sum(1).tolist() == [1, 1] for u in out.updated)
    for b in range(2):
        for r in range(3):  # three full rounds: each a permutation of the 64 cells
            assert sorted(order[b, r * M : (r + 1) * M].tolist()) == list(range(M))
        assert len(set(order[b, 192:].tolist())) == 8
    for step in range(M, 200):  # beyond 64 steps exactly the re-predicted cell is masked
        mask = model.calls[step][1]
        assert torch.equal(mask, out.updated[step])
    assert not torch.equal(order[0], order[1])  # each row its own order (one shared generator)


def test_random_with_fewer_steps_than_cells_fills_its_permutation_in_chunks():
    out, model = run(RandomSampler(steps=10))
    assert len(out.updated) == len(model.calls) == 10
    sizes = [u.sum(1).tolist() for u in out.updated]
    assert sizes == [[(k + 1) * M // 10 - k * M // 10] * 2 for k in range(10)]  # 64 cells in 10 chunks
    assert sorted({s[0] for s in sizes}) == [6, 7]
    written = torch.stack(out.updated).sum(0)
    assert torch.equal(written, torch.ones(2, M, dtype=written.dtype))  # each cell written once
    for step in range(10):  # every unfilled cell is masked, as in Random-M
        filled = torch.stack(out.updated[:step]).any(0) if step else torch.zeros(2, M, dtype=torch.bool)
        assert torch.equal(model.calls[step][1], ~filled)
    again, _ = run(RandomSampler(steps=10))
    assert torch.equal(torch.stack(again.updated), torch.stack(out.updated))  # seeded order


def test_fixed_length_samplers_reject_other_step_counts():
    with pytest.raises(XLXMERTError, match="exactly 64"):
        run(get_sampler("tl-br", steps=4))
    with pytest.raises(XLXMERTError, match="exactly 64"):
        run(get_sampler("easy-first", steps=4))


def test_registry_and_option_errors():
    assert isinstance(get_sampler("random", steps=140), RandomSampler)
    with pytest.raises(XLXMERTError, match="unknown sampler"):
        get_sampler("zigzag")
    with pytest.raises(XLXMERTError, match="top-k"):
        get_sampler("mask-predict", top_k=5)
    with pytest.raises(XLXMERTError, match="temperature"):
        get_sampler("mask-predict", temperature=-1.0)
    with pytest.raises(XLXMERTError, match="annealing"):
        get_sampler("mask-predict", anneal=True)


@pytest.mark.parametrize("name,steps", [("random", 100), ("mask-predict", 4), ("easy-first", None)])
def test_seeded_determinism_with_sampling(name, steps):
    sampler = get_sampler(name, steps=steps, temperature=1.5, top_k=8)
    a, _ = run(sampler, seed=3)
    b, _ = run(sampler, seed=3)
    c, _ = run(sampler, seed=4)
    assert torch.equal(a.ids, b.ids)
    assert not torch.equal(a.ids, c.ids)


def test_per_row_generators_make_a_batch_equal_its_rows_one_by_one():
    sampler = get_sampler("random", steps=80, temperature=1.0)
    model = FakeVisualModel()
    batch = sampler.sample(model, 3, M, [torch_generator(7) for _ in range(3)]).ids
    for b in range(3):
        alone = sampler.sample(model, 1, M, [torch_generator(7)]).ids
        assert torch.equal(batch[b : b + 1], alone)
    with pytest.raises(XLXMERTError, match="one per row"):
        sampler.sample(model, 3, M, [torch_generator(7)])


def test_argmax_temperature_top_k_and_annealing():
    logits = torch.zeros(1, 200, 4)
    logits[..., 0] = 1.0
    gens = [torch_generator(0)]
    ids, conf = choose_ids(logits, 0.0, None, gens)
    assert (ids == 0).all() and torch.allclose(conf, logits.softmax(-1)[..., 0])
    sampled, conf = choose_ids(logits, 1.0, None, gens)
    assert (sampled != 0).any() and (sampled == 0).any()
    assert torch.allclose(conf, logits.softmax(-1).gather(-1, sampled[..., None])[..., 0])
    top1, _ = choose_ids(logits, 5.0, 1, gens)  # top-1 sampling is argmax whatever the temperature
    assert (top1 == 0).all()
    top2, _ = choose_ids(torch.tensor([[[3.0, 2.0, 1.0, 0.0]]]).expand(1, 200, 4), 10.0, 2, gens)
    assert set(top2.unique().tolist()) == {0, 1}
    sampler = get_sampler("mask-predict", steps=5, temperature=2.0, anneal=True)
    assert [sampler.temperature_at(i, 5) for i in range(5)] == [2.0, 1.5, 1.0, 0.5, 0.0]
    assert get_sampler("mask-predict", steps=5, temperature=2.0).temperature_at(4, 5) == 2.0


def test_temperature_changes_the_painting_and_argmax_is_the_default():
    argmax, _ = run(get_sampler("mask-predict"))
    again, _ = run(get_sampler("mask-predict"), seed=99)  # argmax ignores the seed
    sampled, _ = run(get_sampler("mask-predict", temperature=3.0))
    assert torch.equal(argmax.ids, again.ids)
    assert not torch.equal(argmax.ids, sampled.ids)


@pytest.mark.parametrize(
    "name,steps,counts",
    [
        ("mask-predict", 4, [64, 48, 32, 16]),
        ("tl-br", None, [1] * 64),
        ("easy-first", None, [1] * 64),
    ],
)
def test_feature_mode_writes_regressed_features_into_the_scheduled_cells(name, steps, counts):
    D = 5
    calls = []

    def predict(feats, mask):
        calls.append((feats.clone(), mask.clone()))
        return torch.full((feats.shape[0], M, D), float(len(calls)))  # step number as the feature

    out = get_sampler(name, steps=steps).sample_features(predict, 2, M, D, torch_generator(0), True)
    assert out.features.shape == (2, M, D)
    assert [int(u[0].sum()) for u in out.updated] == counts
    for step, written in enumerate(out.updated):
        assert (out.intermediates[step][written] == step + 1).all()
        assert torch.equal(calls[step][1] & written, written)  # written cells were masked
    if name == "tl-br":
        assert (out.features[0, :, 0] == torch.arange(1, 65).float()).all()
    with pytest.raises(XLXMERTError, match="regresses features"):
        get_sampler(name, steps=steps, temperature=1.0).sample_features(predict, 2, M, D)


# --- caption Gibbs sampler --------------------------------------------------------------------
CLS, SEP, MASK, PAD, UNK = 2, 3, 4, 0, 1
SPECIAL = [PAD, UNK, CLS, SEP, MASK]
V, L = 30, 20


def test_caption_sampler_protects_prefix_cls_sep_and_fills_the_last_position():
    g = torch_generator(0)
    table = torch.randn(L, V, generator=g)
    table[:, SPECIAL] += 100.0  # the model loves special tokens: they must never be written
    queries = []

    def predict(input_ids, attention_mask):
        queries.append(input_ids.clone())
        return table[None].expand(input_ids.shape[0], -1, -1)

    prefixes = [[7, 8], []]
    out = CaptionSampler(sweeps=2).sample(
        predict,
        prefixes,
        num_words=6,
        max_length=L,
        cls_id=CLS,
        sep_id=SEP,
        mask_id=MASK,
        pad_id=PAD,
        special_ids=SPECIAL,
        generator=torch_generator(0),
        return_intermediates=True,
    )
    ids = out.input_ids
    assert ids[:, 0].tolist() == [CLS, CLS]
    assert ids[:, 7].tolist() == [SEP, SEP]
    assert (ids[:, 8:] == PAD).all() and out.attention_mask.sum(1).tolist() == [8, 8]
    assert ids[0, 1:3].tolist() == [7, 8]
    words = ids[:, 1:7]
    assert not any(w in SPECIAL for w in words.flatten().tolist())  # last position (6) filled too
    expected = table[1:7, 5:].argmax(-1) + 5  # argmax among non-special ids (all ≥ 5)
    assert ids[0, 3:7].tolist() == expected[2:].tolist() and ids[1, 1:7].tolist() == expected.tolist()
    assert len(queries) == 2 * 6  # row 1 has 6 free positions, two sweeps
    for step, query in enumerate(queries):
        assert query[:, 0].tolist() == [CLS, CLS] and query[:, 7].tolist() == [SEP, SEP]
        assert query[0, 1:3].tolist() == [7, 8]  # prefix never re-masked
        if step >= 6:  # after the first sweep exactly one position per row is masked
            assert (query[1] == MASK).sum() == 1
            if step < 8:
                assert (query[0] == MASK).sum() == 1
    masked_positions = [int((q[1] == MASK).nonzero()[0]) for q in queries[6:]]
    assert sorted(masked_positions) == [1, 2, 3, 4, 5, 6]  # second sweep visits every free position


def test_caption_sampler_errors():
    sampler = CaptionSampler()
    kwargs = dict(max_length=L, cls_id=CLS, sep_id=SEP, mask_id=MASK, pad_id=PAD, special_ids=SPECIAL)
    with pytest.raises(XLXMERTError, match="prefix"):
        sampler.sample(lambda i, a: torch.zeros(1, L, V), [[5, 6, 7]], num_words=3, **kwargs)
    with pytest.raises(XLXMERTError, match="does not fit"):
        sampler.sample(lambda i, a: torch.zeros(1, L, V), [[]], num_words=19, **kwargs)
