"""X-UNITER and its UNITER+Grid baseline: the single-stream family (paper §7.2, Table 2).

UNITER reads the caption's words and the image's cells as one sequence through one stack of BERT
layers (transformers' ``BertModel``, held as ``self.bert``). The paper's refinements apply
unchanged (:mod:`xlxmert.models.grid_embedding`): the grid embedder (visual words looked up in the
frozen centroids, ``mask_feat`` in masked cells), uniform masking and the CCC head; UNITER+Grid
(``variant="uniter-grid"``) reads exact grid features and regresses them (MVFR).

Each cell enters as UNITER's image embedding ``LN(LN(fc(feat)) + LN(fc(box)) + type₁)``; words are
BERT's embeddings (word + position + type₀). The heads are the two-stream family's: MLM on the word
positions, CCC (or MVFR) on the cell positions, ITM and QA on the pooled first token ([CLS]).

What painting can cache: in one stream every layer attends across words and cells, so only the
embedded words are independent of the image; :meth:`XUniterForPreTraining.encode_text` returns them
and each sampling step runs every layer (LXMERT's cache also skips its language layers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import BertConfig, BertModel
from transformers.models.bert.modeling_bert import BertPreTrainingHeads
from transformers.models.lxmert.modeling_lxmert import LxmertVisualAnswerHead

from xlxmert.errors import XLXMERTError
from xlxmert.models.grid_embedding import (
    GridEmbeddingModel,
    TextEncoding,
    XLxmertOutput,
    check_config,
    extended_mask,
)
from xlxmert.utils.config import PresetConfig

VARIANTS = ("x-uniter", "uniter-grid")

# As wide as the two-stream shapes-64 model, and as many weights: 10 single-stream layers against
# its 3 language + 2 vision + 2 cross-modality layers (2.2 M against 2.1 M on the shipped data).
_SHAPES_64: dict[str, Any] = dict(
    vocab_size=256,
    hidden_size=128,
    num_attention_heads=4,
    intermediate_size=512,
    num_layers=10,
    grid_size=16,
    num_clusters=1024,
    feature_dim=128,
    num_answers=64,
)


@dataclass(frozen=True)
class XUniterConfig(PresetConfig):
    """Sizes and switches of the single-stream transformer (fields as :class:`XLxmertConfig`'s;
    ``num_layers`` BERT layers instead of LXMERT's three stacks).

    ``variant``: ``"x-uniter"`` (visual input = cluster ids looked up in the centroids) or
    ``"uniter-grid"`` (exact grid features in). ``visual_target``: ``"clusters"`` (CCC) or
    ``"regression"`` (MVFR). The paper's X-UNITER is (x-uniter, clusters), UNITER+Grid is
    (uniter-grid, regression).
    """

    vocab_size: int
    hidden_size: int
    num_attention_heads: int
    intermediate_size: int
    num_layers: int
    grid_size: int
    num_clusters: int
    feature_dim: int
    num_answers: int
    max_text_length: int = 20
    variant: str = "x-uniter"
    visual_target: str = "clusters"
    dropout: float = 0.1
    standardize_features: bool = False
    position_frequencies: int = 0
    standardize_ccc_output: bool = False

    PRESET_KIND: ClassVar[str] = "transformer"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # UNITER-base = BERT-base: 12 layers, hidden 768, 12 heads; the paper's grid and vocabulary.
        "paper": dict(
            vocab_size=30522,
            hidden_size=768,
            num_attention_heads=12,
            intermediate_size=3072,
            num_layers=12,
            grid_size=8,
            num_clusters=10000,
            feature_dim=2048,
            num_answers=9500,
        ),
        "shapes-64": _SHAPES_64,
    }

    def __post_init__(self) -> None:
        check_config(self, VARIANTS)
        if self.num_layers < 1:
            raise XLXMERTError(f"num_layers must be >= 1, got {self.num_layers}")

    @property
    def num_cells(self) -> int:
        """M = grid_size², the number of visual tokens."""
        return self.grid_size * self.grid_size

    @property
    def exact_features(self) -> bool:
        """Whether the model reads exact grid features (UNITER+Grid) rather than visual words."""
        return self.variant == "uniter-grid"

    def bert_config(self) -> BertConfig:
        """The transformers ``BertConfig`` of the single stream (512 positions, 2 token types)."""
        return BertConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            hidden_dropout_prob=self.dropout,
            attention_probs_dropout_prob=self.dropout,
            max_position_embeddings=512,
            type_vocab_size=2,
            hidden_act="gelu",
            initializer_range=0.02,
            attn_implementation="eager",
        )


class UniterImageEmbeddings(nn.Module):
    """UNITER's image embedder on grid cells: ``LN(LN(fc(feat)) + LN(fc(pos)) + type₁)``.

    ``forward(feats: FloatTensor[B, M, D], positions: FloatTensor[B, M, P], type_embedding:
    FloatTensor[H]) -> FloatTensor[B, M, H]``.
    """

    def __init__(self, feature_dim: int, position_dim: int, bert_config: BertConfig) -> None:
        super().__init__()
        hidden = bert_config.hidden_size
        self.feat_fc = nn.Linear(feature_dim, hidden)
        self.feat_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.box_fc = nn.Linear(position_dim, hidden)
        self.box_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.dropout = nn.Dropout(bert_config.hidden_dropout_prob)

    def forward(
        self, feats: torch.Tensor, positions: torch.Tensor, type_embedding: torch.Tensor
    ) -> torch.Tensor:
        x = self.feat_norm(self.feat_fc(feats)) + self.box_norm(self.box_fc(positions)) + type_embedding
        return self.dropout(self.norm(x))


class XUniterForPreTraining(GridEmbeddingModel):
    """X-UNITER (or UNITER+Grid) with its pretraining heads; the interface of
    :class:`~xlxmert.models.transformer.XLxmertForPreTraining` (``encode_text``, ``forward``,
    ``predict_visual``, ``set_centroids``, ``save_pretrained``/``from_pretrained``).

    ``centroids: FloatTensor[K, D]`` is the frozen visual vocabulary (None: zeros, to be filled by
    :meth:`set_centroids` or :meth:`from_pretrained`).
    """

    CONFIG_CLASS = XUniterConfig

    def __init__(self, config: XUniterConfig, centroids: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        self.answers: list[str] | None = None
        bc = config.bert_config()
        self.bert = BertModel(bc, add_pooling_layer=True)
        self.image_embeddings = UniterImageEmbeddings(
            config.feature_dim, 4 + 4 * config.position_frequencies, bc
        )
        self.cls = BertPreTrainingHeads(bc)
        self.answer_head = LxmertVisualAnswerHead(bc, config.num_answers)
        self._build_grid_embedding(config, centroids, bc)
        for head in (self.image_embeddings, self.cls, self.answer_head, self.obj_predict_head):
            head.apply(self._init_head)
        self.tie_weights()

    def tie_weights(self) -> None:
        """MLM decoder = word embeddings (one Parameter, same storage), as in BERT."""
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextEncoding:
        """BERT's embeddings of ``input_ids: LongTensor[B, L]`` (type 0): all a single stream can
        compute before it sees the image."""
        hidden = self.bert.embeddings(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids))
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
        words = text_encoding.hidden
        feats = self.visual_features(visual_ids, visual_feats, visual_mask)
        positions = self.cell_positions.to(feats.dtype).expand(feats.shape[0], -1, -1)
        type_one = self.bert.embeddings.token_type_embeddings.weight[1]
        cells = self.image_embeddings(feats, positions, type_one.to(feats.dtype))
        hidden = torch.cat([words, cells.to(words.dtype)], dim=1)
        every_cell = torch.ones(cells.shape[:2], dtype=torch.long, device=cells.device)
        mask = torch.cat([text_encoding.attention_mask, every_cell], dim=1)
        extended = extended_mask(mask, hidden.dtype)
        for layer in self.bert.encoder.layer:
            out = layer(hidden, extended)
            hidden = out[0] if isinstance(out, tuple) else out
        length = words.shape[1]
        lang, vision = hidden[:, :length], hidden[:, length:]
        pooled = self.bert.pooler(hidden)
        mlm_logits, itm_logits = self.cls(lang, pooled)
        return self.heads_output(lang, vision, pooled, mlm_logits, itm_logits)
