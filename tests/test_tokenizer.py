"""TextTokenizer: training, BERT vocab files, fixed-length encoding, round trips and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from xlxmert.cli import main
from xlxmert.data.tokenizer import SPECIAL_TOKENS, TextTokenizer, texts_from_split
from xlxmert.errors import XLXMERTError

CAPTIONS = [
    "two blue squares and a red circle at night",
    "a red circle to the left of a blue square",
    "a green cross at the bottom",
    "three shapes on the sand",
    "a yellow diamond in the fog",
    "an orange star in the center",
]
QUESTIONS = [
    "what color is the circle",
    "how many circles are there",
    "is there a blue star",
    "where is this",
]
TEXTS = CAPTIONS * 3 + QUESTIONS * 2


@pytest.fixture(scope="module")
def trained() -> TextTokenizer:
    return TextTokenizer.train(TEXTS, vocab_size=1000)


def test_special_token_ids(trained):
    assert [trained.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert (trained.pad_id, trained.unk_id, trained.cls_id, trained.sep_id, trained.mask_id) == (
        0,
        1,
        2,
        3,
        4,
    )
    assert trained.special_ids == frozenset({0, 1, 2, 3, 4})


def test_training_is_deterministic_and_learns_whole_words(trained):
    again = TextTokenizer.train(list(reversed(TEXTS)), vocab_size=1000)
    assert trained.tokenizer.get_vocab() == again.tokenizer.get_vocab()
    # With room to spare every frequent word becomes one token.
    for word in ("circle", "square", "blue", "night", "diamond"):
        assert trained.token_to_id(word) is not None


def test_vocab_size_is_capped(trained):
    small = TextTokenizer.train(TEXTS, vocab_size=60)
    assert small.vocab_size == 60
    assert trained.vocab_size < 1000  # the small corpus runs out of merges first
    assert trained.vocab_size == len(trained.tokenizer.get_vocab())


def test_encoding_pads_to_20_and_flags_truncation(trained):
    long_text = " ".join(["red circle"] * 15)  # 30 words
    out = trained(["Two BLUE squares!", long_text])
    assert out.input_ids.shape == (2, 20) and out.input_ids.dtype == torch.long
    assert out.attention_mask.dtype == torch.long
    assert out.truncated == [False, True]
    short = out.input_ids[0]
    n = int(out.attention_mask[0].sum())
    assert short[0].item() == trained.cls_id and short[n - 1].item() == trained.sep_id
    assert short[n:].eq(0).all() and out.attention_mask[0, n:].eq(0).all()
    assert out.input_ids[1, -1].item() == trained.sep_id and out.attention_mask[1].eq(1).all()
    assert trained.decode(out.input_ids[1]) == " ".join(["red circle"] * 9)  # 18 WordPieces kept
    # Lowercased, punctuation split off ("!" was never seen: [UNK]).
    assert trained.convert_ids_to_tokens(short[:6]) == ["[CLS]", "two", "blue", "squares", "[UNK]", "[SEP]"]
    assert trained(["a red circle"], max_length=8).input_ids.shape == (1, 8)
    with pytest.raises(XLXMERTError, match="list of texts"):
        trained("a red circle")


def test_decode_merges_wordpieces():
    tiny = TextTokenizer.train(TEXTS, vocab_size=45)  # too small for whole words: pieces with ##
    ids = tiny(["the circles are blue"]).input_ids[0]
    tokens = tiny.convert_ids_to_tokens(ids[ids != 0])
    assert any(t.startswith("##") for t in tokens)
    assert tiny.decode(ids) == "the circles are blue"
    assert tiny.batch_decode(tiny(["a red star", "where is this"]).input_ids) == [
        "a red star",
        "where is this",
    ]


def test_save_load_round_trip(tmp_path, trained):
    texts = ["a red circle to the left of a blue square", "how many circles are there", "purple zebra"]
    before = trained(texts)
    folder = trained.save_pretrained(tmp_path / "tokenizer")
    assert sorted(p.name for p in folder.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    assert json.loads((folder / "tokenizer_config.json").read_text()) == {"max_length": 20}
    for source in (folder, folder / "tokenizer.json"):
        loaded = TextTokenizer.from_pretrained(source)
        after = loaded(texts)
        assert torch.equal(before.input_ids, after.input_ids)
        assert torch.equal(before.attention_mask, after.attention_mask)
        assert loaded.vocab_size == trained.vocab_size and loaded.special_ids == trained.special_ids
    with pytest.raises(XLXMERTError, match="tokenizer not found"):
        TextTokenizer.from_pretrained(tmp_path / "missing")


def _bert_vocab(path: Path) -> list[str]:
    # BERT's layout: [PAD] first, [unused*], then [UNK] [CLS] [SEP] [MASK], then words and ## pieces.
    lines = ["[PAD]"] + [f"[unused{i}]" for i in range(4)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    lines += [
        ",",
        "!",
        "a",
        "the",
        "red",
        "blue",
        "circle",
        "square",
        "two",
        "and",
        "at",
        "night",
        "##s",
        "##ing",
    ]
    lines += ["cross", "star", "diamond", "green", "left", "of", "to", "is", "there", "how", "many"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


def test_from_bert_vocab_keeps_every_line(tmp_path):
    lines = _bert_vocab(tmp_path / "vocab.txt")
    for source in (tmp_path, tmp_path / "vocab.txt"):
        tok = TextTokenizer.from_bert_vocab(source)
        # transformers 5.x' BertTokenizer(vocab_file=...) silently yields 5 tokens; we must not.
        assert tok.vocab_size == len(lines) == 34
        assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 5, 6, 7, 8)
    out = tok(["Two red Circles, at night!"])
    ids = out.input_ids[0, : int(out.attention_mask.sum())].tolist()
    assert ids == [6] + [lines.index(t) for t in ("two", "red", "circle", "##s", ",", "at", "night", "!")] + [
        7
    ]
    assert tok.decode(out.input_ids[0]) == "two red circles, at night!"
    folder = tok.save_pretrained(tmp_path / "saved")
    assert TextTokenizer.from_pretrained(folder).vocab_size == 34


def test_from_bert_vocab_errors(tmp_path):
    with pytest.raises(XLXMERTError, match="BERT vocabulary not found"):
        TextTokenizer.from_bert_vocab(tmp_path / "bert-base-uncased")
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nred\n")
    with pytest.raises(XLXMERTError, match=r"no \[MASK\] token"):
        TextTokenizer.from_bert_vocab(tmp_path)
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nred\nred\n")
    with pytest.raises(XLXMERTError, match="7 lines"):
        TextTokenizer.from_bert_vocab(tmp_path)


def _write_split(root: Path, split: str = "train") -> Path:
    folder = root / split
    folder.mkdir(parents=True)
    images = [
        {"id": i, "file_name": f"images/shapes_{split}_{i:06d}.png", "width": 64, "height": 64}
        for i in (1, 2)
    ]
    annotations = [{"id": k, "image_id": 1 + k % 2, "caption": c} for k, c in enumerate(CAPTIONS)]
    (folder / f"captions_{split}.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    questions = [{"question_id": k, "image_id": 1, "question": q} for k, q in enumerate(QUESTIONS)]
    (folder / f"questions_{split}.json").write_text(json.dumps({"questions": questions}))
    return folder


def test_texts_from_split(tmp_path):
    folder = _write_split(tmp_path)
    assert texts_from_split(folder) == CAPTIONS + QUESTIONS
    statement = {"identifier": "train-0-0-0", "sentence": "both images contain a red object", "label": "True"}
    (folder / "nlvr2_train.jsonl").write_text(json.dumps(statement) + "\n")
    assert texts_from_split(folder)[-1] == "both images contain a red object"
    with pytest.raises(XLXMERTError, match="split folder not found"):
        texts_from_split(tmp_path / "val")


@pytest.fixture
def only_tokenizer_cli(monkeypatch):
    # The tokenizer command alone, so these tests do not depend on the other command groups.
    monkeypatch.setattr("xlxmert.cli.COMMAND_MODULES", ("xlxmert.cli.tokenizer",))


def test_cli_train_round_trip(tmp_path, capsys, only_tokenizer_cli):
    folder = _write_split(tmp_path / "DATA")
    out = tmp_path / "tok" / "tokenizer.json"
    code = main(
        ["tokenizer", "train", "--data", str(tmp_path / "DATA"), "--out", str(out), "--vocab-size", "80"]
    )
    assert code == 0
    assert "tokenizer: 80 tokens from 10 texts" in capsys.readouterr().out
    assert (out.parent / "tokenizer_config.json").is_file()
    loaded = TextTokenizer.from_pretrained(out)
    expected = TextTokenizer.train(texts_from_split(folder), vocab_size=80)
    assert loaded.vocab_size == 80
    assert torch.equal(loaded(QUESTIONS).input_ids, expected(QUESTIONS).input_ids)


def test_cli_missing_split_is_one_line_error(tmp_path, capsys, only_tokenizer_cli):
    (tmp_path / "DATA").mkdir()
    code = main(
        [
            "tokenizer",
            "train",
            "--data",
            str(tmp_path / "DATA"),
            "--split",
            "val",
            "--out",
            str(tmp_path / "t"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("xlxmert: error: split folder not found")
