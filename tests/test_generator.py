"""The SPADE generator and discriminator (REFERENCE.md "Image generator"), and the G_60.pth converter."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xlxmert.errors import XLXMERTError
from xlxmert.models.convert import convert_reference_generator
from xlxmert.models.generator import (
    Discriminator,
    DiscriminatorConfig,
    GeneratorConfig,
    SpadeGenerator,
    features_from_ids,
)


def _tiny(output_size=32, grid_size=4, **kw):
    return GeneratorConfig(
        input_dim=16,
        grid_size=grid_size,
        output_size=output_size,
        channels=8,
        bottleneck_dim=16,
        spade_hidden=8,
        **kw,
    )


def test_paper_preset_matches_reference_parameter_count():
    g = SpadeGenerator(GeneratorConfig.from_preset("paper"))
    assert sum(p.numel() for p in g.parameters()) == 1_771_417
    assert sum(p.numel() for p in g.bottleneck.parameters()) == 524_544
    assert g.config.num_blocks == 5
    assert sum(p.numel() for p in g.parameters() if p.dim() == 1 and p.numel() == 1) == 10  # noise scalars


@pytest.mark.parametrize("size,blocks", [(64, 3), (128, 4), (256, 5)])
def test_output_shapes_and_range(size, blocks):
    torch.manual_seed(0)
    cfg = GeneratorConfig(
        input_dim=32, grid_size=8, output_size=size, channels=8, bottleneck_dim=16, spade_hidden=8
    )
    g = SpadeGenerator(cfg)
    assert len(g.blocks) == blocks
    out = g(torch.randn(2, 32, 8, 8))
    assert out.shape == (2, 3, size, size)
    assert out.abs().max() <= 1


def test_shapes64_preset_with_16_grid_has_two_blocks():
    cfg = GeneratorConfig.from_preset("shapes-64", input_dim=128, grid_size=16)
    assert cfg.num_blocks == 2
    assert SpadeGenerator(cfg)(torch.randn(1, 128, 16, 16)).shape == (1, 3, 64, 64)


def test_bad_sizes_are_one_line_errors():
    with pytest.raises(XLXMERTError, match="power of two"):
        GeneratorConfig(input_dim=8, grid_size=8, output_size=48)
    g = SpadeGenerator(_tiny())
    with pytest.raises(XLXMERTError, match=r"expects features \[B, 16, 4, 4\]"):
        g(torch.randn(1, 16, 8, 8))


def test_noise_switch():
    torch.manual_seed(0)
    g = SpadeGenerator(_tiny()).eval()
    with torch.no_grad():
        for block in g.blocks:  # the learned scales start at zero; make the noise visible
            block.noise1.weight.fill_(0.5)
            block.noise2.weight.fill_(0.5)
        x = torch.randn(2, 16, 4, 4)
        off1, off2 = g(x, noise=False), g(x, noise=False)
        on1 = g(x, noise=True, generator=torch.Generator().manual_seed(1))
        on2 = g(x, noise=True, generator=torch.Generator().manual_seed(1))
        on3 = g(x, noise=True, generator=torch.Generator().manual_seed(2))
    assert torch.equal(off1, off2)
    assert torch.equal(on1, on2)  # seeded noise is reproducible
    assert not torch.allclose(on1, on3)
    assert not torch.allclose(on1, off1)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    g = SpadeGenerator(_tiny()).eval()
    g.save_pretrained(tmp_path / "gen")
    g2 = SpadeGenerator.from_pretrained(tmp_path / "gen")
    x = torch.randn(2, 16, 4, 4)
    assert g2.config == g.config
    assert torch.equal(g(x, noise=False), g2(x, noise=False))


def test_discriminator_heads_shapes():
    torch.manual_seed(0)
    k, d = 12, 16
    cfg = DiscriminatorConfig(image_size=32, grid_size=4, input_dim=d, num_clusters=k, channels=8)
    centroids = torch.randn(k, d)
    disc = Discriminator(cfg, centroids)
    out = disc(torch.rand(3, 3, 32, 32) * 2 - 1)
    assert out.score.shape == (3,)
    assert out.cluster_logits.shape == (3, 16, k)
    assert [f.shape[-1] for f in out.features] == [16, 8, 4, 4]  # 3 down blocks + one at N×N
    # The cluster head's last layer is the frozen centroid matrix: a buffer, not a parameter.
    assert "centroids" in dict(disc.named_buffers())
    assert all(p.shape != centroids.shape for p in disc.parameters())
    assert torch.equal(disc.centroids, centroids)


def test_paper_discriminator_is_about_half_a_million_parameters():
    disc = Discriminator(DiscriminatorConfig.from_preset("paper"), torch.zeros(10000, 2048))
    n = sum(p.numel() for p in disc.parameters())
    assert 400_000 < n < 600_000  # appendix D.2: "0.5M trainable parameters"


def test_features_from_ids_is_row_major():
    centroids = torch.arange(6.0).unsqueeze(1).repeat(1, 2)  # K=6, D=2: centroid k = (k, k)
    ids = torch.tensor([[0, 1, 2, 3]])
    feats = features_from_ids(ids, centroids, 2)
    assert feats.shape == (1, 2, 2, 2)
    assert feats[0, 0].tolist() == [[0, 1], [2, 3]]  # cell i*N+j is row i, column j
    with pytest.raises(XLXMERTError, match="visual ids must lie"):
        features_from_ids(torch.tensor([[0, 1, 2, 9]]), centroids, 2)


# --- the authors' layout, rebuilt independently with old-style spectral norm -------------------


def _old_sn(conv):
    nn.init.normal_(conv.weight)
    nn.init.normal_(conv.bias)
    return torch.nn.utils.spectral_norm(conv)


class _RefSpade(nn.Module):
    def __init__(self, c, hidden):
        super().__init__()
        self.shared = nn.Sequential(nn.Conv2d(c, hidden, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, c, 3, padding=1)
        self.beta = nn.Conv2d(hidden, c, 3, padding=1)

    def forward(self, x, y):
        a = self.shared(F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False))
        return F.instance_norm(x) * (1 + self.gamma(a)) + self.beta(a)


class _RefNoise(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1))


class _RefBlock(nn.Module):
    def __init__(self, c, hidden):
        super().__init__()
        self.cbn1, self.cbn2 = _RefSpade(c, hidden), _RefSpade(c, hidden)
        self.conv1 = _old_sn(nn.Conv2d(c, c, 3, padding=1))
        self.conv2 = _old_sn(nn.Conv2d(c, c, 3, padding=1))
        self.res_branch = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear"), _old_sn(nn.Conv2d(c, c, 1))
        )
        self.noise1, self.noise2 = _RefNoise(), _RefNoise()

    def forward(self, x, y):  # noise off
        h = F.leaky_relu(self.cbn1(x, y), 0.2)
        h = self.conv1(F.interpolate(h, scale_factor=2, mode="bilinear"))
        h = self.conv2(F.leaky_relu(self.cbn2(h, y), 0.2))
        return h + self.res_branch(x)


class _RGB(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, 3, 3, padding=1)


class _RefGenerator(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        c = cfg.channels
        self.bottleneck_emb = nn.Sequential(nn.Conv2d(cfg.input_dim, cfg.bottleneck_dim, 1), nn.Tanh())
        self.learned_init_conv = nn.Sequential(
            _old_sn(nn.Conv2d(cfg.bottleneck_dim, c, 3, padding=1, groups=cfg.groups))
        )
        self.style_init_conv = nn.Sequential(
            _old_sn(nn.Conv2d(cfg.bottleneck_dim, c, 3, padding=1, groups=cfg.groups))
        )
        self.resblocks = nn.ModuleList(_RefBlock(c, cfg.spade_hidden) for _ in range(cfg.num_blocks))
        self.to_RGB_blocks = nn.ModuleList(_RGB(c) for _ in range(cfg.num_blocks))
        self.size = cfg.output_size

    def forward(self, x):
        z = self.bottleneck_emb(x)
        h, y = self.learned_init_conv(z), self.style_init_conv(z)
        rgb = 0
        for block, to_rgb in zip(self.resblocks, self.to_RGB_blocks):
            h = block(h, y)
            rgb = rgb + F.interpolate(to_rgb.conv(h), size=(self.size, self.size), mode="bilinear")
        return torch.tanh(rgb)


def _reference_state_dict(cfg):
    torch.manual_seed(0)
    ref = _RefGenerator(cfg)
    with torch.no_grad():
        for _ in range(2):  # a few train-mode power iterations: stored u, v ≠ their init
            ref(torch.randn(2, cfg.input_dim, cfg.grid_size, cfg.grid_size))
    ref.eval()
    # DistributedDataParallel prefix, as in G_60.pth
    return ref, {f"module.{k}": v.clone() for k, v in ref.state_dict().items()}


def test_converter_round_trip_computes_the_same_function(tmp_path):
    cfg = _tiny(output_size=32, grid_size=4, groups=2)
    ref, state = _reference_state_dict(cfg)
    assert "module.resblocks.0.res_branch.1.weight_orig" in state
    assert "module.resblocks.1.cbn2.shared.0.weight" in state
    assert "module.to_RGB_blocks.2.conv.bias" in state
    torch.save(state, tmp_path / "G_60.pth")
    ours = convert_reference_generator(tmp_path / "G_60.pth", cfg)
    x = torch.randn(3, cfg.input_dim, 4, 4)
    with torch.no_grad():
        expected, got = ref(x), ours(x, noise=False)
    assert got.shape == (3, 3, 32, 32)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert ours.blocks[1].noise2.weight.item() == pytest.approx(
        state["module.resblocks.1.noise2.weight"].item()
    )


def test_converter_sigma_comes_from_the_stored_vectors():
    # Without u, v (σ re-estimated by fresh power iterations) the function would differ.
    cfg = _tiny(output_size=16, grid_size=4)
    ref, state = _reference_state_dict(cfg)
    x = torch.randn(2, cfg.input_dim, 4, 4)
    ours = convert_reference_generator(state, cfg)
    fresh = SpadeGenerator(cfg)
    fresh.load_state_dict(
        {k: v for k, v in ours.state_dict().items() if not k.endswith(("._u", "._v"))}, strict=False
    )
    with torch.no_grad():
        torch.testing.assert_close(ours(x, noise=False), ref(x), atol=1e-5, rtol=1e-4)
        assert not torch.allclose(fresh.eval()(x, noise=False), ref(x), atol=1e-4)


def test_converter_rejects_foreign_checkpoints(tmp_path):
    cfg = _tiny()
    _, state = _reference_state_dict(cfg)
    with pytest.raises(XLXMERTError, match="unexpected key"):
        convert_reference_generator({**state, "module.classifier.weight": torch.zeros(1)}, cfg)
    with pytest.raises(XLXMERTError, match="lacks"):
        convert_reference_generator({k: v for k, v in state.items() if "to_RGB" not in k}, cfg)
    with pytest.raises(XLXMERTError, match="does not fit|no place"):
        convert_reference_generator(state)  # paper preset: wrong sizes
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(XLXMERTError, match="weights-only"):
        convert_reference_generator(tmp_path / "bad.pth", cfg)
