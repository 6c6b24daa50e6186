"""What X-LXMERT adds to a vision-and-language transformer, whichever its family (paper §5, §7.2).

The paper applies its refinements to LXMERT (two streams, :mod:`xlxmert.models.transformer`) and to
UNITER (one stream, :mod:`xlxmert.models.uniter`). Both share, from here:

- the **grid embedder** (:meth:`GridEmbeddingModel.visual_features`): an N×N grid of visual words,
  each looked up in the frozen centroid matrix; masked cells get the learned ``mask_feat``
  *before* the visual projection; each cell's box ``[j/N, i/N, (j+1)/N, (i+1)/N]`` is its position;
- the **CCC head** (:class:`ClusterClassificationHead`): cluster-centroid classification whose
  output layer *is* the frozen centroid matrix (only its bias trains), or for the +Grid baselines
  the masked-feature regression head (:class:`MaskedFeatureRegressionHead`, MVFR);
- the output of every head (:class:`XLxmertOutput`), the cached text (:class:`TextEncoding`) and
  the ``transformer/`` folder format (config.json, model.safetensors, answers.json; the centroids
  are the vocabulary component's, handed to :meth:`GridEmbeddingModel.from_pretrained`).

A family subclasses :class:`GridEmbeddingModel`, builds its own layers, then calls
:meth:`GridEmbeddingModel._build_grid_embedding`; it implements ``encode_text`` and ``forward``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.lxmert.modeling_lxmert import LxmertPredictionHeadTransform

from xlxmert.errors import XLXMERTError
from xlxmert.utils.config import load_config, save_config
from xlxmert.utils.weights import load_weights, save_weights
from xlxmert.visual.grid import cell_boxes

ANSWERS_FILE = "answers.json"


@dataclass
class TextEncoding:
    """What a family caches of a caption across sampling steps.

    ``hidden: FloatTensor[B, L, H]`` (two-stream: the language layers' output; single-stream: the
    embedded words), ``attention_mask: LongTensor[B, L]``.
    """

    hidden: torch.Tensor
    attention_mask: torch.Tensor


@dataclass
class XLxmertOutput:
    """All heads' outputs for one forward pass (M = grid_size², V = vocab, K = clusters, A = answers).

    ``mlm_logits [B, L, V]``; ``visual_logits [B, M, K]`` (CCC; None for the regression target);
    ``visual_regression [B, M, D]`` (regression target; else None); ``itm_logits [B, 2]`` (index 1 =
    matched); ``qa_logits [B, A]``; ``language_hidden [B, L, H]``; ``vision_hidden [B, M, H]``;
    ``pooled [B, H]``.
    """

    mlm_logits: torch.Tensor
    visual_logits: torch.Tensor | None
    visual_regression: torch.Tensor | None
    itm_logits: torch.Tensor
    qa_logits: torch.Tensor
    language_hidden: torch.Tensor
    vision_hidden: torch.Tensor
    pooled: torch.Tensor


class FrozenCentroidLinear(nn.Module):
    """Linear D→K whose weight is the frozen centroid matrix (a buffer) and whose bias trains."""

    def __init__(self, centroids: torch.Tensor) -> None:
        super().__init__()
        # Not persistent: the centroids live in the vocabulary/ component, never in transformer/.
        self.register_buffer("weight", centroids, persistent=False)
        self.bias = nn.Parameter(torch.zeros(centroids.shape[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype), self.bias.to(x.dtype))


class ClusterClassificationHead(nn.Module):
    """CCC (paper §5.1): dense, GELU, LayerNorm, Linear H→D, then the frozen centroids D→K.

    ``head_config``: any transformers config with ``hidden_size`` and ``hidden_act``.
    ``forward(vision_hidden: FloatTensor[B, M, H]) -> logits FloatTensor[B, M, K]``.
    """

    def __init__(self, head_config: Any, centroids: torch.Tensor) -> None:
        super().__init__()
        self.transform = LxmertPredictionHeadTransform(head_config)
        self.linear_feat = nn.Linear(head_config.hidden_size, centroids.shape[1])
        self.out_cluster = FrozenCentroidLinear(centroids)

    def forward(self, vision_hidden: torch.Tensor) -> torch.Tensor:
        return self.out_cluster(self.linear_feat(self.transform(vision_hidden)))


class MaskedFeatureRegressionHead(nn.Module):
    """MVFR (LXMERT's masked visual feature regression): transform, then Linear H→D.

    ``forward(vision_hidden: FloatTensor[B, M, H]) -> FloatTensor[B, M, D]``.
    """

    def __init__(self, head_config: Any, feature_dim: int) -> None:
        super().__init__()
        self.transform = LxmertPredictionHeadTransform(head_config)
        self.linear_feat = nn.Linear(head_config.hidden_size, feature_dim)

    def forward(self, vision_hidden: torch.Tensor) -> torch.Tensor:
        return self.linear_feat(self.transform(vision_hidden))


def cell_positions(grid_size: int, frequencies: int = 0) -> torch.Tensor:
    """``FloatTensor[N*N, 4 + 4F]``: each cell's box ``[x0, y0, x1, y1]`` (:func:`cell_boxes`, the
    LXMERT position input), then for f < F ``sin, cos`` of ``2^f·π·cx`` and of ``2^f·π·cy`` at the
    cell's centre (cx, cy)."""
    boxes = cell_boxes(grid_size)
    if frequencies == 0:
        return boxes
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # [M, 2]
    angles = centres[:, None, :] * (math.pi * 2.0 ** torch.arange(frequencies, dtype=torch.float32))[:, None]
    waves = torch.stack(
        [angles[..., 0].sin(), angles[..., 0].cos(), angles[..., 1].sin(), angles[..., 1].cos()], -1
    )
    return torch.cat([boxes, waves.reshape(len(boxes), -1)], dim=1)


VISUAL_TARGETS = ("clusters", "regression")


def check_config(config: Any, variants: tuple[str, ...]) -> None:
    """The checks every family's config shares: a known variant and visual target, heads that
    divide the width, non-negative position octaves (:class:`XLXMERTError` otherwise)."""
    if config.variant not in variants:
        raise XLXMERTError(f"unknown variant {config.variant!r}; choose one of {variants}")
    if config.visual_target not in VISUAL_TARGETS:
        raise XLXMERTError(f"unknown visual_target {config.visual_target!r}; choose one of {VISUAL_TARGETS}")
    if config.hidden_size % config.num_attention_heads:
        raise XLXMERTError(
            f"hidden_size {config.hidden_size} is not a multiple of "
            f"num_attention_heads {config.num_attention_heads}"
        )
    if config.position_frequencies < 0:
        raise XLXMERTError(f"position_frequencies must be >= 0, got {config.position_frequencies}")


def extended_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, L] 1/0 mask → additive [B, 1, 1, L] mask (0 where attended, dtype-min where not)."""
    mask = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - mask) * torch.finfo(dtype).min


class GridEmbeddingModel(nn.Module):
    """Base of the transformer families: the grid embedder, the visual head and persistence.

    The config (a frozen dataclass) must have ``grid_size``, ``num_clusters``, ``feature_dim``,
    ``num_cells``, ``visual_target``, ``standardize_features``, ``standardize_ccc_output`` and
    ``position_frequencies``. ``CONFIG_CLASS`` names it for :meth:`from_pretrained`.
    """

    CONFIG_CLASS: ClassVar[type]

    def _build_grid_embedding(self, config: Any, centroids: torch.Tensor | None, head_config: Any) -> None:
        """Create ``mask_feat``, the centroid buffers, the cell positions and ``obj_predict_head``
        (after the family's own layers, so that a seed gives the same initial weights as before)."""
        K, D = config.num_clusters, config.feature_dim
        if centroids is None:
            centroids = torch.zeros(K, D)
        if tuple(centroids.shape) != (K, D):
            raise XLXMERTError(
                f"centroids have shape {tuple(centroids.shape)} but the config wants ({K}, {D}); "
                "build the config from the vocabulary (num_clusters, feature_dim)"
            )
        # Learned stand-in for a masked cell's feature, fed through the same projection (init zeros).
        self.mask_feat = nn.Parameter(torch.zeros(D))
        self.register_buffer("centroids", centroids.detach().float().clone(), persistent=False)
        # Per-dimension statistics of the centroids (derived, never saved): standardize_features.
        self.register_buffer("feature_mean", torch.zeros(D), persistent=False)
        self.register_buffer("feature_std", torch.ones(D), persistent=False)
        self._update_feature_stats()
        self.register_buffer(
            "cell_positions",
            cell_positions(config.grid_size, config.position_frequencies),
            persistent=False,
        )
        if config.visual_target == "clusters":
            out = self._standardized_centroids() if config.standardize_ccc_output else self.centroids
            self.obj_predict_head: nn.Module = ClusterClassificationHead(head_config, out)
        else:
            self.obj_predict_head = MaskedFeatureRegressionHead(head_config, D)

    @staticmethod
    def _init_head(module: nn.Module) -> None:
        # BERT's scheme (normal std 0.02, zero bias, unit LayerNorm), as the backbones init themselves.
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, FrozenCentroidLinear):
            nn.init.zeros_(module.bias)

    def _update_feature_stats(self) -> None:
        """Mean and std per dimension. A dimension whose std is under 1e-3 of the largest is left
        unscaled (std 1): it is constant up to noise (e.g. a backbone prediction channel that the
        training data never turn on), and dividing would blow that noise up to the scale of the
        informative dimensions."""
        with torch.no_grad():
            c = self.centroids
            self.feature_mean.copy_(c.mean(0))
            std = c.std(0) if c.shape[0] > 1 else torch.ones_like(c[0])
            floor = max(1e-6, 1e-3 * float(std.max()))
            self.feature_std.copy_(torch.where(std > floor, std, torch.ones_like(std)))

    def _standardized_centroids(self) -> torch.Tensor:
        """``FloatTensor[K, D]``: the centroids by the per-dimension statistics."""
        return (self.centroids - self.feature_mean) / self.feature_std

    def set_centroids(self, centroids: torch.Tensor) -> None:
        """Copy ``centroids: FloatTensor[K, D]`` into the frozen lookup and the CCC output layer
        (the same centroids, or standardized ones with ``standardize_ccc_output``)."""
        if tuple(centroids.shape) != tuple(self.centroids.shape):
            raise XLXMERTError(
                f"centroids of shape {tuple(centroids.shape)} do not fit this model "
                f"({tuple(self.centroids.shape)}); rebuild the config from this vocabulary"
            )
        with torch.no_grad():
            self.centroids.copy_(centroids.to(self.centroids))
            self._update_feature_stats()
            head = self.obj_predict_head
            if isinstance(head, ClusterClassificationHead):
                if self.config.standardize_ccc_output:
                    head.out_cluster.weight.copy_(self._standardized_centroids())
                elif head.out_cluster.weight is not self.centroids:
                    # .to(device) moves each registration of a shared buffer separately.
                    head.out_cluster.weight.copy_(self.centroids)

    def visual_features(
        self,
        visual_ids: torch.Tensor | None = None,
        visual_feats: torch.Tensor | None = None,
        visual_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Grid embedder input: ``FloatTensor[B, M, D]`` features, ``mask_feat`` in masked cells.

        ``visual_feats [B, M, D]`` (exact features) win over ``visual_ids [B, M]`` (looked up in the
        centroids); a masked cell's id is ignored, so samplers may put any value there.
        """
        M, K = self.config.num_cells, self.config.num_clusters
        if visual_feats is not None:
            feats = visual_feats.to(self.mask_feat.dtype)
            if feats.shape[1:] != (M, self.config.feature_dim):
                raise XLXMERTError(
                    f"visual_feats must be [B, {M}, {self.config.feature_dim}], got {tuple(feats.shape)}"
                )
        elif visual_ids is not None:
            if visual_ids.shape[1] != M:
                raise XLXMERTError(f"visual_ids must be [B, {M}], got {tuple(visual_ids.shape)}")
            ids = visual_ids.long()
            if visual_mask is not None:
                ids = ids.masked_fill(visual_mask.bool(), 0)
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= K):
                raise XLXMERTError(
                    f"visual ids must lie in 0..{K - 1}; was the vocabulary built with another K?"
                )
            feats = self.centroids[ids]
        else:
            raise XLXMERTError("give visual_ids or visual_feats")
        if self.config.standardize_features:
            feats = (feats - self.feature_mean.to(feats.dtype)) / self.feature_std.to(feats.dtype)
        if visual_mask is not None:
            feats = torch.where(visual_mask.bool()[..., None], self.mask_feat.to(feats.dtype), feats)
        return feats

    def heads_output(
        self,
        lang: torch.Tensor,
        vision: torch.Tensor,
        pooled: torch.Tensor,
        mlm_logits: torch.Tensor,
        itm_logits: torch.Tensor,
    ) -> XLxmertOutput:
        """Every head's output from a family's final states ``lang [B, L, H]``, ``vision [B, M, H]``,
        ``pooled [B, H]`` and its text heads' ``mlm_logits [B, L, V]``, ``itm_logits [B, 2]``: the
        visual head reads ``vision``, the QA head ``pooled``."""
        visual_out = self.obj_predict_head(vision)
        clusters = self.config.visual_target == "clusters"
        return XLxmertOutput(
            mlm_logits=mlm_logits,
            visual_logits=visual_out if clusters else None,
            visual_regression=None if clusters else visual_out,
            itm_logits=itm_logits,
            qa_logits=self.answer_head(pooled),
            language_hidden=lang,
            vision_hidden=vision,
            pooled=pooled,
        )

    def predict_visual(
        self,
        text_encoding: TextEncoding,
        visual_ids: torch.Tensor | None = None,
        visual_mask: torch.Tensor | None = None,
        visual_feats: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """CCC logits ``[B, M, K]`` (or regressed features ``[B, M, D]``) for a cached caption."""
        out = self.forward(None, None, visual_ids, visual_feats, visual_mask, text_encoding=text_encoding)
        return out.visual_logits if out.visual_logits is not None else out.visual_regression

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the ``transformer/`` component into ``folder``: config.json, model.safetensors and
        answers.json. Centroids are not written: they are the vocabulary component's."""
        folder = Path(folder)
        save_config(self.config, folder)
        save_weights(self, folder)
        if self.answers is not None:
            (folder / ANSWERS_FILE).write_text(json.dumps(self.answers, indent=1) + "\n")
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, centroids: torch.Tensor) -> GridEmbeddingModel:
        """Load a ``transformer/`` component folder with ``centroids: FloatTensor[K, D]``, the
        model's vocabulary's (``VisualVocabulary.from_pretrained(MODEL/vocabulary).centroids``;
        a pipeline loads the vocabulary once and hands them over)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise XLXMERTError(f"transformer folder not found: {folder} (pretrain one: xlxmert pretrain)")
        config = load_config(cls.CONFIG_CLASS, folder)
        model = cls(config, torch.as_tensor(centroids).float())
        load_weights(model, folder)
        answers = folder / ANSWERS_FILE
        if answers.is_file():
            model.answers = json.loads(answers.read_text())
        return model

    def num_parameters(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def grid_size_of(num_cells: int) -> int:
    """N for M = N² cells (error if M is not a square)."""
    n = math.isqrt(num_cells)
    if n * n != num_cells:
        raise XLXMERTError(f"{num_cells} visual ids per image is not a square grid")
    return n
