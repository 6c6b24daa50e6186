"""The image–text matching surrogate that grades R-precision and semantic accuracy (paper §6.1,
appendix E.1).

The paper used ViLBERT as a surrogate independent of X-LXMERT. Here :class:`ImageTextMatcher`
plays that part: a residual CNN (the ShapeScenes evaluator's, never X-LXMERT's backbone) and a small
cross-modal transformer whose caption words attend to the image's grid cells, trained on ShapeScenes
against in-batch and hard negatives (``matcher_training.train_matcher``), with its own seed and
word vocabulary, and never used to train the evaluated models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from xlxmert.data.shapes import world
from xlxmert.errors import XLXMERTError
from xlxmert.evaluation.graders.evaluator import ResidualCNN
from xlxmert.evaluation.negatives import tokenize
from xlxmert.utils.config import PresetConfig
from xlxmert.utils.weights import PretrainedMixin

SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[UNK]")


@dataclass(frozen=True)
class MatcherConfig(PresetConfig):
    """The surrogate's architecture and word vocabulary (stored with its weights)."""

    image_size: int = 64
    widths: tuple[int, ...] = (32, 64, 128, 256)  # residual CNN stages (the evaluator's, to start from it)
    cells: int = 16  # image tokens: a cells×cells grid (16 = the stride-4 map at 64 px, one per centre cell)
    cell_outputs: int = len(world.COLORS) * len(world.SHAPES) + 4  # the evaluator's centre-map channels
    dim: int = 128
    layers: int = 1  # caption-only self-attention layers (computed once per caption)
    fusion_layers: int = 2  # per (caption, image) pair: self-attention, cross-attention to the cells, MLP
    heads: int = 4
    max_words: int = 24
    vocab: tuple[str, ...] = ()
    seed: int = 20202  # its own seed, unrelated to X-LXMERT's

    PRESET_KIND: ClassVar[str] = "matcher"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "shapes-64": {},
        # The evaluator's "paper" preset (256 px, one more stage), so the CNN can start from it.
        "paper": {"image_size": 256, "widths": (32, 64, 128, 256, 256)},
    }


class _Attention(nn.Module):
    """Multi-head attention whose keys/values can be computed once and reused (image cells are
    shared by every caption an image is scored against)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise XLXMERTError(f"MatcherConfig.dim {dim} is not a multiple of heads {heads}")
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # [P, heads, M, dim/heads]

    def keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``context: [P, M, dim]`` → keys and values ``[P, heads, M, dim/heads]``."""
        k, v = self.key_value(context).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def forward(
        self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x: [P, L, dim]`` attends to ``k, v``; ``keep: BoolTensor[P, 1, 1, M]`` (True = may attend)."""
        out = F.scaled_dot_product_attention(self._split(self.query(x)), k, v, attn_mask=keep)
        return self.out(out.transpose(1, 2).flatten(2))


class FusionLayer(nn.Module):
    """One cross-modal layer over a caption's words (pre-norm residual): the words attend to each
    other, then to the image cells, then an MLP. Stacked, a word can first find what it names
    ("red", "circle") and then combine it with its neighbours' findings (is the red thing the circle?
    is it left of the square?), which a per-word best-cell score cannot."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.self_norm = nn.LayerNorm(dim)
        self.self_attn = _Attention(dim, heads)
        self.cross_norm = nn.LayerNorm(dim)
        self.image_norm = nn.LayerNorm(dim)
        self.cross_attn = _Attention(dim, heads)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def image_keys(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``image: [B, cells², dim]`` → this layer's keys and values of the cells."""
        return self.cross_attn.keys_values(self.image_norm(image))

    def forward(
        self, x: torch.Tensor, keep: torch.Tensor, image_k: torch.Tensor, image_v: torch.Tensor
    ) -> torch.Tensor:
        """``x: [P, L, dim]``, ``keep: BoolTensor[P, L]`` (False = padding), image keys/values of P pairs."""
        h = self.self_norm(x)
        x = x + self.self_attn(h, *self.self_attn.keys_values(h), keep[:, None, None, :])
        x = x + self.cross_attn(self.cross_norm(x), image_k, image_v)
        return x + self.mlp(self.mlp_norm(x))


class ImageTextMatcher(PretrainedMixin, nn.Module):
    """Scores how well a caption matches an image (a small cross-modal transformer).

    The image becomes ``cells²`` tokens: a residual CNN's stride-4 and top maps pooled to the grid,
    projected, plus learned row and column embeddings (so "on the left", "above" can be read off).
    A caption becomes ``[CLS]`` + word tokens (word + position embeddings, ``layers`` caption-only
    self-attention layers, computed once per caption). A pair then goes through ``fusion_layers``
    :class:`FusionLayer` s, in which the words attend to the image cells; the ``[CLS]`` token's
    final state is mapped to the score. Trained against one-word swaps
    (:func:`~xlxmert.evaluation.negatives.hard_negative_pool`), the score has to bind colour to shape
    and check relations, positions and counts.
    """

    config_class = MatcherConfig
    missing_hint = "train one: xlxmert evaluator train"

    def __init__(self, config: MatcherConfig):
        super().__init__()
        if not config.vocab:
            raise XLXMERTError("MatcherConfig.vocab is empty; build it with build_vocab(captions)")
        if len(config.widths) < 3:
            raise XLXMERTError("MatcherConfig.widths needs at least 3 stages")
        self.config = config
        self.word_index = {w: i for i, w in enumerate(config.vocab)}
        dim = config.dim
        self.cnn = ResidualCNN(config.widths)
        mid, top = config.widths[2], config.widths[-1]
        # The evaluator's centre-map head (same layout, so it can start from it): per stride-4 cell,
        # hidden features that already say which colour–shape pair is centred there.
        self.cell_head = nn.Sequential(
            nn.Conv2d(mid + top, mid, 3, 1, 1), nn.ReLU(), nn.Conv2d(mid, config.cell_outputs, 1)
        )
        self.image_proj = nn.Linear(mid + config.cell_outputs, dim)
        self.row_pos = nn.Parameter(torch.zeros(config.cells, 1, dim))
        self.col_pos = nn.Parameter(torch.zeros(1, config.cells, dim))
        self.word_emb = nn.Embedding(len(config.vocab), dim)
        self.word_pos = nn.Parameter(torch.zeros(1, config.max_words + 1, dim))
        self.text_encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(
                dim, config.heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True
            ),
            config.layers,
            enable_nested_tensor=False,
        )
        self.fusion = nn.ModuleList(FusionLayer(dim, config.heads) for _ in range(config.fusion_layers))
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 1))
        for pos in (self.row_pos, self.col_pos, self.word_pos):
            nn.init.normal_(pos, std=0.02)

    def init_from_evaluator(self, evaluator: nn.Module) -> None:
        """Start the CNN from a trained evaluator's backbone (same widths): it already tells colours,
        shapes and places apart, so matching is learnt in minutes instead of hours."""
        if tuple(evaluator.config.widths) != tuple(self.config.widths):
            raise XLXMERTError(
                f"matcher widths {self.config.widths} differ from the evaluator's {evaluator.config.widths}"
            )
        self.cnn.load_state_dict(evaluator.backbone.state_dict())
        self.cell_head.load_state_dict(evaluator.center_head.state_dict())

    # ------------------------------------------------------------------ image side
    def grid_features(self, images: torch.Tensor) -> torch.Tensor:
        """``images: FloatTensor[B, 3, H, W] in [-1, 1]`` → CNN features ``FloatTensor[B, cells², C]``."""
        size = self.config.image_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(
                images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
        maps = self.cnn(images)
        mid = maps[2]
        context = F.interpolate(maps[-1], size=mid.shape[-2:], mode="nearest")
        hidden = self.cell_head[1](self.cell_head[0](torch.cat([mid, context], dim=1)))
        grid = torch.cat([hidden, self.cell_head[2](hidden)], dim=1)
        return F.adaptive_avg_pool2d(grid, self.config.cells).flatten(2).transpose(1, 2)

    def embed_grid(self, grid: torch.Tensor) -> torch.Tensor:
        """``grid: FloatTensor[B, cells², C]`` (:meth:`grid_features`) → image tokens ``[B, cells², dim]``."""
        return self.image_proj(grid) + (self.row_pos + self.col_pos).flatten(0, 1)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """``images: FloatTensor[B, 3, H, W] in [-1, 1]`` → image tokens ``FloatTensor[B, cells², dim]``."""
        return self.embed_grid(self.grid_features(images))

    def image_keys(self, image: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Image tokens ``[B, cells², dim]`` → keys and values ``[B, heads, cells², dim/heads]`` per fusion
        layer (computed once per image, shared by every caption it is scored against)."""
        return [layer.image_keys(image) for layer in self.fusion]

    # ------------------------------------------------------------------ text side
    def encode_captions(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens: FloatTensor[C, 1 + W, dim], keep: BoolTensor[C, 1 + W])``, W the longest caption's
        word count (at most ``max_words``); ``keep`` is False on padding."""
        words = [tokenize(c)[: self.config.max_words] for c in captions]
        length = 1 + max((len(w) for w in words), default=0)
        ids = torch.zeros(len(captions), length, dtype=torch.long)
        unk = self.word_index["[UNK]"]
        ids[:, 0] = self.word_index["[CLS]"]
        for row, ws in enumerate(words):
            ids[row, 1 : 1 + len(ws)] = torch.tensor(
                [self.word_index.get(w, unk) for w in ws], dtype=torch.long
            )
        keep = ids != self.word_index["[PAD]"]
        tokens = self.text_encoder(self.word_emb(ids) + self.word_pos[:, :length], src_key_padding_mask=~keep)
        return tokens, keep

    # ------------------------------------------------------------------ pairs
    def fuse(
        self, text: torch.Tensor, keep: torch.Tensor, keys: Sequence[tuple[torch.Tensor, torch.Tensor]]
    ) -> torch.Tensor:
        """Scores ``FloatTensor[P]`` of P (caption, image) pairs: ``text: [P, L, dim]``, ``keep: [P, L]``
        from :meth:`encode_captions`, ``keys`` from :meth:`image_keys` (one row per pair)."""
        x = text
        for layer, (k, v) in zip(self.fusion, keys):
            x = layer(x, keep, k, v)
        return self.head(x[:, 0]).squeeze(-1)

    def pair_scores(
        self,
        text: torch.Tensor,
        keep: torch.Tensor,
        keys: Sequence[tuple[torch.Tensor, torch.Tensor]],
        text_idx: torch.Tensor,
        image_idx: torch.Tensor,
    ) -> torch.Tensor:
        """Scores ``FloatTensor[P]`` of caption ``text_idx[p]`` with image ``image_idx[p]``."""
        return self.fuse(text[text_idx], keep[text_idx], [(k[image_idx], v[image_idx]) for k, v in keys])

    @torch.no_grad()
    def score(
        self, images: torch.Tensor, captions: Sequence[Sequence[str]], chunk: int = 512
    ) -> torch.Tensor:
        """Scores ``FloatTensor[B, K]``: each of B images against its own K captions."""
        self.eval()
        k = len(captions[0])
        if any(len(c) != k for c in captions):
            raise XLXMERTError("score() needs the same number of captions for every image")
        keys = self.image_keys(self.encode_images(images))
        unique = sorted({c for row in captions for c in row})
        where = {c: i for i, c in enumerate(unique)}
        text, keep = self.encode_captions(unique)
        text_idx = torch.tensor([where[c] for row in captions for c in row])
        image_idx = torch.arange(len(captions)).repeat_interleave(k)
        out = torch.cat(
            [
                self.pair_scores(text, keep, keys, t, i)
                for t, i in zip(text_idx.split(chunk), image_idx.split(chunk))
            ]
        )
        return out.view(len(captions), k)
