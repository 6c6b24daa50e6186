"""R-precision (paper §6.1, appendix E.1) scored by an independent image–text matching surrogate.

Given an image, the caption it should show and negatives, R-precision is the share of images for
which the surrogate ranks the true caption first:

- *easy*: against 99 captions of other images;
- *hard*: against 9 captions that each swap ONE category word (shape, colour, number,
  position/relation) for another of its category so that the caption becomes false of the scene
  (:func:`hard_negatives`, checked with ``facts.check_caption``).

The paper used ViLBERT as a surrogate independent of X-LXMERT. Here :class:`ImageTextMatcher`
plays that part: a residual CNN (the ShapeScenes evaluator's, never X-LXMERT's backbone) and a small
cross-modal transformer whose caption words attend to the image's grid cells, trained on ShapeScenes
against in-batch and hard negatives (``matcher_training.train_matcher``), with its own seed and
word vocabulary, and never used to train the evaluated models.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from xlxmert.data.shapes import world
from xlxmert.data.shapes.facts import check_caption
from xlxmert.data.shapes.scene import Scene
from xlxmert.errors import XLXMERTError
from xlxmert.evaluation.evaluator import ResidualCNN
from xlxmert.utils.config import PresetConfig
from xlxmert.utils.seeding import numpy_rng
from xlxmert.utils.weights import PretrainedMixin

CATEGORIES: tuple[str, ...] = ("shape", "color", "number", "position")

# The words of each category, as units a swap replaces. Number words are those that take a plural
# noun (two..four), so a swap never has to change the noun; positions are whole phrases (a region
# phrase is swapped for another region phrase, a relation for another relation).
_SHAPE_SINGULAR = tuple(world.SHAPES)
_SHAPE_PLURAL = tuple(world.PLURALS[s] for s in world.SHAPES)
_NUMBERS = ("two", "three", "four")
_REGION_PHRASES = tuple(world.REGIONS.values())
_RELATIONS = tuple(world.RELATIONS)


@dataclass(frozen=True)
class Slot:
    """A category word (or position phrase) of a caption: tokens ``[start, end)``."""

    start: int
    end: int
    text: str
    category: str
    alternatives: tuple[str, ...]  # every filler of the same kind, the original included


def tokenize(caption: str) -> list[str]:
    """Lower-case words; listing commas are tokens of their own."""
    return re.sub(r",", " , ", caption.lower()).split()


def detokenize(tokens: Sequence[str]) -> str:
    return " ".join(tokens).replace(" , ", ", ")


def _phrase_table() -> list[tuple[tuple[str, ...], str, tuple[str, ...]]]:
    table = []
    for group, category in (
        (_REGION_PHRASES, "position"),
        (_RELATIONS, "position"),
        (_SHAPE_SINGULAR, "shape"),
        (_SHAPE_PLURAL, "shape"),
        (tuple(world.COLORS), "color"),
        (_NUMBERS, "number"),
    ):
        for phrase in group:
            table.append((tuple(phrase.split()), category, group))
    # Longest first, so "to the left of" wins over any shorter phrase sharing its words.
    table.sort(key=lambda row: -len(row[0]))
    return table


_PHRASES = _phrase_table()


def category_slots(caption: str) -> list[Slot]:
    """The caption's category words and phrases, left to right."""
    tokens = tokenize(caption)
    slots = []
    i = 0
    while i < len(tokens):
        for words, category, group in _PHRASES:
            if tuple(tokens[i : i + len(words)]) == words:
                slots.append(Slot(i, i + len(words), " ".join(words), category, group))
                i += len(words)
                break
        else:
            i += 1
    return slots


def fill_slot(caption: str, slot: Slot, filler: str) -> str:
    """``caption`` with ``slot`` replaced by ``filler``; an ``a``/``an`` right before it is made to agree."""
    tokens = tokenize(caption)
    new = tokens[: slot.start] + filler.split() + tokens[slot.end :]
    if slot.start > 0 and new[slot.start - 1] in ("a", "an"):
        new[slot.start - 1] = world.article(new[slot.start])
    return detokenize(new)


def _is_false(caption: str, scene: Scene) -> bool:
    n_true, n_total = check_caption(caption, scene)
    return n_total > 0 and n_true < n_total


def hard_negative_pool(caption: str, scene: Scene, category: str | None = None) -> list[str]:
    """Every caption made by swapping one category word of ``caption`` that is false of ``scene``."""
    pool = []
    for slot in category_slots(caption):
        if category is not None and slot.category != category:
            continue
        for filler in slot.alternatives:
            if filler == slot.text:
                continue
            candidate = fill_slot(caption, slot, filler)
            if candidate not in pool and _is_false(candidate, scene):
                pool.append(candidate)
    return pool


def hard_negatives(
    caption: str, scene: Scene, rng: np.random.Generator, n: int = 9, category: str | None = None
) -> list[str]:
    """``n`` hard negatives of ``caption`` (one category word swapped, false of ``scene``).

    Drawn without repetition while the pool lasts, then with; ``[]`` when no swap is false (e.g. a
    caption without category words). ``category`` restricts the swaps to one of CATEGORIES.
    """
    if category is not None and category not in CATEGORIES:
        raise XLXMERTError(f"unknown category {category!r}; choose one of {', '.join(CATEGORIES)}")
    pool = hard_negative_pool(caption, scene, category)
    if not pool:
        return []
    if len(pool) >= n:
        idx = rng.choice(len(pool), size=n, replace=False)
    else:
        idx = np.concatenate([np.arange(len(pool)), rng.choice(len(pool), size=n - len(pool), replace=True)])
    return [pool[int(i)] for i in idx]


# ---------------------------------------------------------------------- the matching surrogate
SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[UNK]")


def world_words() -> tuple[str, ...]:
    """Every word a ShapeScenes caption may use that the vocabulary must know even if unseen."""
    words: set[str] = set(_SHAPE_SINGULAR) | set(_SHAPE_PLURAL) | set(world.COLORS) | set(_NUMBERS)
    for phrase in (*_REGION_PHRASES, *_RELATIONS, *(p.phrase for p in world.PLACES.values())):
        words.update(phrase.split())
    words.update({"a", "an", "and", ",", "small", "large", "shapes", "shape", "one"})
    return tuple(sorted(words))


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
    final state is mapped to the score. Trained against one-word swaps (:func:`hard_negative_pool`),
    the score has to bind colour to shape and check relations, positions and counts.
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


# ---------------------------------------------------------------------- R-precision
def _rank_first(scores: torch.Tensor) -> torch.Tensor:
    """BoolTensor[B]: column 0 strictly beats every other column (ties count as misses)."""
    return scores[:, 0] > scores[:, 1:].max(dim=1).values


@torch.no_grad()
def r_precision(
    matcher: ImageTextMatcher,
    images: torch.Tensor,
    captions: Sequence[str],
    scenes: Sequence[Scene],
    seed: int = 0,
    easy_negatives: int = 99,
    hard_count: int = 9,
    batch_size: int = 16,
    progress: bool = False,
    return_hits: bool = False,
) -> dict[str, Any]:
    """R-precision of ``images: FloatTensor[B, 3, H, W] in [-1, 1]`` for ``captions`` (one per image).

    ``scenes[i]`` is the scene ``captions[i]`` describes: hard negatives must be false of it. Easy
    negatives are captions of the *other* entries (``captions`` is also the pool), so B should be
    at least 100 for the paper's 1-in-100 setting (fewer distinct negatives are repeated).
    Returns ``easy``, ``hard`` (swaps of any category) and ``hard_<category>`` (None where no caption
    has a swap of that category), plus ``n_hard_<category>`` counts. ``return_hits`` adds each
    image's outcome, ``easy_hits`` and ``hard_hits`` (lists of n bools; None where an image's caption
    has no hard negative), for resampling (e.g. bootstrap intervals).
    """
    n = len(captions)
    if images.shape[0] != n or len(scenes) != n:
        raise XLXMERTError(f"r_precision: {images.shape[0]} images, {n} captions, {len(scenes)} scenes")
    if n < 2:
        raise XLXMERTError("R-precision needs at least 2 images (easy negatives come from other images)")
    rng = numpy_rng(seed)
    easy_rows, hard_rows = [], {c: [] for c in (None, *CATEGORIES)}
    for i, caption in enumerate(captions):
        others = [j for j in range(n) if captions[j] != caption]
        if not others:
            others = [j for j in range(n) if j != i]
        pick = rng.choice(others, size=easy_negatives, replace=len(others) < easy_negatives)
        easy_rows.append([caption, *(captions[int(j)] for j in pick)])
        for category in hard_rows:
            negatives = hard_negatives(caption, scenes[i], rng, hard_count, category)
            if negatives:
                hard_rows[category].append((i, [caption, *negatives]))
    result: dict[str, float | None] = {}
    hits = []
    for s in tqdm(range(0, n, batch_size), desc="R-precision", disable=not progress):
        hits.append(_rank_first(matcher.score(images[s : s + batch_size], easy_rows[s : s + batch_size])))
    result["easy"] = float(torch.cat(hits).float().mean())
    if return_hits:
        result["easy_hits"] = torch.cat(hits).tolist()
    for category, rows in hard_rows.items():
        key = "hard" if category is None else f"hard_{category}"
        if not rows:
            result[key] = None
            result[f"n_{key}"] = 0
            continue
        hits = []
        for s in range(0, len(rows), batch_size):
            chunk = rows[s : s + batch_size]
            idx = torch.tensor([i for i, _ in chunk])
            hits.append(_rank_first(matcher.score(images[idx], [r for _, r in chunk])))
        result[key] = float(torch.cat(hits).float().mean())
        result[f"n_{key}"] = len(rows)
        if return_hits and category is None:
            per_image: list[bool | None] = [None] * n
            for (i, _), hit in zip(rows, torch.cat(hits).tolist()):
                per_image[i] = hit
            result["hard_hits"] = per_image
    return result
