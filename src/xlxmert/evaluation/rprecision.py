"""R-precision (paper §6.1, appendix E.1) scored by an independent image–text matching surrogate.

Given an image, the caption it should show and negatives, R-precision is the share of images for
which the surrogate ranks the true caption first:

- *easy*: against 99 captions of other images;
- *hard*: against 9 captions that each swap ONE category word (shape, colour, number,
  position/relation) for another of its category so that the caption becomes false of the scene
  (:func:`hard_negatives`, checked with ``facts.check_caption``).

The paper used ViLBERT as a surrogate independent of X-LXMERT. Here :class:`ImageTextMatcher`
plays that part: a residual CNN (started from the ShapeScenes evaluator's, never from X-LXMERT's
backbone), a small text transformer and a late-interaction score, trained on ShapeScenes with
in-batch and hard negatives (:func:`train_matcher`), its own seed and word vocabulary, and never
used to train the evaluated models.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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
from xlxmert.evaluation.split import images_uint8, load_example_images, load_examples, to_float
from xlxmert.utils.config import load_config, save_config
from xlxmert.utils.seeding import numpy_rng, torch_generator
from xlxmert.utils.weights import load_weights, save_weights

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
class MatcherConfig:
    """The surrogate's architecture and word vocabulary (stored with its weights)."""

    image_size: int = 64
    widths: tuple[int, ...] = (32, 64, 128, 256)  # residual CNN stages (the evaluator's, to start from it)
    cells: int = 8  # image tokens: a cells×cells grid
    dim: int = 128
    layers: int = 2  # text self-attention layers
    heads: int = 4
    max_words: int = 24
    vocab: tuple[str, ...] = ()
    seed: int = 20202  # its own seed, unrelated to X-LXMERT's


class ImageTextMatcher(nn.Module):
    """Scores how well a caption matches an image.

    The image is encoded once into ``cells²`` tokens (a residual CNN's stride-4 and top maps, pooled
    to the grid, with learned positions); a caption once into contextual word tokens (``layers``
    self-attention layers, so "circle" in "a red circle on the left" knows its colour and place).
    A pair is scored by late interaction (:meth:`fuse`), which keeps 100-way R-precision cheap.
    """

    def __init__(self, config: MatcherConfig):
        super().__init__()
        if not config.vocab:
            raise XLXMERTError("MatcherConfig.vocab is empty; build it with build_vocab(captions)")
        if len(config.widths) < 3:
            raise XLXMERTError("MatcherConfig.widths needs at least 3 stages")
        self.config = config
        self.word_index = {w: i for i, w in enumerate(config.vocab)}
        self.cnn = ResidualCNN(config.widths)
        self.image_proj = nn.Linear(config.widths[2] + config.widths[-1], config.dim)
        self.image_pos = nn.Parameter(torch.zeros(1, config.cells**2, config.dim))
        self.word_emb = nn.Embedding(len(config.vocab), config.dim)
        self.word_pos = nn.Parameter(torch.zeros(1, config.max_words + 1, config.dim))
        self.text_encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(
                config.dim, config.heads, 4 * config.dim, dropout=0.0, batch_first=True, norm_first=True
            ),
            config.layers,
            enable_nested_tensor=False,
        )
        self.text_norm = nn.LayerNorm(config.dim)
        self.image_norm = nn.LayerNorm(config.dim)
        self.query = nn.Linear(config.dim, config.dim)
        self.key = nn.Linear(config.dim, config.dim)
        self.weight = nn.Linear(config.dim, 1)
        nn.init.normal_(self.image_pos, std=0.02)
        nn.init.normal_(self.word_pos, std=0.02)

    def init_from_evaluator(self, evaluator: nn.Module) -> None:
        """Start the CNN from a trained evaluator's backbone (same widths): it already tells colours,
        shapes and places apart, so matching is learnt in minutes instead of hours."""
        if tuple(evaluator.config.widths) != tuple(self.config.widths):
            raise XLXMERTError(
                f"matcher widths {self.config.widths} differ from the evaluator's {evaluator.config.widths}"
            )
        self.cnn.load_state_dict(evaluator.backbone.state_dict())

    def encode_captions(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens: FloatTensor[C, 1 + max_words, dim], pad: BoolTensor[C, 1 + max_words])``."""
        length = self.config.max_words + 1
        ids = torch.zeros(len(captions), length, dtype=torch.long)
        unk, cls = self.word_index["[UNK]"], self.word_index["[CLS]"]
        for row, caption in enumerate(captions):
            words = tokenize(caption)[: self.config.max_words]
            ids[row, 0] = cls
            ids[row, 1 : 1 + len(words)] = torch.tensor(
                [self.word_index.get(w, unk) for w in words], dtype=torch.long
            )
        pad = ids == self.word_index["[PAD]"]
        tokens = self.text_encoder(self.word_emb(ids) + self.word_pos, src_key_padding_mask=pad)
        return tokens, pad

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """``images: FloatTensor[B, 3, H, W] in [-1, 1]`` → image tokens ``FloatTensor[B, cells², dim]``."""
        size = self.config.image_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(
                images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
        maps = self.cnn(images)
        cells = self.config.cells
        grid = torch.cat(
            [F.adaptive_avg_pool2d(maps[2], cells), F.adaptive_avg_pool2d(maps[-1], cells)], dim=1
        )
        return self.image_proj(grid.flatten(2).transpose(1, 2)) + self.image_pos

    def fuse(self, text: torch.Tensor, pad: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Scores ``FloatTensor[P]`` of P (caption, image) pairs.

        ``text: [P, L, dim]`` and ``pad: [P, L]`` from :meth:`encode_captions`, ``image: [P, cells², dim]``.
        Late interaction: every (contextualised) word looks for its best-matching image cell
        (a soft maximum over cells); the caption's score is a learned weighting of its words' scores,
        so a caption matches only if each of its important words is shown somewhere.
        """
        q, weights = self._words(text, pad)
        return self._interact(q, weights, self._keys(image))

    def cross_scores(self, text: torch.Tensor, pad: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Scores ``FloatTensor[I, T]`` of every image ``image: [I, cells², dim]`` with every caption
        ``text: [T, L, dim]`` (the same scoring as :meth:`fuse`, for in-batch negatives)."""
        q, weights = self._words(text, pad)
        k = self._keys(image)
        word_scores = torch.logsumexp(torch.einsum("tld,icd->itlc", q, k), dim=-1)  # [I, T, L]
        return (weights.unsqueeze(0) * word_scores).sum(dim=-1)

    def _keys(self, image: torch.Tensor) -> torch.Tensor:
        return self.key(self.image_norm(image))

    @staticmethod
    def _interact(q: torch.Tensor, weights: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        word_scores = torch.logsumexp(torch.bmm(q, k.transpose(1, 2)), dim=-1)  # [P, L]
        return (weights * word_scores).sum(dim=-1)

    def _words(self, text: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.query(self.text_norm(text)) / text.shape[-1] ** 0.5
        weights = self.weight(text).squeeze(-1).masked_fill(pad, float("-inf")).softmax(dim=-1)
        return q, weights

    @torch.no_grad()
    def score(
        self, images: torch.Tensor, captions: Sequence[Sequence[str]], chunk: int = 1024
    ) -> torch.Tensor:
        """Scores ``FloatTensor[B, K]``: each of B images against its own K captions."""
        self.eval()
        k = len(captions[0])
        if any(len(c) != k for c in captions):
            raise XLXMERTError("score() needs the same number of captions for every image")
        keys = self._keys(self.encode_images(images))
        unique = sorted({c for row in captions for c in row})
        where = {c: i for i, c in enumerate(unique)}
        q, weights = self._words(*self.encode_captions(unique))
        text_idx = torch.tensor([where[c] for row in captions for c in row])
        image_idx = torch.arange(len(captions)).repeat_interleave(k)
        out = torch.cat(
            [
                self._interact(q[t], weights[t], keys[i])
                for t, i in zip(text_idx.split(chunk), image_idx.split(chunk))
            ]
        )
        return out.view(len(captions), k)

    def save_pretrained(self, folder: str | Path) -> Path:
        folder = Path(folder)
        save_config(self.config, folder)
        save_weights(self, folder)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> ImageTextMatcher:
        folder = Path(folder)
        if not folder.is_dir():
            raise XLXMERTError(f"matcher folder not found: {folder} (train one: xlxmert evaluator train)")
        model = cls(load_config(MatcherConfig, folder))
        load_weights(model, folder)
        model.eval()
        return model


def build_vocab(captions: Sequence[str]) -> tuple[str, ...]:
    """Special tokens, then the world's words and every word of ``captions``, sorted."""
    words = set(world_words())
    for caption in captions:
        words.update(tokenize(caption))
    return SPECIAL_TOKENS + tuple(sorted(words - set(SPECIAL_TOKENS)))


@dataclass(frozen=True)
class MatcherTrainingConfig:
    """Contrastive training: each image's caption against the batch's other captions (easy
    negatives) and ``hard_negatives`` one-word swaps of its own caption (softmax cross-entropy)."""

    steps: int = 1500
    batch_size: int = 32
    hard_negatives: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    noise_std: float = 0.03
    pretrained_cnn_lr_scale: float = 0.3  # a CNN started from the evaluator is only fine-tuned
    seed: int = 20202


def train_matcher(
    data_root: str | Path,
    out: str | Path,
    steps: int | None = None,
    split: str = "train",
    config: MatcherConfig | None = None,
    training: MatcherTrainingConfig | None = None,
    n: int | None = None,
    progress: bool = True,
    evaluator: nn.Module | None = None,
) -> ImageTextMatcher:
    """Train the matching surrogate on ``data_root/split`` and save it to ``out``.

    ``evaluator``: a trained :class:`ShapeSceneEvaluator` whose backbone initialises the matcher's
    CNN (its widths are then taken from the evaluator); the CNN is fine-tuned at a lower rate.
    """
    training = training or MatcherTrainingConfig()
    if steps is not None:
        training = dataclasses.replace(training, steps=steps)
    examples = [ex for ex in load_examples(data_root, split, n) if ex.captions]
    if len(examples) < 2:
        raise XLXMERTError(f"the matcher needs at least 2 captioned images in {data_root}/{split}")
    config = config or MatcherConfig()
    if evaluator is not None:
        config = dataclasses.replace(
            config, widths=tuple(evaluator.config.widths), image_size=evaluator.config.image_size
        )
    config = dataclasses.replace(config, vocab=build_vocab([c for ex in examples for c in ex.captions]))
    images = images_uint8(load_example_images(examples), config.image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = ImageTextMatcher(config)
    if evaluator is not None:
        model.init_from_evaluator(evaluator)
    gen = torch_generator(training.seed)
    rng = numpy_rng(training.seed)
    cnn = list(model.cnn.parameters())
    cnn_ids = {id(p) for p in cnn}
    rest = [p for p in model.parameters() if id(p) not in cnn_ids]
    cnn_lr = training.lr * (training.pretrained_cnn_lr_scale if evaluator is not None else 1.0)
    opt = torch.optim.AdamW(
        [{"params": rest, "lr": training.lr}, {"params": cnn, "lr": cnn_lr}],
        weight_decay=training.weight_decay,
        betas=(0.9, 0.98),
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[training.lr, cnn_lr], total_steps=max(training.steps, 1), pct_start=0.1
    )
    pools: dict[tuple[int, int], list[str]] = {}
    model.train()
    bar = tqdm(range(training.steps), desc="matcher", disable=not progress)
    for _ in bar:
        idx = rng.choice(len(examples), size=min(training.batch_size, len(examples)), replace=False)
        positives, hard = [], []
        for i in idx:
            ex = examples[i]
            c = int(rng.integers(len(ex.captions)))
            positives.append(ex.captions[c])
            if (i, c) not in pools:
                pools[(i, c)] = hard_negative_pool(ex.captions[c], ex.scene)
            pool = pools[(i, c)] or [examples[int(rng.integers(len(examples)))].captions[0]]
            hard.extend(pool[int(j)] for j in rng.integers(len(pool), size=training.hard_negatives))
        x = to_float(images[torch.as_tensor(idx)])
        if training.noise_std > 0:
            x = x + training.noise_std * torch.randn(x.shape, generator=gen)
        image = model.encode_images(x)
        text, pad = model.encode_captions(positives + hard)
        b = len(positives)
        # Each image against every caption of the batch (other images' captions are the easy
        # negatives; a duplicate of its own caption is masked) and its own hard negatives.
        in_batch = model.cross_scores(text[:b], pad[:b], image)
        same = torch.tensor([[p == q for q in positives] for p in positives])
        same &= ~torch.eye(b, dtype=torch.bool)
        in_batch = in_batch.masked_fill(same, float("-inf"))
        hard_scores = model.fuse(
            text[b:], pad[b:], image.repeat_interleave(training.hard_negatives, dim=0)
        ).view(b, training.hard_negatives)
        logits = torch.cat([in_batch, hard_scores], dim=1)
        loss = F.cross_entropy(logits, torch.arange(b))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval()
    model.save_pretrained(out)
    return model


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
) -> dict[str, float | None]:
    """R-precision of ``images: FloatTensor[B, 3, H, W] in [-1, 1]`` for ``captions`` (one per image).

    ``scenes[i]`` is the scene ``captions[i]`` describes: hard negatives must be false of it. Easy
    negatives are captions of the *other* entries (``captions`` is also the pool), so B should be
    at least 100 for the paper's 1-in-100 setting (fewer distinct negatives are repeated).
    Returns ``easy``, ``hard`` (swaps of any category) and ``hard_<category>`` (None where no caption
    has a swap of that category), plus ``n_hard_<category>`` counts.
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
    return result
