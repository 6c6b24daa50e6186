"""Backbones: images → a feature map that :class:`~xlxmert.visual.grid.GridFeatureExtractor` pools.

The paper (§4.1, C.4) RoI-pools a Faster R-CNN trained on Visual Genome over an 8×8 grid. We ship
two backbones behind one small interface, and accept any other:

- :class:`ShapesBackbone` (kind ``"shapes"``): a small CNN trained on ShapeScenes by
  :func:`xlxmert.training.backbone.train_backbone`, supervised per grid cell on what the cell holds
  (the place; the colour and shape of every object overlapping it; how much of the cell each
  covers). It is our analogue of the detector trained on Visual Genome: its grid features carry the
  semantics that k-means turns into visual words, and are invariant to the world's render noise.
- :class:`ResNetBackbone` (kind ``"resnet50"``): ImageNet ResNet-50 C5 (``D = 2048``) through
  transformers' ``ResNetModel``, for real images.

**The backbone hook.** Any ``nn.Module`` whose ``forward(images: FloatTensor[B, 3, H, W] in
[-1, 1])`` returns a feature map ``FloatTensor[B, D, h, w]`` works as a backbone. Give it an
``image_size`` attribute (the side images are resized to before the forward pass; default 64) and
``save_pretrained(dir)`` if you want to save a :class:`GridFeatureExtractor` or a feature store
built with it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from xlxmert.data.shapes import world
from xlxmert.errors import XLXMERTError
from xlxmert.utils.config import CONFIG_NAME, PresetConfig, load_config, save_config
from xlxmert.utils.weights import PretrainedMixin, load_weights, save_weights

# ShapeScenes vocabulary (WORLD.md), in the fixed order the per-cell heads use.
PLACES: tuple[str, ...] = tuple(world.PLACES)
COLORS: tuple[str, ...] = tuple(world.COLORS)
SHAPES: tuple[str, ...] = tuple(world.SHAPES)

# What a shapes backbone's forward returns (ShapesBackboneConfig.output).
BACKBONE_OUTPUTS = ("features", "predictions")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ShapesBackboneConfig(PresetConfig):
    """A small CNN for ShapeScenes.

    ``widths[0]`` is the full-resolution stem stage; every later stage halves the resolution, so the
    feature map has stride ``2 ** (len(widths) - 1)`` (64-px images, 3 stages → a 16×16 map, which
    tiles both an 8×8 and a 16×16 grid exactly). ``feature_dim`` is the grid-feature size ``D``.
    ``train_grid_sizes``: the grids the per-cell heads are trained on (one backbone serves all).
    ``output``: what :meth:`ShapesBackbone.forward` returns, ``"features"`` (the ``D``-dim feature
    map) or ``"predictions"`` (the per-cell heads' place probabilities and colour×shape coverages at
    every map position, ``num_places + num_objects`` channels: a semantic feature whose k-means
    words are objects, with no words spent on the background's render noise).
    """

    kind: str = "shapes"
    image_size: int = 64
    widths: tuple[int, ...] = field(
        default=(16, 32, 96),
        metadata={"help": "channels of each stage (each after the first halves the resolution)"},
    )
    feature_dim: int = field(default=128, metadata={"help": "grid feature size D"})
    train_grid_sizes: tuple[int, ...] = (8, 16)
    num_places: int = len(PLACES)
    num_colors: int = len(COLORS)
    num_shapes: int = len(SHAPES)
    output: str = "features"

    PRESET_KIND: ClassVar[str] = "backbone"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # D = 128 chosen by benchmarks/bench_features.py (see the shapes-64 VocabularyConfig).
        "shapes-64": dict(image_size=64, widths=(16, 32, 96), feature_dim=128, train_grid_sizes=(8, 16)),
        # The paper's grid-feature size (D = 2048) on 256-px ShapeScenes: stride 8 → 32×32 map.
        "paper": dict(image_size=256, widths=(16, 32, 64, 128), feature_dim=2048, train_grid_sizes=(8,)),
    }

    def __post_init__(self) -> None:
        if self.output not in BACKBONE_OUTPUTS:
            raise XLXMERTError(f"backbone output must be one of {BACKBONE_OUTPUTS}, got {self.output!r}")

    @property
    def stride(self) -> int:
        return 2 ** (len(self.widths) - 1)

    @property
    def num_objects(self) -> int:
        """Number of (colour, shape) classes: colour-major, ``c * num_shapes + s``."""
        return self.num_colors * self.num_shapes

    @property
    def output_dim(self) -> int:
        """Channels of the forward output: ``feature_dim``, or ``num_places + num_objects``."""
        return self.feature_dim if self.output == "features" else self.num_places + self.num_objects


def _conv_block(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    # BatchNorm, not per-image Group/InstanceNorm: normalising each image's maps would erase the
    # flat background colour, i.e. the place. Extraction runs in eval mode (running statistics).
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class ShapesBackbone(PretrainedMixin, nn.Module):
    """Small CNN: ``images: FloatTensor[B, 3, S, S] in [-1, 1]`` → ``FloatTensor[B, D, S/stride, S/stride]``.

    Feature map = ``proj(context(last stage)) + skip(stem pooled to the stride)``. The per-cell
    heads (``place_head``, ``object_head``, ``color_head``, ``shape_head``, ``coverage_head``) read
    pooled grid features (:meth:`predict_cells`). With ``config.output == "predictions"`` the
    forward pass returns the place and coverage heads' probabilities instead of the feature map
    (:meth:`with_output` switches a trained backbone).
    """

    config_class = ShapesBackboneConfig
    missing_hint = "train it with `xlxmert backbone train`"

    def __init__(self, config: ShapesBackboneConfig | None = None) -> None:
        super().__init__()
        self.config = config or ShapesBackboneConfig()
        widths = self.config.widths
        stages = [_conv_block(3, widths[0])]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            stages.append(
                nn.Sequential(_conv_block(c_in, c_out, stride=2), _conv_block(c_out, c_out, dilation=2))
            )
        self.stages = nn.ModuleList(stages)
        # Dilated convs widen the receptive field (65 px at stride 4) so that a cell's feature sees
        # the whole object overlapping it, which is what tells a star from a cross at its edge.
        self.context = _conv_block(widths[-1], widths[-1], dilation=4)
        self.proj = nn.Conv2d(widths[-1], self.config.feature_dim, 1)
        # Skip from the full-resolution stem, pooled to the map's stride: gives every cell its own
        # pixels' colour directly, which the deep path alone learns slowly.
        self.skip = nn.Conv2d(widths[0], self.config.feature_dim, 1)
        d = self.config.feature_dim
        self.place_head = nn.Linear(d, self.config.num_places)
        self.object_head = nn.Linear(d, self.config.num_objects)
        # Factorised colour and shape presence: each is seen far more often than any one pair,
        # which speeds learning and covers the pairs held out of training (WORLD.md).
        self.color_head = nn.Linear(d, self.config.num_colors)
        self.shape_head = nn.Linear(d, self.config.num_shapes)
        self.coverage_head = nn.Linear(d, self.config.num_objects)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def feature_dim(self) -> int:
        """Channels of :meth:`forward`'s output (``config.output_dim``)."""
        return self.config.output_dim

    def with_output(self, output: str) -> ShapesBackbone:
        """The same weights with ``config.output = output`` (a new module; ``self`` is unchanged)."""
        other = type(self)(dataclasses.replace(self.config, output=output))
        other.load_state_dict(self.state_dict())
        return other.train(self.training)

    def feature_stages(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of each conv stage: ``[B, widths[k], S / 2**k, S / 2**k]`` for k = 0..len(widths)-1.

        The generator trainer uses these as the perceptual-loss network on ShapeScenes.
        """
        out = []
        x = images
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """``images: FloatTensor[B, 3, H, W] in [-1, 1]`` → ``[B, feature_dim, H/stride, W/stride]``."""
        stages = self.feature_stages(images)
        stem = nn.functional.avg_pool2d(stages[0], self.config.stride)
        return self.proj(self.context(stages[-1])) + self.skip(stem)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images: FloatTensor[B, 3, H, W] in [-1, 1]`` → ``[B, output_dim, H/stride, W/stride]``.

        ``output == "predictions"``: channels are ``softmax(place)`` then ``sigmoid(coverage)``
        (colour-major pairs), each map position read by the heads. Both are fractions of an area,
        so the grid's average pooling of them is the cell's own place distribution and coverage.
        """
        fmap = self.feature_map(images)
        if self.config.output == "features":
            return fmap
        heads = self.predict_cells(fmap.permute(0, 2, 3, 1))
        probs = torch.cat([heads["place"].softmax(-1), heads["coverage"].sigmoid()], dim=-1)
        return probs.permute(0, 3, 1, 2).contiguous()

    def predict_cells(self, cells: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-cell logits from grid features ``cells: FloatTensor[..., D]``.

        Returns ``place: [..., num_places]`` (softmax), ``objects: [..., C*S]`` (sigmoid: does an
        object of this colour and shape overlap the cell), ``colors: [..., C]`` and ``shapes: [..., S]``
        (sigmoid: does an object of this colour / shape overlap it), ``coverage: [..., C*S]``
        (sigmoid: the fraction of the cell covered by objects of this colour and shape).
        """
        return {
            "place": self.place_head(cells),
            "objects": self.object_head(cells),
            "colors": self.color_head(cells),
            "shapes": self.shape_head(cells),
            "coverage": self.coverage_head(cells),
        }

    @classmethod
    def check_config(cls, config: ShapesBackboneConfig, folder: Path) -> None:
        if config.kind != "shapes":
            raise XLXMERTError(
                f"{folder} holds a {config.kind!r} backbone, not a shapes one; use load_backbone"
            )


@dataclass(frozen=True)
class ResNetBackboneConfig:
    """ImageNet ResNet-50 C5 grid features. ``resnet``: the transformers ``ResNetConfig`` as a dict.

    ``image_size = 256`` gives an 8×8 C5 map (stride 32), which the paper's 8×8 grid tiles exactly.
    """

    kind: str = "resnet50"
    image_size: int = 256
    resnet: dict = dataclasses.field(default_factory=dict)


class ResNetBackbone(nn.Module):
    """ResNet C5 feature map: ``images: FloatTensor[B, 3, H, W] in [-1, 1]`` → ``[B, 2048, H/32, W/32]``.

    Images are mapped from [-1, 1] to ImageNet mean/std normalisation inside, so callers pass the
    package's usual image tensors.
    """

    def __init__(self, config: ResNetBackboneConfig, resnet: nn.Module | None = None) -> None:
        super().__init__()
        from transformers import ResNetConfig, ResNetModel

        self.config = config
        self.resnet = resnet if resnet is not None else ResNetModel(ResNetConfig(**config.resnet))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_config(cls, resnet_config: Any, image_size: int = 256) -> ResNetBackbone:
        """Randomly initialised, from a transformers ``ResNetConfig`` (tests, offline)."""
        return cls(ResNetBackboneConfig(image_size=image_size, resnet=_resnet_config_dict(resnet_config)))

    @classmethod
    def from_pretrained(cls, name_or_dir: str | Path, image_size: int = 256) -> ResNetBackbone:
        """Load a folder we saved, or a transformers ResNet (local folder; a hub name needs internet)."""
        path = Path(name_or_dir)
        if path.is_dir() and _folder_kind(path) == "resnet50":
            config = load_config(ResNetBackboneConfig, path)
            model = cls(config)
            load_weights(model, path)
            return model.eval()
        from transformers import ResNetModel

        try:
            resnet = ResNetModel.from_pretrained(str(name_or_dir))
        except OSError as exc:
            raise XLXMERTError(
                f"cannot load ResNet weights {name_or_dir!r} ({str(exc).splitlines()[0]}); "
                "download microsoft/resnet-50 once with internet and pass its folder"
            ) from None
        config = ResNetBackboneConfig(image_size=image_size, resnet=_resnet_config_dict(resnet.config))
        return cls(config, resnet=resnet).eval()

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def feature_dim(self) -> int:
        return int(self.resnet.config.hidden_sizes[-1])

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        return ((images + 1) / 2 - self.mean) / self.std

    def feature_stages(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of ResNet stages 1–4 (C2..C5), the paper's perceptual-loss features."""
        out = self.resnet(self._normalise(images), output_hidden_states=True)
        return list(out.hidden_states[1:])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images: FloatTensor[B, 3, H, W] in [-1, 1]`` → C5 ``FloatTensor[B, 2048, H/32, W/32]``."""
        return self.resnet(self._normalise(images)).last_hidden_state

    def save_pretrained(self, folder: str | Path) -> Path:
        folder = Path(folder)
        save_config(self.config, folder)
        save_weights(self, folder)
        return folder


def _resnet_config_dict(resnet_config: Any) -> dict:
    keys = (
        "num_channels",
        "embedding_size",
        "hidden_sizes",
        "depths",
        "layer_type",
        "hidden_act",
        "downsample_in_first_stage",
        "downsample_in_bottleneck",
    )
    data = resnet_config.to_dict()
    return {k: data[k] for k in keys if k in data}


def _folder_kind(folder: Path) -> str | None:
    path = folder / CONFIG_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("kind")
    except (json.JSONDecodeError, AttributeError):
        return None


def load_backbone(folder: str | Path) -> nn.Module:
    """Rebuild the backbone saved in ``folder`` (either kind), in eval mode."""
    folder = Path(folder)
    if not folder.is_dir():
        raise XLXMERTError(f"backbone folder not found: {folder}")
    kind = _folder_kind(folder)
    if kind == "shapes":
        return ShapesBackbone.from_pretrained(folder)
    if kind == "resnet50":
        return ResNetBackbone.from_pretrained(folder)
    raise XLXMERTError(
        f"{folder} is not an xlxmert backbone folder (config.json with kind 'shapes' or 'resnet50'); "
        "train one with `xlxmert backbone train`"
    )


def backbone_image_size(backbone: nn.Module) -> int:
    """The side images are resized to for ``backbone`` (the hook's ``image_size``, default 64)."""
    return int(getattr(backbone, "image_size", 64))


__all__ = [
    "BACKBONE_OUTPUTS",
    "COLORS",
    "PLACES",
    "SHAPES",
    "ResNetBackbone",
    "ResNetBackboneConfig",
    "ShapesBackbone",
    "ShapesBackboneConfig",
    "backbone_image_size",
    "load_backbone",
]
