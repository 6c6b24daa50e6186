"""The image generator (paper §4.2, appendix D): a SPADE GAN that paints an N×N grid of visual words.

The generator turns the centroid features of an image's visual words, laid out as a map
``FloatTensor[B, D, N, N]``, into ``FloatTensor[B, 3, S, S] in [-1, 1]``. It is trained on
ground-truth ids (teacher forcing) and never fine-tuned on the transformer's predictions.

At the ``paper`` preset (8×8×2048 → 256×256) it is the reference architecture, parameter for
parameter (1,771,417, of which 524,544 in the bottleneck):

1. ``bottleneck``: Conv1×1 D→256 then tanh (no spectral norm);
2. ``initial_conv`` (the starting activation h) and ``style_conv`` (the layout map y every SPADE
   reads): spectral-normalised Conv3×3 256→32, groups 4;
3. ``log2(S / N)`` :class:`SpadeResBlock` s, each doubling the resolution at 32 channels;
4. ``to_rgb``: one Conv3×3 32→3 per block (StyleGAN2-style skip outputs), bilinearly resized to S,
   summed, tanh.

The :class:`Discriminator` mirrors it: ``log2(S / N)`` down blocks plus one at N×N, an adversarial
head (mean over the N×N map) and an AC-GAN cluster head whose last layer is tied to the frozen
vocabulary centroids, giving per-cell logits over the K visual words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from xlxmert.errors import XLXMERTError
from xlxmert.utils.config import PresetConfig
from xlxmert.utils.weights import PretrainedMixin

LEAKY_SLOPE = 0.2


def _num_resolution_steps(output_size: int, grid_size: int) -> int:
    """How many ×2 steps lead from the N×N grid to S×S; S / N must be a power of two ≥ 2."""
    if grid_size < 1 or output_size <= grid_size or output_size % grid_size:
        raise XLXMERTError(
            f"output size {output_size} must be a multiple of the grid size {grid_size} and larger; "
            "use e.g. grid 8 with output 64, 128 or 256"
        )
    ratio = output_size // grid_size
    steps = int(round(math.log2(ratio)))
    if 2**steps != ratio:
        raise XLXMERTError(f"output size / grid size = {ratio} is not a power of two; choose S = N·2^k")
    return steps


def _init_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """Orthogonal weights and zero biases (the reference's init)."""
    nn.init.orthogonal_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def _sn_conv(in_ch: int, out_ch: int, kernel: int, groups: int = 1) -> nn.Conv2d:
    """A spectrally normalised conv (Miyato et al., 2018), initialised before the norm is attached."""
    conv = _init_conv(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, groups=groups))
    return spectral_norm(conv)


def _resize(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    size = (size, size) if isinstance(size, int) else size
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratorConfig(PresetConfig):
    """Shape of a :class:`SpadeGenerator`.

    ``input_dim`` (D) and ``grid_size`` (N) come from the visual vocabulary; ``output_size`` (S)
    fixes the number of up-blocks, ``log2(S / N)``.
    """

    input_dim: int
    grid_size: int
    output_size: int
    channels: int = 32
    bottleneck_dim: int = 256
    groups: int = 4
    spade_hidden: int = 128
    noise: bool = True

    PRESET_KIND: ClassVar[str] = "generator"
    PRESETS: ClassVar[dict[str, dict]] = {
        "paper": dict(input_dim=2048, grid_size=8, output_size=256),
        # Same architecture at ShapeScenes scale; input_dim and grid_size are overridden from the
        # vocabulary at train time (see training.generator).
        "shapes-64": dict(input_dim=128, grid_size=16, output_size=64, bottleneck_dim=128),
    }

    def __post_init__(self) -> None:
        _num_resolution_steps(self.output_size, self.grid_size)
        if self.bottleneck_dim % self.groups or self.channels % self.groups:
            raise XLXMERTError(
                f"bottleneck_dim {self.bottleneck_dim} and channels {self.channels} must be divisible "
                f"by groups {self.groups}"
            )

    @property
    def num_blocks(self) -> int:
        return _num_resolution_steps(self.output_size, self.grid_size)


@dataclass(frozen=True)
class DiscriminatorConfig(PresetConfig):
    """Shape of a :class:`Discriminator`: images of ``image_size`` down to the N×N grid."""

    image_size: int
    grid_size: int
    input_dim: int
    num_clusters: int
    channels: int = 64

    PRESET_KIND: ClassVar[str] = "discriminator"
    PRESETS: ClassVar[dict[str, dict]] = {
        "paper": dict(image_size=256, grid_size=8, input_dim=2048, num_clusters=10000),
        "shapes-64": dict(image_size=64, grid_size=16, input_dim=128, num_clusters=1024),
    }

    def __post_init__(self) -> None:
        _num_resolution_steps(self.image_size, self.grid_size)

    @property
    def num_down_blocks(self) -> int:
        return _num_resolution_steps(self.image_size, self.grid_size)

    @classmethod
    def for_generator(
        cls, config: GeneratorConfig, num_clusters: int, channels: int = 64
    ) -> DiscriminatorConfig:
        """The discriminator matching a generator's output size, grid and feature dimension."""
        return cls(config.output_size, config.grid_size, config.input_dim, num_clusters, channels)


# ---------------------------------------------------------------------------------------------
# Generator building blocks
# ---------------------------------------------------------------------------------------------


class SPADE(nn.Module):
    """Spatially-adaptive normalisation (Park et al., 2019) driven by the layout map y.

    ``out = InstanceNorm(x) · (1 + gamma(y)) + beta(y)``, with y resized bilinearly to x's size and
    passed through a shared Conv3×3 + ReLU. No spectral norm here (as in the reference).
    """

    def __init__(self, channels: int, style_channels: int, hidden: int = 128) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.shared = _init_conv(nn.Conv2d(style_channels, hidden, 3, padding=1))
        self.gamma = _init_conv(nn.Conv2d(hidden, channels, 3, padding=1))
        self.beta = _init_conv(nn.Conv2d(hidden, channels, 3, padding=1))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """x: FloatTensor[B, C, H, W]; style: FloatTensor[B, C_y, h, w] → FloatTensor[B, C, H, W]."""
        actv = F.relu(self.shared(_resize(style, x.shape[-2:])))
        # gamma and beta read the same activation: one conv with stacked kernels is the same maths
        # as two and halves the passes over the largest tensor of the block.
        weight = torch.cat([self.gamma.weight, self.beta.weight])
        bias = torch.cat([self.gamma.bias, self.beta.bias])
        gamma, beta = F.conv2d(actv, weight, bias, padding=1).chunk(2, dim=1)
        return self.norm(x) * (1 + gamma) + beta


class NoiseInjection(nn.Module):
    """StyleGAN's per-pixel Gaussian noise times a learned scalar (zero at init)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(
        self, x: torch.Tensor, enabled: bool, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if not enabled:
            return x
        b, _, h, w = x.shape
        noise = torch.randn((b, 1, h, w), generator=generator, device=x.device, dtype=x.dtype)
        return x + self.weight.to(x.dtype) * noise


class SpadeResBlock(nn.Module):
    """Residual up-block: SPADE, noise, LeakyReLU, ×2 bilinear, SN Conv3×3; SPADE, noise, LeakyReLU,
    SN Conv3×3; shortcut ×2 bilinear + SN Conv1×1."""

    def __init__(self, channels: int, style_channels: int, spade_hidden: int = 128) -> None:
        super().__init__()
        self.spade1 = SPADE(channels, style_channels, spade_hidden)
        self.noise1 = NoiseInjection()
        self.conv1 = _sn_conv(channels, channels, 3)
        self.spade2 = SPADE(channels, style_channels, spade_hidden)
        self.noise2 = NoiseInjection()
        self.conv2 = _sn_conv(channels, channels, 3)
        self.shortcut = _sn_conv(channels, channels, 1)

    def forward(
        self,
        x: torch.Tensor,
        style: torch.Tensor,
        noise: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """x: FloatTensor[B, C, H, W] → FloatTensor[B, C, 2H, 2W]."""
        size = (2 * x.shape[-2], 2 * x.shape[-1])
        h = F.leaky_relu(self.noise1(self.spade1(x, style), noise, generator), LEAKY_SLOPE)
        h = self.conv1(_resize(h, size))
        h = F.leaky_relu(self.noise2(self.spade2(h, style), noise, generator), LEAKY_SLOPE)
        h = self.conv2(h)
        # A 1×1 conv and bilinear resizing are both linear and commute (bilinear weights sum to one,
        # so the bias survives): convolving before upsampling is the same function at 1/4 the cost.
        return h + _resize(self.shortcut(x), size)


class SpadeGenerator(PretrainedMixin, nn.Module):
    """Visual-word features ``[B, D, N, N]`` → images ``[B, 3, S, S] in [-1, 1]`` (see module doc)."""

    config_class = GeneratorConfig
    missing_hint = "train it with `xlxmert generator train`"

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.bottleneck = _init_conv(nn.Conv2d(c.input_dim, c.bottleneck_dim, 1))
        self.initial_conv = _sn_conv(c.bottleneck_dim, c.channels, 3, groups=c.groups)
        self.style_conv = _sn_conv(c.bottleneck_dim, c.channels, 3, groups=c.groups)
        self.blocks = nn.ModuleList(
            SpadeResBlock(c.channels, c.channels, c.spade_hidden) for _ in range(c.num_blocks)
        )
        self.to_rgb = nn.ModuleList(
            _init_conv(nn.Conv2d(c.channels, 3, 3, padding=1)) for _ in range(c.num_blocks)
        )

    def forward(
        self,
        features: torch.Tensor,
        noise: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Paint images.

        features: FloatTensor[B, D, N, N] (centroid features of the visual words, row-major cells);
        noise: inject Gaussian noise (default: ``config.noise``; off makes the output deterministic);
        generator: seeds the noise. Returns FloatTensor[B, 3, S, S] in [-1, 1].
        """
        c = self.config
        if features.dim() != 4 or features.shape[1:] != (c.input_dim, c.grid_size, c.grid_size):
            raise XLXMERTError(
                f"generator expects features [B, {c.input_dim}, {c.grid_size}, {c.grid_size}], "
                f"got {list(features.shape)}"
            )
        noise = c.noise if noise is None else noise
        z = torch.tanh(self.bottleneck(features))
        h = self.initial_conv(z)
        style = self.style_conv(z)
        rgb = None
        for block, to_rgb in zip(self.blocks, self.to_rgb):
            h = block(h, style, noise, generator)
            out = _resize(to_rgb(h), c.output_size)
            rgb = out if rgb is None else rgb + out
        return torch.tanh(rgb)


# ---------------------------------------------------------------------------------------------
# Discriminator
# ---------------------------------------------------------------------------------------------


class DiscriminatorBlock(nn.Module):
    """Residual down-block: [LeakyReLU], SN Conv3×3, InstanceNorm, LeakyReLU, SN Conv3×3, AvgPool 2;
    shortcut AvgPool + SN Conv1×1 (identity for a same-shape block)."""

    def __init__(self, in_ch: int, out_ch: int, downsample: bool = True, first: bool = False) -> None:
        super().__init__()
        self.first = first
        self.downsample = downsample
        self.conv1 = _sn_conv(in_ch, out_ch, 3)
        self.norm = nn.InstanceNorm2d(out_ch, affine=False)
        self.conv2 = _sn_conv(out_ch, out_ch, 3)
        self.shortcut = _sn_conv(in_ch, out_ch, 1) if (downsample or in_ch != out_ch) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: FloatTensor[B, C_in, H, W] → FloatTensor[B, C_out, H/2, W/2] (or H, W)."""
        # No activation before the first block: its input is the image itself.
        h = x if self.first else F.leaky_relu(x, LEAKY_SLOPE)
        h = F.leaky_relu(self.norm(self.conv1(h)), LEAKY_SLOPE)
        h = self.conv2(h)
        skip = x
        if self.downsample:
            h = F.avg_pool2d(h, 2)
            skip = F.avg_pool2d(skip, 2)  # pooling first: 1×1 conv and avg-pool commute
        if self.shortcut is not None:
            skip = self.shortcut(skip)
        return h + skip


class DiscriminatorOutput(NamedTuple):
    """score: FloatTensor[B] (adversarial, higher = real); cluster_logits: FloatTensor[B, N*N, K];
    features: the blocks' outputs (for feature matching), coarsest last."""

    score: torch.Tensor
    cluster_logits: torch.Tensor
    features: list[torch.Tensor]


class Discriminator(nn.Module):
    """Images ``[B, 3, S, S]`` → adversarial score and per-cell visual-word logits (AC-GAN)."""

    def __init__(self, config: DiscriminatorConfig, centroids: torch.Tensor) -> None:
        super().__init__()
        k, d = config.num_clusters, config.input_dim
        if centroids.shape != (k, d):
            raise XLXMERTError(f"discriminator expects centroids [{k}, {d}], got {list(centroids.shape)}")
        self.config = config
        ch = config.channels
        blocks = [DiscriminatorBlock(3, ch, downsample=True, first=True)]
        blocks += [DiscriminatorBlock(ch, ch) for _ in range(config.num_down_blocks - 1)]
        blocks.append(DiscriminatorBlock(ch, ch, downsample=False))
        self.blocks = nn.ModuleList(blocks)
        self.adversarial_head = _sn_conv(ch, 1, 3)
        self.cluster_proj = _init_conv(nn.Conv2d(ch, d, 1))
        # Last layer of the cluster head = the frozen centroid matrix (only its bias learns), as in
        # the transformer's CCC head: a cell is classified by similarity to each visual word.
        self.register_buffer("centroids", centroids.detach().float().clone())
        self.cluster_bias = nn.Parameter(torch.zeros(k))

    def forward(self, images: torch.Tensor) -> DiscriminatorOutput:
        """images: FloatTensor[B, 3, S, S] in [-1, 1]."""
        h = images
        features = []
        for block in self.blocks:
            h = block(h)
            features.append(h)
        score = self.adversarial_head(F.relu(h)).mean(dim=(1, 2, 3))
        cells = self.cluster_proj(h).flatten(2).transpose(1, 2)  # [B, N*N, D], row-major cells
        logits = F.linear(cells, self.centroids.to(cells.dtype), self.cluster_bias.to(cells.dtype))
        return DiscriminatorOutput(score, logits, features)


def features_from_ids(ids: torch.Tensor, centroids: torch.Tensor, grid_size: int) -> torch.Tensor:
    """The generator's input map from visual-word ids.

    ids: LongTensor[B, N*N] (row-major); centroids: FloatTensor[K, D] → FloatTensor[B, D, N, N].
    """
    if ids.dim() != 2 or ids.shape[1] != grid_size * grid_size:
        raise XLXMERTError(f"expected ids [B, {grid_size * grid_size}], got {list(ids.shape)}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= centroids.shape[0]):
        raise XLXMERTError(f"visual ids must lie in [0, {centroids.shape[0]}); was the vocabulary changed?")
    feats = centroids[ids.long()]  # [B, N*N, D]
    return feats.transpose(1, 2).reshape(ids.shape[0], centroids.shape[1], grid_size, grid_size)


__all__ = [
    "GeneratorConfig",
    "DiscriminatorConfig",
    "SPADE",
    "NoiseInjection",
    "SpadeResBlock",
    "SpadeGenerator",
    "DiscriminatorBlock",
    "DiscriminatorOutput",
    "Discriminator",
    "features_from_ids",
]
