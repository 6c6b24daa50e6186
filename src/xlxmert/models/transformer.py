"""The X-LXMERT transformer (paper §3, §5; C.1-C.2) and its LXMERT+Grid baseline.

Built on transformers' ``LxmertModel`` (held as ``self.bert``), driven layer by layer so the
language stream can be encoded once and reused: in LXMERT the language layers never see the
image, so painting (which re-predicts the grid many times for one caption) caches
:meth:`XLxmertForPreTraining.encode_text`. Module names are the authors' (which are HuggingFace's),
so their ``Epoch20_LXRT.pth`` loads with :meth:`load_reference_state_dict`.

What X-LXMERT adds beside LXMERT, each named for the paper's concept:

- the **grid embedder** (:meth:`XLxmertForPreTraining.visual_features`): an N×N grid of visual
  words, each looked up in the frozen centroid matrix; masked cells get the learned ``mask_feat``
  *before* the visual projection; cell boxes ``[j/N, i/N, (j+1)/N, (i+1)/N]`` are still encoded;
  transformers' ``LxmertVisualFeatureEncoder`` then computes ``(LN(fc(feat)) + LN(fc(box))) / 2``;
- the **CCC head** (:class:`ClusterClassificationHead`): cluster-centroid classification whose
  output layer *is* the frozen centroid matrix (only its bias trains);
- for the LXMERT+Grid baseline (``variant="lxmert-grid"``): exact features in and the
  masked-feature regression head (:class:`MaskedFeatureRegressionHead`, MVFR).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from transformers import LxmertConfig, LxmertModel
from transformers.models.lxmert.modeling_lxmert import (
    LxmertPredictionHeadTransform,
    LxmertPreTrainingHeads,
    LxmertVisualAnswerHead,
)

from xlxmert.errors import XLXMERTError
from xlxmert.utils.config import load_config, save_config
from xlxmert.utils.model_folder import update_model_index
from xlxmert.utils.weights import load_weights, save_weights
from xlxmert.visual.grid import cell_boxes

VARIANTS = ("x-lxmert", "lxmert-grid")
VISUAL_TARGETS = ("clusters", "regression")
CENTROIDS_FILE = "centroids.safetensors"
ANSWERS_FILE = "answers.json"


# Chosen for a CPU by measurement (benchmarks/bench_pretrain.py): the shapes vocabulary's 16×16 grid
# makes 256 visual tokens, 4× the paper's; hidden 256 (4/2/2) costs ~4× this one's FLOPs.
# grid/K/D/vocab/answers are replaced by the vocabulary, tokenizer and answer list at build time.
_SHAPES_64: dict[str, Any] = dict(
    vocab_size=256,
    hidden_size=128,
    num_attention_heads=4,
    intermediate_size=512,
    l_layers=3,
    r_layers=2,
    x_layers=2,
    grid_size=16,
    num_clusters=1024,
    feature_dim=128,
    num_answers=64,
)


@dataclass(frozen=True)
class XLxmertConfig:
    """Sizes and switches of the transformer.

    ``variant``: ``"x-lxmert"`` (visual input = cluster ids looked up in the centroids) or
    ``"lxmert-grid"`` (exact grid features in). ``visual_target``: ``"clusters"`` (CCC) or
    ``"regression"`` (MVFR, SmoothL1 to the features). The paper's X-LXMERT is (x-lxmert, clusters),
    its LXMERT+Grid is (lxmert-grid, regression); the other two are Table 3-style ablations.
    ``standardize_features``: subtract the centroids' per-dimension mean and divide by their std
    before the visual projection (not in the paper; grid features share a large common component
    that the projection's LayerNorm would otherwise spend its range on). Off for the paper's sizes
    and for checkpoints written before it existed. ``position_frequencies`` F: besides its box,
    each cell's position input gets sin/cos of its centre at F octaves (:func:`cell_positions`;
    not in the paper, whose 4-d box is F = 0). Through one linear layer and a LayerNorm, a box
    gives attention a smooth, nearly monotone function of position, from which singling out a
    cell's neighbours is hard; sinusoids make such local patterns easy (as in NeRF/Transformers).
    ``standardize_ccc_output``: CCC's frozen output weights are the standardized centroids (the
    statistics of ``standardize_features``) instead of the raw ones (not in the paper). Raw centroids
    of low-dimensional features (the backbone's 40-d cell predictions) differ by a few hundredths,
    so the head's logits barely separate words until its weights have grown large.
    """

    vocab_size: int
    hidden_size: int
    num_attention_heads: int
    intermediate_size: int
    l_layers: int
    r_layers: int
    x_layers: int
    grid_size: int
    num_clusters: int
    feature_dim: int
    num_answers: int
    max_text_length: int = 20
    variant: str = "x-lxmert"
    visual_target: str = "clusters"
    dropout: float = 0.1
    standardize_features: bool = False
    position_frequencies: int = 0
    standardize_ccc_output: bool = False

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # BERT-base sizes, 9/5/5 layers, 10000 clusters of 2048-d fc6 features, 9500 QA answers.
        "paper": dict(
            vocab_size=30522,
            hidden_size=768,
            num_attention_heads=12,
            intermediate_size=3072,
            l_layers=9,
            r_layers=5,
            x_layers=5,
            grid_size=8,
            num_clusters=10000,
            feature_dim=2048,
            num_answers=9500,
        ),
        "shapes-64": _SHAPES_64,
        # The GPU version of shapes-64 (scripts/pretrain_gpu.sh): 4× the width, same depth.
        "shapes-64-large": {
            **_SHAPES_64,
            "hidden_size": 256,
            "intermediate_size": 1024,
            "standardize_features": True,
        },
    }

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise XLXMERTError(f"unknown variant {self.variant!r}; choose one of {VARIANTS}")
        if self.visual_target not in VISUAL_TARGETS:
            raise XLXMERTError(
                f"unknown visual_target {self.visual_target!r}; choose one of {VISUAL_TARGETS}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise XLXMERTError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.position_frequencies < 0:
            raise XLXMERTError(f"position_frequencies must be >= 0, got {self.position_frequencies}")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> XLxmertConfig:
        """Preset ``name`` (``paper`` or ``shapes-64``) with ``overrides`` applied (e.g. ``num_clusters``)."""
        if name not in cls.PRESETS:
            raise XLXMERTError(f"unknown transformer preset {name!r}; choose one of {sorted(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[name], **overrides})

    @property
    def num_cells(self) -> int:
        """M = grid_size², the number of visual tokens."""
        return self.grid_size * self.grid_size

    def lxmert_config(self) -> LxmertConfig:
        """The transformers ``LxmertConfig`` of the backbone (max positions 512 as in BERT, so
        bert-base-uncased / unc-nlp weights load)."""
        return LxmertConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            l_layers=self.l_layers,
            r_layers=self.r_layers,
            x_layers=self.x_layers,
            hidden_dropout_prob=self.dropout,
            attention_probs_dropout_prob=self.dropout,
            visual_feat_dim=self.feature_dim,
            visual_pos_dim=4 + 4 * self.position_frequencies,
            num_qa_labels=self.num_answers,
            max_position_embeddings=512,
            type_vocab_size=2,
            hidden_act="gelu",
            initializer_range=0.02,
        )


@dataclass
class TextEncoding:
    """Output of the language layers.

    ``hidden: FloatTensor[B, L, H]``, ``attention_mask: LongTensor[B, L]``.
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

    ``forward(vision_hidden: FloatTensor[B, M, H]) -> logits FloatTensor[B, M, K]``.
    """

    def __init__(self, lxmert_config: LxmertConfig, centroids: torch.Tensor) -> None:
        super().__init__()
        self.transform = LxmertPredictionHeadTransform(lxmert_config)
        self.linear_feat = nn.Linear(lxmert_config.hidden_size, centroids.shape[1])
        self.out_cluster = FrozenCentroidLinear(centroids)

    def forward(self, vision_hidden: torch.Tensor) -> torch.Tensor:
        return self.out_cluster(self.linear_feat(self.transform(vision_hidden)))


class MaskedFeatureRegressionHead(nn.Module):
    """MVFR (LXMERT's masked visual feature regression): transform, then Linear H→D.

    ``forward(vision_hidden: FloatTensor[B, M, H]) -> FloatTensor[B, M, D]``.
    """

    def __init__(self, lxmert_config: LxmertConfig, feature_dim: int) -> None:
        super().__init__()
        self.transform = LxmertPredictionHeadTransform(lxmert_config)
        self.linear_feat = nn.Linear(lxmert_config.hidden_size, feature_dim)

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


def _extended_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, L] 1/0 mask → additive [B, 1, 1, L] mask (0 where attended, dtype-min where not)."""
    mask = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - mask) * torch.finfo(dtype).min


class XLxmertForPreTraining(nn.Module):
    """X-LXMERT (or LXMERT+Grid) with its pretraining heads.

    ``centroids: FloatTensor[K, D]`` is the frozen visual vocabulary (None: zeros, to be filled by
    :meth:`set_centroids`, :meth:`from_pretrained` or :meth:`load_reference_state_dict`).
    """

    def __init__(self, config: XLxmertConfig, centroids: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        self.answers: list[str] | None = None
        lx = config.lxmert_config()
        K, D = config.num_clusters, config.feature_dim
        if centroids is None:
            centroids = torch.zeros(K, D)
        if tuple(centroids.shape) != (K, D):
            raise XLXMERTError(
                f"centroids have shape {tuple(centroids.shape)} but the config wants ({K}, {D}); "
                "build the config from the vocabulary (num_clusters, feature_dim)"
            )
        self.bert = LxmertModel(lx)
        self.cls = LxmertPreTrainingHeads(lx)
        self.answer_head = LxmertVisualAnswerHead(lx, config.num_answers)
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
            self.obj_predict_head: nn.Module = ClusterClassificationHead(lx, out)
        else:
            self.obj_predict_head = MaskedFeatureRegressionHead(lx, D)
        for head in (self.cls, self.answer_head, self.obj_predict_head):
            head.apply(self._init_head)
        self.tie_weights()

    # -- construction ---------------------------------------------------------------------------
    @staticmethod
    def _init_head(module: nn.Module) -> None:
        # Same scheme as LxmertModel's own init (normal std 0.02, zero bias, unit LayerNorm).
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, FrozenCentroidLinear):
            nn.init.zeros_(module.bias)

    def tie_weights(self) -> None:
        """MLM decoder = word embeddings (one Parameter, same storage), as in BERT."""
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

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

    # -- forward ---------------------------------------------------------------------------------
    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextEncoding:
        """Embeddings + language layers only: ``input_ids, attention_mask: LongTensor[B, L]``."""
        token_types = torch.zeros_like(input_ids)
        hidden = self.bert.embeddings(input_ids, token_types)
        extended = _extended_mask(attention_mask, hidden.dtype)
        for layer in self.bert.encoder.layer:
            hidden = layer(hidden, extended)[0]
        return TextEncoding(hidden=hidden, attention_mask=attention_mask)

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

    def forward(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        visual_ids: torch.Tensor | None = None,
        visual_feats: torch.Tensor | None = None,
        visual_mask: torch.Tensor | None = None,
        text_encoding: TextEncoding | None = None,
    ) -> XLxmertOutput:
        """Run every head. ``input_ids, attention_mask: LongTensor[B, L]`` (ignored when
        ``text_encoding`` is given); ``visual_ids: LongTensor[B, M]`` or ``visual_feats:
        FloatTensor[B, M, D]``; ``visual_mask: BoolTensor[B, M]`` (True = masked)."""
        if text_encoding is None:
            if input_ids is None or attention_mask is None:
                raise XLXMERTError("give input_ids and attention_mask, or a text_encoding")
            text_encoding = self.encode_text(input_ids, attention_mask)
        lang = text_encoding.hidden
        lang_mask = _extended_mask(text_encoding.attention_mask, lang.dtype)
        feats = self.visual_features(visual_ids, visual_feats, visual_mask)
        positions = self.cell_positions.to(feats.dtype).expand(feats.shape[0], -1, -1)
        vision = self.bert.encoder.visn_fc(feats, positions)
        for layer in self.bert.encoder.r_layers:
            vision = layer(vision, None)[0]
        for layer in self.bert.encoder.x_layers:
            lang, vision = layer(lang, lang_mask, vision, None)[:2]
        pooled = self.bert.pooler(lang)
        mlm_logits, itm_logits = self.cls(lang, pooled)
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

    # -- persistence -----------------------------------------------------------------------------
    def save_pretrained(self, model_dir: str | Path) -> Path:
        """Write ``model_dir/transformer/`` (config.json, model.safetensors, answers.json) and update
        ``model_index.json``. Centroids are not written: they live in ``model_dir/vocabulary/``."""
        folder = Path(model_dir) / "transformer"
        save_config(self.config, folder)
        save_weights(self, folder)
        if self.answers is not None:
            (folder / ANSWERS_FILE).write_text(json.dumps(self.answers, indent=1) + "\n")
        update_model_index(model_dir)
        return folder

    @classmethod
    def from_pretrained(cls, model_dir: str | Path) -> XLxmertForPreTraining:
        """Load ``model_dir/transformer/`` with the centroids of ``model_dir/vocabulary/``."""
        model_dir = Path(model_dir)
        folder = model_dir / "transformer"
        config = load_config(XLxmertConfig, folder)
        centroids = load_centroids(model_dir / "vocabulary")
        model = cls(config, centroids)
        load_weights(model, folder)
        answers = folder / ANSWERS_FILE
        if answers.is_file():
            model.answers = json.loads(answers.read_text())
        return model

    def load_reference_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, list[str]]:
        """Load the authors' ``Epoch20_LXRT.pth`` layout (keys may start with ``module.``; HF's
        ``lxmert.`` prefix is read as ``bert.``). The centroids come from
        ``obj_predict_head.out_cluster.weight``. Returns ``{"missing": [...], "unexpected": [...]}``."""
        ours = self.state_dict()
        loaded: dict[str, torch.Tensor] = {}
        unexpected: list[str] = []
        for key, tensor in state_dict.items():
            name = key.removeprefix("module.")
            if name.startswith("lxmert."):
                name = "bert." + name.removeprefix("lxmert.")
            if name == "obj_predict_head.out_cluster.weight":
                if self.config.visual_target != "clusters":
                    unexpected.append(key)
                    continue
                self.set_centroids(tensor.float())
                continue
            if name not in ours:
                unexpected.append(key)
                continue
            if tuple(ours[name].shape) != tuple(tensor.shape):
                raise XLXMERTError(
                    f"{key} has shape {tuple(tensor.shape)}, this model wants {tuple(ours[name].shape)}; "
                    "use the paper preset (or matching sizes) for this checkpoint"
                )
            loaded[name] = tensor
        missing, _ = self.load_state_dict(loaded, strict=False)
        tied = {"cls.predictions.decoder.weight"}
        return {"missing": [k for k in missing if k not in tied], "unexpected": unexpected}

    def num_parameters(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def load_centroids(vocab_dir: str | Path) -> torch.Tensor:
    """``FloatTensor[K, D]`` from ``vocab_dir/centroids.safetensors`` (key ``centroids``)."""
    path = Path(vocab_dir) / CENTROIDS_FILE
    if not path.is_file():
        raise XLXMERTError(
            f"no {CENTROIDS_FILE} in {vocab_dir}: build the vocabulary first (xlxmert vocab build)"
        )
    tensors = load_file(str(path))
    if "centroids" not in tensors:
        raise XLXMERTError(f"{path} has no 'centroids' tensor (keys: {sorted(tensors)})")
    return tensors["centroids"].float()


def config_for_data(config: XLxmertConfig, **data_sizes: int) -> XLxmertConfig:
    """``config`` with sizes that the data decide (vocab_size, grid_size, num_clusters, feature_dim,
    num_answers) replaced."""
    return dataclasses.replace(config, **data_sizes)


def grid_size_of(num_cells: int) -> int:
    """N for M = N² cells (error if M is not a square)."""
    n = math.isqrt(num_cells)
    if n * n != num_cells:
        raise XLXMERTError(f"{num_cells} visual ids per image is not a square grid")
    return n
