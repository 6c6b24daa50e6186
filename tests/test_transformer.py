"""X-LXMERT transformer: heads, ties, frozen CCC, text cache, persistence, reference loading, masking."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.stats import chisquare

from xlxmert.errors import XLXMERTError
from xlxmert.models.masking import bernoulli_visual_mask, mask_text_tokens, uniform_visual_mask
from xlxmert.models.transformer import XLxmertConfig, XLxmertForPreTraining, cell_boxes, cell_positions
from xlxmert.utils.config import load_config

K, D, N = 12, 8, 4
M = N * N


def tiny_config(**overrides) -> XLxmertConfig:
    sizes = dict(
        vocab_size=40,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        l_layers=2,
        r_layers=1,
        x_layers=1,
        grid_size=N,
        num_clusters=K,
        feature_dim=D,
        num_answers=7,
    )
    return XLxmertConfig.from_preset("shapes-64", **{**sizes, **overrides})


def tiny_model(seed: int = 0, **overrides) -> XLxmertForPreTraining:
    torch.manual_seed(seed)
    return XLxmertForPreTraining(tiny_config(**overrides), torch.randn(K, D))


def inputs(B: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 40, (B, 10), generator=g)
    ids[:, 0], ids[:, 7], ids[:, 8:] = 2, 3, 0
    mask = (ids != 0).long()
    visual_ids = torch.randint(0, K, (B, M), generator=g)
    visual_mask = torch.rand(B, M, generator=g) < 0.5
    return ids, mask, visual_ids, visual_mask


def test_presets_and_bad_switches():
    paper = XLxmertConfig.from_preset("paper")
    assert (paper.hidden_size, paper.l_layers, paper.r_layers, paper.x_layers) == (768, 9, 5, 5)
    assert (paper.num_clusters, paper.feature_dim, paper.num_cells, paper.num_answers) == (
        10000,
        2048,
        64,
        9500,
    )
    assert XLxmertConfig.from_preset("shapes-64", num_clusters=77).num_clusters == 77
    with pytest.raises(XLXMERTError, match="variant"):
        tiny_config(variant="lxmert")
    with pytest.raises(XLXMERTError, match="preset"):
        XLxmertConfig.from_preset("huge")


def test_heads_shapes_for_both_targets():
    ids, mask, vids, vmask = inputs()
    out = tiny_model().eval()(ids, mask, visual_ids=vids, visual_mask=vmask)
    assert out.mlm_logits.shape == (3, 10, 40)
    assert out.visual_logits.shape == (3, M, K) and out.visual_regression is None
    assert out.itm_logits.shape == (3, 2) and out.qa_logits.shape == (3, 7)
    assert out.vision_hidden.shape == (3, M, 32) and out.pooled.shape == (3, 32)
    grid = tiny_model(variant="lxmert-grid", visual_target="regression").eval()
    feats = torch.randn(3, M, D)
    out = grid(ids, mask, visual_feats=feats, visual_mask=vmask)
    assert out.visual_logits is None and out.visual_regression.shape == (3, M, D)


def test_mlm_decoder_tied_to_word_embeddings():
    model = tiny_model()
    emb = model.bert.embeddings.word_embeddings.weight
    dec = model.cls.predictions.decoder.weight
    assert dec is emb and dec.data_ptr() == emb.data_ptr()


def test_ccc_weight_is_the_frozen_centroids_through_a_step():
    model = tiny_model()
    head = model.obj_predict_head
    assert head.out_cluster.weight.data_ptr() == model.centroids.data_ptr()
    assert all(p is not head.out_cluster.weight for p in model.parameters())
    before, bias_before = model.centroids.clone(), head.out_cluster.bias.detach().clone()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids, mask, vids, vmask = inputs()
    out = model(ids, mask, visual_ids=vids, visual_mask=vmask)
    torch.nn.functional.cross_entropy(out.visual_logits[vmask], vids[vmask]).backward()
    opt.step()
    assert torch.equal(model.centroids, before) and torch.equal(head.out_cluster.weight, before)
    assert not torch.equal(head.out_cluster.bias, bias_before)  # the bias does train


def test_cached_text_encoding_equals_recomputation():
    model = tiny_model().eval()
    ids, mask, vids, vmask = inputs()
    full = model(ids, mask, visual_ids=vids, visual_mask=vmask)
    enc = model.encode_text(ids, mask)
    cached = model(None, None, visual_ids=vids, visual_mask=vmask, text_encoding=enc)
    assert torch.equal(full.visual_logits, cached.visual_logits)
    assert torch.equal(model.predict_visual(enc, vids, vmask), full.visual_logits)


def test_masked_cell_ignores_its_id_and_uses_mask_feat():
    model = tiny_model().eval()
    with torch.no_grad():
        model.mask_feat.normal_()
    ids, mask, vids, vmask = inputs()
    other = torch.where(vmask, (vids + 1) % K, vids)
    a = model(ids, mask, visual_ids=vids, visual_mask=vmask).visual_logits
    b = model(ids, mask, visual_ids=other, visual_mask=vmask).visual_logits
    assert torch.equal(a, b)
    feats = model.visual_features(vids, None, vmask)
    assert torch.equal(feats[vmask], model.mask_feat.expand(int(vmask.sum()), D))
    assert torch.equal(feats[~vmask], model.centroids[vids[~vmask]])
    assert torch.equal(
        cell_boxes(2), torch.tensor([[0, 0, 0.5, 0.5], [0.5, 0, 1, 0.5], [0, 0.5, 0.5, 1], [0.5, 0.5, 1, 1]])
    )


def test_save_and_load_pretrained(tmp_path):
    model = tiny_model().eval()
    model.answers = [f"a{i}" for i in range(7)]
    # The component reads and writes its own folder only: no ../vocabulary/, no model_index.json.
    model.save_pretrained(tmp_path / "transformer")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["transformer"]
    stored = load_file(str(tmp_path / "transformer" / "model.safetensors"))
    assert not any("out_cluster.weight" in k or k == "centroids" for k in stored)
    again = XLxmertForPreTraining.from_pretrained(tmp_path / "transformer", centroids=model.centroids).eval()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["transformer"]
    assert torch.equal(again.centroids, model.centroids)
    assert again.answers == model.answers and again.config == model.config
    ids, mask, vids, vmask = inputs()
    assert torch.equal(
        again(ids, mask, vids, visual_mask=vmask).visual_logits,
        model(ids, mask, vids, visual_mask=vmask).visual_logits,
    )
    assert again.cls.predictions.decoder.weight is again.bert.embeddings.word_embeddings.weight


def test_reference_state_dict_with_module_prefix_loads():
    source = tiny_model(seed=3).eval()
    reference = {f"module.{k}": v.clone() for k, v in source.state_dict().items()}
    # The released file stores the centroids as the CCC output weight, plus heads we do not have.
    reference["module.obj_predict_head.out_cluster.weight"] = source.centroids.clone()
    reference["module.obj_predict_head.decoder_dict.attr.weight"] = torch.zeros(3, 32)
    target = XLxmertForPreTraining(tiny_config(), None).eval()
    report = target.load_reference_state_dict(reference)
    assert report["missing"] == []
    assert report["unexpected"] == ["module.obj_predict_head.decoder_dict.attr.weight"]
    assert torch.equal(target.centroids, source.centroids)
    ids, mask, vids, vmask = inputs()
    assert torch.equal(
        target(ids, mask, vids, visual_mask=vmask).visual_logits,
        source(ids, mask, vids, visual_mask=vmask).visual_logits,
    )
    bad = dict(reference)
    bad["module.mask_feat"] = torch.zeros(D + 1)
    with pytest.raises(XLXMERTError, match="mask_feat"):
        target.load_reference_state_dict(bad)


def test_uniform_mask_count_is_uniform_over_1_to_64():
    masks = uniform_visual_mask(32000, 64, torch.Generator().manual_seed(0))
    counts = masks.sum(1).numpy()
    assert counts.min() >= 1 and counts.max() <= 64
    observed = np.bincount(counts, minlength=65)[1:]
    assert observed.min() > 0
    assert chisquare(observed).pvalue > 1e-3
    # Which cells are masked is uniform too (no raster bias).
    per_cell = masks.float().mean(0)
    assert (per_cell - per_cell.mean()).abs().max() < 0.02


def test_bernoulli_rate_is_p():
    masks = bernoulli_visual_mask(4000, 64, 0.15, torch.Generator().manual_seed(0))
    rate = masks.float().mean().item()
    assert abs(rate - 0.15) < 4 * (0.15 * 0.85 / masks.numel()) ** 0.5


def test_text_masking_never_touches_special_tokens():
    special, vocab, mask_id = {0, 1, 2, 3, 4}, 50, 4
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (2000, 20), generator=g)
    lengths = torch.randint(3, 21, (2000,), generator=g)
    pos = torch.arange(20)[None]
    ids[pos >= lengths[:, None]] = 0
    ids[:, 0] = 2
    ids[torch.arange(2000), lengths - 1] = 3
    attention = (ids != 0).long()
    masked, labels = mask_text_tokens(ids, attention, special, vocab, mask_id, g, p=0.15)
    is_special = torch.isin(ids, torch.tensor(sorted(special)))
    assert (labels[is_special] == -100).all() and torch.equal(masked[is_special], ids[is_special])
    chosen = labels != -100
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(masked[~chosen], ids[~chosen])
    rate = chosen.sum() / (~is_special).sum()
    assert abs(rate.item() - 0.15) < 0.01
    replaced = masked[chosen]
    frac_mask = (replaced == mask_id).float().mean().item()
    frac_same = (replaced == ids[chosen]).float().mean().item()
    assert abs(frac_mask - 0.8) < 0.02 and 0.08 < frac_same < 0.13  # 10% kept (+ random hits)
    assert not torch.isin(replaced[replaced != mask_id], torch.tensor(sorted(special))).any()


def test_standardized_features_use_the_centroid_statistics():
    model = tiny_model(standardize_features=True).eval()
    with torch.no_grad():
        model.mask_feat.normal_()
    all_ids = (torch.arange(M) % K)[None]  # every cluster once in the first K cells
    feats = model.visual_features(all_ids)[0, :K]
    assert torch.allclose(feats.mean(0), torch.zeros(D), atol=1e-5)
    assert torch.allclose(feats.std(0), torch.ones(D), atol=1e-4)
    ids, mask, vids, vmask = inputs()
    masked = model.visual_features(vids, None, vmask)
    assert torch.equal(masked[vmask], model.mask_feat.expand(int(vmask.sum()), D))
    plain = tiny_model(standardize_features=False).eval()
    plain.load_state_dict(model.state_dict())
    a = model(ids, mask, vids).visual_logits
    assert not torch.allclose(a, plain(ids, mask, vids).visual_logits)
    # New centroids bring new statistics.
    model.set_centroids(model.centroids * 3 + 1)
    assert torch.allclose(model.visual_features(all_ids)[0, :K].std(0), torch.ones(D), atol=1e-4)


def test_a_constant_feature_dimension_is_not_blown_up_by_standardization():
    # Dimension 0 is constant up to noise (a prediction channel the data never turn on).
    torch.manual_seed(0)
    centroids = torch.randn(K, D)
    centroids[:, 0] = 1e-4 * torch.rand(K)
    model = XLxmertForPreTraining(tiny_config(standardize_features=True), centroids).eval()
    assert model.feature_std[0].item() == 1.0 and torch.equal(model.feature_std[1:], centroids[:, 1:].std(0))
    all_ids = (torch.arange(M) % K)[None]
    feats = model.visual_features(all_ids)[0, :K]
    assert feats[:, 0].abs().max() < 1e-3 and feats[:, 1:].abs().max() > 1.0


def test_fourier_cell_positions_widen_the_position_input_and_round_trip(tmp_path):
    assert torch.equal(cell_positions(N, 0), cell_boxes(N))
    pos = cell_positions(N, 3)
    assert pos.shape == (M, 4 + 4 * 3) and torch.equal(pos[:, :4], cell_boxes(N))
    cx, cy = (2 + 0.5) / N, (1 + 0.5) / N  # cell 1 * N + 2
    for f in range(3):
        w = np.pi * 2**f
        expected = [np.sin(w * cx), np.cos(w * cx), np.sin(w * cy), np.cos(w * cy)]
        assert np.allclose(pos[N + 2, 4 + 4 * f : 8 + 4 * f].numpy(), expected, atol=1e-6)
    model = tiny_model(position_frequencies=3).eval()
    assert model.bert.encoder.visn_fc.box_fc.in_features == 16
    ids, mask, vids, vmask = inputs()
    plain = tiny_model().eval()
    assert plain.bert.encoder.visn_fc.box_fc.in_features == 4  # the paper's box
    model.save_pretrained(tmp_path / "transformer")
    again = XLxmertForPreTraining.from_pretrained(tmp_path / "transformer", centroids=model.centroids).eval()
    assert again.config.position_frequencies == 3
    assert torch.equal(again(ids, mask, vids).visual_logits, model(ids, mask, vids).visual_logits)
    # A config written before the field existed loads as the paper's box input.
    cfg_file = tmp_path / "transformer" / "config.json"
    saved = json.loads(cfg_file.read_text())
    del saved["position_frequencies"]
    cfg_file.write_text(json.dumps(saved))
    assert load_config(XLxmertConfig, tmp_path / "transformer").position_frequencies == 0
    with pytest.raises(XLXMERTError, match="position_frequencies"):
        tiny_config(position_frequencies=-1)


def test_standardized_ccc_output_scores_against_the_standardized_centroids(tmp_path):
    model = tiny_model(standardize_features=True, standardize_ccc_output=True).eval()
    z = (model.centroids - model.feature_mean) / model.feature_std
    head = model.obj_predict_head
    assert torch.allclose(head.out_cluster.weight, z) and head.out_cluster.weight is not model.centroids
    ids, mask, vids, vmask = inputs()
    x = torch.randn(2, 5, model.config.hidden_size)
    expected = head.linear_feat(head.transform(x)) @ z.T + head.out_cluster.bias
    assert torch.allclose(head(x), expected, atol=1e-5)
    # Off (the paper), the output weights are the raw centroids, shared with the input lookup.
    plain = tiny_model()
    assert plain.obj_predict_head.out_cluster.weight is plain.centroids
    # New centroids bring new output weights; the flag survives a save and load.
    model.set_centroids(model.centroids * 3 + 1)
    z = (model.centroids - model.feature_mean) / model.feature_std
    assert torch.allclose(head.out_cluster.weight, z)
    model.save_pretrained(tmp_path / "transformer")
    again = XLxmertForPreTraining.from_pretrained(tmp_path / "transformer", centroids=model.centroids).eval()
    assert again.config.standardize_ccc_output is True
    assert torch.equal(again(ids, mask, vids).visual_logits, model(ids, mask, vids).visual_logits)
