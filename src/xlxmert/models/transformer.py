"""The X-LXMERT transformer (paper §3, §5; C.1-C.2) and its LXMERT+Grid baseline.

Built on transformers' ``LxmertModel`` (held as ``self.bert``), driven layer by layer so the
language stream can be encoded once and reused: in LXMERT the language layers never see the
image, so painting (which re-predicts the grid many times for one caption) caches
:meth:`XLxmertForPreTraining.encode_text`. Module names are the authors' (which are HuggingFace's),
so their ``Epoch20_LXRT.pth`` loads with :meth:`load_reference_state_dict`.

What X-LXMERT adds beside LXMERT (the grid embedder, the CCC head; for the LXMERT+Grid baseline,
``variant="lxmert-grid"``, exact features in and the MVFR head) is shared with the single-stream
family and lives in :mod:`xlxmert.models.grid_embedding`. Here the grid embedder's features go
through transformers' ``LxmertVisualFeatureEncoder``: ``(LN(fc(feat)) + LN(fc(box))) / 2``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from transformers import LxmertConfig, LxmertModel
from transformers.models.lxmert.modeling_lxmert import LxmertPreTrainingHeads, LxmertVisualAnswerHead

from xlxmert.errors import XLXMERTError
from xlxmert.models.grid_embedding import (
    ANSWERS_FILE,
    ClusterClassificationHead,
    FrozenCentroidLinear,
    GridEmbeddingModel,
    MaskedFeatureRegressionHead,
    TextEncoding,
    XLxmertOutput,
    cell_positions,
    check_config,
    extended_mask,
    grid_size_of,
)
from xlxmert.utils.config import PresetConfig
from xlxmert.visual.grid import cell_boxes

__all__ = [
    "ANSWERS_FILE",
    "ClusterClassificationHead",
    "FrozenCentroidLinear",
    "MaskedFeatureRegressionHead",
    "TextEncoding",
    "XLxmertConfig",
    "XLxmertForPreTraining",
    "XLxmertOutput",
    "cell_boxes",
    "cell_positions",
    "config_for_data",
    "grid_size_of",
]

VARIANTS = ("x-lxmert", "lxmert-grid")


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
class XLxmertConfig(PresetConfig):
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
    hidden_size: int = field(metadata={"help": "transformer width"})
    num_attention_heads: int = field(metadata={"help": "attention heads per layer"})
    intermediate_size: int = field(metadata={"help": "feed-forward width"})
    l_layers: int
    r_layers: int
    x_layers: int
    grid_size: int
    num_clusters: int
    feature_dim: int
    num_answers: int
    max_text_length: int = 20
    variant: str = "x-lxmert"
    visual_target: str = field(
        default="clusters",
        metadata={"help": "CCC or MVFR (--variant grid: regression)", "choices": ("clusters", "regression")},
    )
    dropout: float = field(default=0.1, metadata={"help": "dropout of every layer"})
    standardize_features: bool = field(
        default=False, metadata={"help": "standardize visual features by the centroids' statistics"}
    )
    position_frequencies: int = field(
        default=0,
        metadata={
            "help": "add sin/cos of each cell's centre at F octaves to its box (0: the paper)",
            "metavar": "F",
        },
    )
    standardize_ccc_output: bool = field(
        default=False, metadata={"help": "CCC's output weights: the standardized centroids (off: the paper)"}
    )

    PRESET_KIND: ClassVar[str] = "transformer"
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
        check_config(self, VARIANTS)

    @property
    def num_cells(self) -> int:
        """M = grid_size², the number of visual tokens."""
        return self.grid_size * self.grid_size

    @property
    def exact_features(self) -> bool:
        """Whether the model reads exact grid features (LXMERT+Grid) rather than visual words."""
        return self.variant == "lxmert-grid"

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


class XLxmertForPreTraining(GridEmbeddingModel):
    """X-LXMERT (or LXMERT+Grid) with its pretraining heads.

    ``centroids: FloatTensor[K, D]`` is the frozen visual vocabulary (None: zeros, to be filled by
    :meth:`set_centroids`, :meth:`from_pretrained` or :meth:`load_reference_state_dict`).
    """

    CONFIG_CLASS = XLxmertConfig

    def __init__(self, config: XLxmertConfig, centroids: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        self.answers: list[str] | None = None
        lx = config.lxmert_config()
        self.bert = LxmertModel(lx)
        self.cls = LxmertPreTrainingHeads(lx)
        self.answer_head = LxmertVisualAnswerHead(lx, config.num_answers)
        self._build_grid_embedding(config, centroids, lx)
        for head in (self.cls, self.answer_head, self.obj_predict_head):
            head.apply(self._init_head)
        self.tie_weights()

    def tie_weights(self) -> None:
        """MLM decoder = word embeddings (one Parameter, same storage), as in BERT."""
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    # -- forward ---------------------------------------------------------------------------------
    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextEncoding:
        """Embeddings + language layers only: ``input_ids, attention_mask: LongTensor[B, L]``."""
        token_types = torch.zeros_like(input_ids)
        hidden = self.bert.embeddings(input_ids, token_types)
        extended = extended_mask(attention_mask, hidden.dtype)
        for layer in self.bert.encoder.layer:
            hidden = layer(hidden, extended)[0]
        return TextEncoding(hidden=hidden, attention_mask=attention_mask)

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
        lang_mask = extended_mask(text_encoding.attention_mask, lang.dtype)
        feats = self.visual_features(visual_ids, visual_feats, visual_mask)
        positions = self.cell_positions.to(feats.dtype).expand(feats.shape[0], -1, -1)
        vision = self.bert.encoder.visn_fc(feats, positions)
        for layer in self.bert.encoder.r_layers:
            vision = layer(vision, None)[0]
        for layer in self.bert.encoder.x_layers:
            lang, vision = layer(lang, lang_mask, vision, None)[:2]
        pooled = self.bert.pooler(lang)
        mlm_logits, itm_logits = self.cls(lang, pooled)
        return self.heads_output(lang, vision, pooled, mlm_logits, itm_logits)

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


def config_for_data(config: XLxmertConfig, **data_sizes: int) -> XLxmertConfig:
    """``config`` with sizes that the data decide (vocab_size, grid_size, num_clusters, feature_dim,
    num_answers) replaced."""
    return dataclasses.replace(config, **data_sizes)
