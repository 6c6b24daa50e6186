"""Text side: a BERT-style WordPiece tokenizer, trained on our captions or read from a BERT vocab.

X-LXMERT reads text as ``[CLS]`` + at most 18 WordPieces + ``[SEP]`` (max length 20), lowercased
(bert-base-uncased), padded with id 0. :class:`TextTokenizer` wraps a HuggingFace
``tokenizers.Tokenizer`` with exactly that pipeline: BERT normaliser (lowercase), BERT
pre-tokeniser (whitespace and punctuation), WordPiece model, ``[CLS] ... [SEP]`` post-processor.

On disk (the model folder's ``tokenizer/`` component)::

    tokenizer/
      tokenizer.json            the HF tokenizers pipeline (loadable by ``tokenizers`` alone)
      tokenizer_config.json     TokenizerConfig (max_length)
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from xlxmert.data.datasets import CocoCaptions, read_json, read_jsonl
from xlxmert.errors import XLXMERTError
from xlxmert.utils.config import load_config, save_config

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
# Training puts the special tokens first, in this order, so [PAD] is id 0 as the model expects.
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    """``max_length``: tokens per text including ``[CLS]`` and ``[SEP]`` (paper: 20)."""

    max_length: int = 20


@dataclasses.dataclass
class TokenizedText:
    """A padded batch: ``input_ids, attention_mask: LongTensor[B, L]``; ``truncated[b]`` is True
    when text ``b`` had more than ``L - 2`` WordPieces and lost its tail."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    truncated: list[bool]

    def to(self, device: str | torch.device) -> TokenizedText:
        return TokenizedText(self.input_ids.to(device), self.attention_mask.to(device), self.truncated)


def _bert_pipeline(model: models.Model) -> Tokenizer:
    """A tokenizer around ``model`` with BERT-uncased normalisation, pre-tokenisation and decoding."""
    tok = Tokenizer(model)
    # strip_accents=None follows lowercase, as in bert-base-uncased ("café" -> "cafe").
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def _add_post_processor(tok: Tokenizer) -> None:
    ids = {}
    for token in SPECIAL_TOKENS:
        ids[token] = tok.token_to_id(token)
        if ids[token] is None:
            raise XLXMERTError(
                f"the vocabulary has no {token} token; a BERT-style vocabulary needs {SPECIAL_TOKENS}"
            )
    if ids[PAD] != 0:
        raise XLXMERTError(f"{PAD} must be token id 0 (the model pads with 0), found id {ids[PAD]}")
    # Mark them special (existing ids are kept) so decode() can skip them.
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", special_tokens=[(CLS, ids[CLS]), (SEP, ids[SEP])]
    )


def learn_wordpiece_vocab(word_counts: Counter[str], vocab_size: int, min_frequency: int = 1) -> list[str]:
    """A WordPiece vocabulary for ``word_counts``: special tokens, alphabet, merged pieces (id = position).

    Learnt as WordPiece vocabularies usually are, by BPE merges: every word starts as its characters
    (``##``-prefixed after the first), and the most frequent adjacent pair (weighted by word count)
    is merged until ``vocab_size`` tokens exist or no pair occurs ``min_frequency`` times. Ties go to
    the lexicographically smallest pair, so the same texts always give the same vocabulary
    (``tokenizers``' own trainer breaks ties by hash order and differs from run to run).
    """
    prefix = "##"
    ordered = sorted(word_counts)
    freqs = [word_counts[w] for w in ordered]
    words = [[w[0]] + [prefix + c for c in w[1:]] for w in ordered]
    vocab = list(SPECIAL_TOKENS) + sorted({symbol for word in words for symbol in word} - set(SPECIAL_TOKENS))
    known = set(vocab)

    pair_counts: Counter[tuple[str, str]] = Counter()
    pair_words: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
    for i, word in enumerate(words):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += freqs[i]
            pair_words[pair].add(i)
    # Max-heap by (count, then smallest pair) with lazy deletion of stale entries.
    heap = [(-n, pair) for pair, n in pair_counts.items()]
    heapq.heapify(heap)

    while len(vocab) < vocab_size and heap:
        neg, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg:
            continue
        if -neg < min_frequency:
            break
        a, b = pair
        merged = a + b[len(prefix) :]
        if merged not in known:
            known.add(merged)
            vocab.append(merged)
        touched: set[tuple[str, str]] = set()
        for i in sorted(pair_words.pop(pair)):
            old = words[i]
            for p in zip(old, old[1:]):
                pair_counts[p] -= freqs[i]
                pair_words[p].discard(i)
                touched.add(p)
            new, k = [], 0
            while k < len(old):
                if k + 1 < len(old) and old[k] == a and old[k + 1] == b:
                    new.append(merged)
                    k += 2
                else:
                    new.append(old[k])
                    k += 1
            words[i] = new
            for p in zip(new, new[1:]):
                pair_counts[p] += freqs[i]
                pair_words[p].add(i)
                touched.add(p)
        for p in touched:
            if pair_counts[p] > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
            else:
                del pair_counts[p]
                pair_words.pop(p, None)
    return vocab


class TextTokenizer:
    """WordPiece tokenizer producing fixed-length ``[CLS] ... [SEP] [PAD]...`` id sequences."""

    def __init__(self, tokenizer: Tokenizer, config: TokenizerConfig | None = None) -> None:
        self.tokenizer = tokenizer
        self.config = config or TokenizerConfig()
        if self.config.max_length < 3:
            raise XLXMERTError(
                f"max_length must be at least 3 ([CLS], a token, [SEP]), got {self.config.max_length}"
            )
        self._ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
        missing = [t for t, i in self._ids.items() if i is None]
        if missing:
            raise XLXMERTError(f"tokenizer lacks special tokens {missing}; train it with TextTokenizer.train")

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int = 1000, min_frequency: int = 1, max_length: int = 20
    ) -> TextTokenizer:
        """A WordPiece vocabulary of at most ``vocab_size`` tokens learnt from ``texts``.

        Special tokens get ids 0..4: ``[PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4``.
        """
        texts = list(texts)
        if not texts:
            raise XLXMERTError("no texts to train the tokenizer on; is the split folder empty?")
        if vocab_size <= len(SPECIAL_TOKENS):
            raise XLXMERTError(
                f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}"
            )
        # Words are counted with the same normaliser and pre-tokeniser the tokenizer applies.
        counter = _bert_pipeline(models.WordPiece(vocab={UNK: 0}, unk_token=UNK))
        word_counts: Counter[str] = Counter()
        for text in texts:
            normalized = counter.normalizer.normalize_str(text)
            word_counts.update(word for word, _ in counter.pre_tokenizer.pre_tokenize_str(normalized))
        vocab = learn_wordpiece_vocab(word_counts, vocab_size, min_frequency)
        tok = _bert_pipeline(
            models.WordPiece(
                vocab={t: i for i, t in enumerate(vocab)}, unk_token=UNK, max_input_chars_per_word=100
            )
        )
        _add_post_processor(tok)
        return cls(tok, TokenizerConfig(max_length=max_length))

    @classmethod
    def from_bert_vocab(cls, path: str | Path, max_length: int = 20) -> TextTokenizer:
        """BERT-uncased WordPiece from a local ``vocab.txt`` (or a folder holding one), never a hub name.

        The vocabulary size is checked against the file's line count (30522 for bert-base-uncased).
        """
        path = Path(path)
        vocab_file = path / "vocab.txt" if path.is_dir() else path
        if not vocab_file.is_file():
            raise XLXMERTError(
                f"BERT vocabulary not found: {vocab_file} (give a local vocab.txt or a folder holding one)"
            )
        lines = vocab_file.read_text(encoding="utf-8").splitlines()
        tok = _bert_pipeline(
            models.WordPiece.from_file(str(vocab_file), unk_token=UNK, max_input_chars_per_word=100)
        )
        _add_post_processor(tok)
        if tok.get_vocab_size(with_added_tokens=True) != len(lines):
            raise XLXMERTError(
                f"{vocab_file}: tokenizer has {tok.get_vocab_size(with_added_tokens=True)} tokens but the "
                f"file has {len(lines)} lines (duplicate or empty lines?)"
            )
        return cls(tok, TokenizerConfig(max_length=max_length))

    def save(self, path: str | Path) -> Path:
        """Write the tokenizer file ``path`` (``tokenizer.json``) and ``tokenizer_config.json`` beside it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(path))
        save_config(self.config, path.parent, TOKENIZER_CONFIG_FILE)
        return path

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write ``folder/tokenizer.json`` and ``folder/tokenizer_config.json``; returns ``folder``."""
        self.save(Path(folder) / TOKENIZER_FILE)
        return Path(folder)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> TextTokenizer:
        """Load from a folder written by :meth:`save_pretrained`, or from a ``tokenizer.json`` file
        (its folder's ``tokenizer_config.json`` is read when present)."""
        path = Path(path)
        file = path / TOKENIZER_FILE if path.is_dir() else path
        if not file.is_file():
            raise XLXMERTError(f"tokenizer not found: {file} (train one with `xlxmert tokenizer train`)")
        try:
            tok = Tokenizer.from_file(str(file))
        except Exception as exc:  # tokenizers raises a bare Exception for malformed files
            raise XLXMERTError(f"{file} is not a tokenizers JSON file ({exc})") from None
        config_dir = file.parent
        config = (
            load_config(TokenizerConfig, config_dir, TOKENIZER_CONFIG_FILE)
            if (config_dir / TOKENIZER_CONFIG_FILE).is_file()
            else TokenizerConfig()
        )
        return cls(tok, config)

    # -- encoding / decoding ------------------------------------------------------------------

    @property
    def max_length(self) -> int:
        return self.config.max_length

    def __call__(self, texts: Sequence[str], max_length: int | None = None) -> TokenizedText:
        """Tokenise ``texts`` into ``[CLS] w1 .. wn [SEP] [PAD]..`` rows of length ``max_length``.

        Returns ``input_ids, attention_mask: LongTensor[B, max_length]``; a text longer than
        ``max_length - 2`` WordPieces keeps its first ones, ends with ``[SEP]`` and is flagged in
        ``truncated``.
        """
        if isinstance(texts, str):
            raise XLXMERTError("TextTokenizer takes a list of texts, not a single string")
        length = self.max_length if max_length is None else max_length
        if length < 3:
            raise XLXMERTError(f"max_length must be at least 3 ([CLS], a token, [SEP]), got {length}")
        rows, masks, truncated = [], [], []
        for encoding in self.tokenizer.encode_batch(list(texts)):
            ids = encoding.ids
            cut = len(ids) > length
            if cut:
                ids = ids[: length - 1] + [self.sep_id]
            rows.append(ids + [self.pad_id] * (length - len(ids)))
            masks.append([1] * len(ids) + [0] * (length - len(ids)))
            truncated.append(cut)
        input_ids = torch.tensor(rows, dtype=torch.long).reshape(len(rows), length)
        attention_mask = torch.tensor(masks, dtype=torch.long).reshape(len(rows), length)
        return TokenizedText(input_ids, attention_mask, truncated)

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of one id sequence (``LongTensor[L]`` or list), special tokens skipped, ``##`` merged."""
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise XLXMERTError(
                    f"decode takes one sequence LongTensor[L], got shape {tuple(ids.shape)}; use batch_decode"
                )
            ids = ids.tolist()
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def batch_decode(self, ids: torch.Tensor | Sequence[Sequence[int]]) -> list[str]:
        """Texts of ``ids: LongTensor[B, L]``."""
        rows = ids.tolist() if isinstance(ids, torch.Tensor) else [list(r) for r in ids]
        return self.tokenizer.decode_batch(rows, skip_special_tokens=True)

    def convert_ids_to_tokens(self, ids: Sequence[int] | torch.Tensor) -> list[str]:
        """WordPiece strings of ``ids`` (``[UNK]`` for ids outside the vocabulary)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.flatten().tolist()
        return [self.tokenizer.id_to_token(int(i)) or UNK for i in ids]

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)

    # -- vocabulary facts ---------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int:
        return self._ids[PAD]

    @property
    def unk_id(self) -> int:
        return self._ids[UNK]

    @property
    def cls_id(self) -> int:
        return self._ids[CLS]

    @property
    def sep_id(self) -> int:
        return self._ids[SEP]

    @property
    def mask_id(self) -> int:
        return self._ids[MASK]

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids never masked or sampled as words: [PAD], [UNK], [CLS], [SEP], [MASK]."""
        return frozenset(self._ids.values())

    def __repr__(self) -> str:
        return f"TextTokenizer(vocab_size={self.vocab_size}, max_length={self.max_length})"


def texts_from_split(split_dir: str | Path) -> list[str]:
    """Every text of a split folder, for training a tokenizer.

    Reads ``captions_<split>.json`` (COCO captions), ``questions_<split>.json`` (VQA questions) and,
    when present, ``nlvr2_<split>.jsonl`` (NLVR2 statements, whose words — "left", "both",
    "exactly" — the other files may lack); ``<split>`` is the folder's name. At least one of the
    captions and questions files must exist.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise XLXMERTError(
            f"split folder not found: {split_dir} "
            f"(create it with `xlxmert data shapes --split {split_dir.name}`)"
        )
    split = split_dir.name
    captions_file = split_dir / f"captions_{split}.json"
    questions_file = split_dir / f"questions_{split}.json"
    nlvr2_file = split_dir / f"nlvr2_{split}.jsonl"
    if not captions_file.is_file() and not questions_file.is_file():
        raise XLXMERTError(f"{split_dir} has neither captions_{split}.json nor questions_{split}.json")
    texts: list[str] = []
    if captions_file.is_file():
        texts.extend(CocoCaptions(captions_file).captions)
    if questions_file.is_file():
        data = read_json(questions_file, "VQA questions")
        questions = data.get("questions") if isinstance(data, dict) else None
        if not isinstance(questions, list):
            raise XLXMERTError(
                f"{questions_file} is missing required key 'questions'; is it a VQA questions file?"
            )
        for i, q in enumerate(questions):
            if not isinstance(q, dict) or "question" not in q:
                raise XLXMERTError(f"{questions_file}: questions[{i}] is missing required key 'question'")
            texts.append(str(q["question"]))
    if nlvr2_file.is_file():
        for i, rec in enumerate(read_jsonl(nlvr2_file, "NLVR2"), start=1):
            if "sentence" not in rec:
                raise XLXMERTError(f"{nlvr2_file}: record {i} is missing required key 'sentence'")
            texts.append(str(rec["sentence"]))
    return texts
