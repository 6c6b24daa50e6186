"""The bad-input matrix: every user mistake is one line on stderr, a non-zero exit, no traceback,
no "internal error" and nothing half-written, whatever the command (issue 25).

Three kinds of cases: options refused when the command line is parsed (exit 2, before any work);
bad files, folders and arguments refused by the command (exit 1); and inputs that work but deserve
a one-line warning (exit 0). Each runs ``xlxmert.cli.main`` in-process on a tiny model.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import GRID, build_tiny_model
from xlxmert.cli import main
from xlxmert.visual.grid import GRID_NAME

CAPTION = "a red circle in the snow"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("bad") / "model")


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width``×``height`` pixels (and holds none)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.fixture
def files(tmp_path, model, monkeypatch):
    """Bad images, damaged model folders, and a work folder whose contents must not change."""
    monkeypatch.chdir(tmp_path)
    f = {"model": str(model), "tmp": str(tmp_path)}
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "scene.png")
    Image.new("RGB", (1, 1), (200, 30, 30)).save(tmp_path / "dot.png")
    (tmp_path / "text.png").write_text("not an image")
    data = (tmp_path / "scene.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "bomb.png").write_bytes(_png_header(20000, 20000))
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "a_file").write_text("x")

    def damaged(name: str, edit) -> None:
        copy = tmp_path / name
        shutil.copytree(model, copy)
        edit(copy)

    weights = "transformer/model.safetensors"
    damaged("m_no_index", lambda m: (m / "model_index.json").unlink())
    damaged("m_no_transformer", lambda m: shutil.rmtree(m / "transformer"))
    damaged("m_truncated", lambda m: (m / weights).write_bytes((m / weights).read_bytes()[:1000]))
    damaged("m_zero", lambda m: (m / weights).write_bytes(b""))
    damaged("m_pickle", lambda m: torch.save({"w": torch.ones(2)}, m / weights))
    damaged("m_evil", lambda m: (m / weights).write_bytes(pickle.dumps(_Evil())))
    damaged("m_bad_json", lambda m: (m / "transformer/config.json").write_text("{not json"))

    def wider(m: Path) -> None:
        cfg = json.loads((m / "transformer/config.json").read_text())
        cfg["intermediate_size"] *= 2  # the weights were saved for the other size
        (m / "transformer/config.json").write_text(json.dumps(cfg))

    damaged("m_sizes", wider)
    damaged("m_generator_sizes", lambda m: _edit_json(m / "generator/config.json", channels=24))
    return f


def _edit_json(path: Path, **fields) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if "pwned" not in p.name}


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_error(code, err, expected_code, message):
    assert code == expected_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err
    assert message.lower() in err.lower(), err


# -- refused when parsed: exit 2 --------------------------------------------------------------------
PAINT = ["paint", CAPTION, "-o", "out/x.png"]
PARSE_CASES = [
    (PAINT + ["--guidance-scale", "nan"], "--guidance-scale"),
    (PAINT + ["--guidance-scale", "inf"], "--guidance-scale"),
    (PAINT + ["--guidance-scale", "-1"], "--guidance-scale"),
    (PAINT + ["--temperature", "nan"], "--temperature"),
    (PAINT + ["--temperature", "inf"], "--temperature"),
    (PAINT + ["--temperature", "-0.5"], "--temperature"),
    (PAINT + ["--top-k", "0"], "--top-k"),
    (PAINT + ["--steps", "0"], "--steps"),
    (PAINT + ["--steps", "many"], "--steps"),
    (PAINT + ["--seed", str(2**70)], "--seed"),
    (PAINT + ["--seed", "-1"], "--seed"),
    (["caption", "x.png", "--top-k", "0"], "--top-k"),
    (["caption", "x.png", "--top-k", "-2"], "--top-k"),
    (["caption", "x.png", "--temperature", "nan"], "--temperature"),
    (["caption", "x.png", "--seed", str(2**64)], "--seed"),
    (["answer", "x.png", "what", "--top-k", "0"], "--top-k"),
    (["vocab", "build", "--features", "f", "--out", "o", "--k", "0"], "--k"),
    (["pretrain", "--lr", "nan"], "--lr"),
    (["pretrain", "--lr", "0"], "--lr"),
    (["pretrain", "--steps", "0"], "--steps"),
    (["pretrain", "--batch-size", "-4"], "--batch-size"),
    (["pretrain", "--caption-dropout", "1.5"], "--caption-dropout"),
    (["generator", "train", "--steps", "0"], "--steps"),
    (["backbone", "train", "--lr", "inf"], "--lr"),
    (["data", "shapes", "--n", "0"], "--n"),
    (["tokenizer", "train", "--vocab-size", "0"], "--vocab-size"),
    (["train-all", "--pretrain-lr", "nan"], "--pretrain-lr"),
    (["train-all", "--grid-size", "0"], "--grid-size"),
]


@pytest.mark.parametrize(
    "argv,option", PARSE_CASES, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in PARSE_CASES]
)
def test_bad_numbers_are_refused_when_parsed(argv, option, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(capsys, argv)
    _assert_one_line_error(code, err, 2, f"argument {option}")
    assert not any(tmp_path.iterdir())


# -- refused by the command: exit 1, nothing written ---------------------------------------------------
RUN_CASES = [
    # captions
    (["paint", "   ", "-o", "out/x.png"], "caption 1 is empty"),
    (["paint", CAPTION, "", "-o", "out/x.png"], "caption 2 is empty"),
    # outputs, checked before the model loads
    (["paint", CAPTION, "-o", "newdir/x.txt"], "not an image file name"),
    (["paint", CAPTION, "-o", "folder.png"], "is a folder"),
    (["paint", CAPTION, "-o", "a_file/x.png"], "a_file is a file, not a folder"),
    (["paint", CAPTION, "--out-dir", "a_file"], "is a file, not a folder"),
    (["paint", CAPTION, "-o", "newdir/x.png", "--steps", "5000"], "steps must be in [1, 1024]"),
    (["paint", CAPTION, "-o", "newdir/x.png", "--sampler", "tl-br", "--steps", "3"], "exactly"),
    # images of every kind
    (["caption", "missing.png"], "image not found"),
    (["caption", "folder.png"], "is a folder, not an image"),
    (["caption", "text.png"], "cannot read image"),
    (["caption", "truncated.png"], "cannot read image"),
    (["caption", "bomb.png"], "too large to decode safely"),
    (["answer", "scene.png", "  "], "question 1 is empty"),
    (["answer", "text.png", "what color is it"], "cannot read image"),
    # damaged model folders
    (["paint", CAPTION, "-o", "newdir/x.png", "--model", "missing_model"], "model folder not found"),
    (["paint", CAPTION, "-o", "newdir/x.png", "--model", "a_file"], "model"),
    (["paint", CAPTION, "-o", "newdir/x.png", "--model", "m_no_index"], "model_index.json"),
    (["paint", CAPTION, "-o", "newdir/x.png", "--model", "m_no_transformer"], "no transformer/"),
    (["paint", CAPTION, "-o", "newdir/x.png", "--model", "m_truncated"], "not a readable safetensors"),
    (["paint", CAPTION, "-o", "newdir/x.png", "--model", "m_zero"], "not a readable safetensors"),
    (["paint", CAPTION, "-o", "newdir/x.png", "--model", "m_pickle"], "not a readable safetensors"),
    (["paint", CAPTION, "-o", "newdir/x.png", "--model", "m_evil"], "not a readable safetensors"),
    (["paint", CAPTION, "-o", "newdir/x.png", "--model", "m_bad_json"], "not valid JSON"),
    (["paint", CAPTION, "-o", "newdir/x.png", "--model", "m_sizes"], "config and weights disagree"),
    (["paint", CAPTION, "-o", "newdir/x.png", "--model", "m_generator_sizes"], "disagree"),
    (["caption", "scene.png", "--model", "m_truncated"], "not a readable safetensors"),
    (["answer", "scene.png", "what", "--model", "m_sizes"], "config and weights disagree"),
    # data and training arguments
    (["pretrain", "--data", "nodata", "--vocab", "novocab", "--tokenizer", "notok", "--out", "run"], "not"),
    (["generator", "train", "--data", "nodata", "--vocab", "novocab", "--out", "run"], "centroids"),
    (["features", "extract", "--data", "nodata", "--backbone", "nobackbone", "--out", "feats"], "nobackbone"),
    (["vocab", "assign", "--features", "nofeats", "--vocab", "novocab"], "nofeats"),
    (["tokenizer", "train", "--data", "nodata", "--out", "tok"], "nodata"),
    # an --out folder that is a file: refused before any work
    (["pretrain", "--data", "nodata", "--vocab", "v", "--tokenizer", "t", "--out", "a_file"], "--out a_file"),
    (["generator", "train", "--data", "nodata", "--vocab", "v", "--out", "a_file"], "--out a_file"),
    (["backbone", "train", "--data", "nodata", "--out", "a_file/sub"], "a_file is a file"),
    (["features", "extract", "--data", "nodata", "--out", "a_file"], "--out a_file"),
    (["vocab", "build", "--features", "nofeats", "--out", "a_file"], "--out a_file"),
    (["data", "shapes", "--out", "a_file", "--n", "2"], "--out a_file"),
]


@pytest.mark.parametrize("argv,message", RUN_CASES, ids=[" ".join(c[0])[:60] for c in RUN_CASES])
def test_bad_inputs_are_one_line_errors_and_leave_nothing(argv, message, files, capsys):
    tmp = Path(files["tmp"])
    if "--model" not in argv and argv[0] in ("paint", "caption", "answer"):
        argv = [*argv, "--model", files["model"]]
    before = _listing(tmp)
    code, _, err = _run(capsys, argv)
    _assert_one_line_error(code, err, 1, message)
    assert _listing(tmp) == before  # no partial file or folder
    assert not (tmp / "pwned").exists()  # a pickle in place of safetensors never runs


# -- a failed write leaves nothing behind --------------------------------------------------------------
def test_a_failed_write_leaves_no_file_or_folder(files, capsys, monkeypatch):
    tmp = Path(files["tmp"])
    before = _listing(tmp)

    def refuse(self, fp, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(fp))

    monkeypatch.setattr(Image.Image, "save", refuse)
    code, _, err = _run(capsys, ["paint", CAPTION, "-o", "new/deeper/x.png", "--model", files["model"]])
    _assert_one_line_error(code, err, 1, "cannot write new/deeper/x.png: Permission denied")
    assert ".png name" not in err
    assert _listing(tmp) == before


# -- work, with one warning line: exit 0 ------------------------------------------------------------
WARN_CASES = [
    (["answer", "dot.png", "what color is the circle"], "only 1×1 pixels"),
    (["paint", "zzqx vbbw", "-o", "w.png"], "no word the model knows"),
    (["paint", " ".join(["a red zzqx circle to the left of a blue square"] * 4), "-o", "w.png"], "[UNK]"),
]


@pytest.mark.parametrize("argv,message", WARN_CASES, ids=["1x1 image", "unknown words", "long caption"])
def test_questionable_inputs_work_with_one_warning(argv, message, files, capsys):
    code, _, err = _run(capsys, [*argv, "--model", files["model"]])
    assert code == 0, err
    warnings = [line for line in err.strip().splitlines() if line]
    assert len(warnings) >= 1 and all(w.startswith("xlxmert: warning:") for w in warnings), err
    assert any(message in w for w in warnings), err


def test_the_truncation_warning_keeps_unknown_words(files, capsys):
    long = " ".join(["zzqx a red circle to the left of a blue square"] * 4)
    code, _, err = _run(capsys, ["paint", long, "-o", "w.png", "--model", files["model"]])
    assert code == 0 and "truncated to: '[UNK] a red" in err, err


# -- features of a model's backbone keep its grid (issue 25, item 7) -----------------------------------
def test_features_extract_keeps_the_grid_of_a_saved_backbone(tiny_shapes, model, tmp_path, capsys):
    from xlxmert.visual.store import FeatureStore

    assert json.loads((model / "backbone" / GRID_NAME).read_text())["grid_size"] == GRID
    out = tmp_path / "feats"
    code, _, err = _run(
        capsys,
        ["features", "extract", "--data", str(tiny_shapes), "--split", "compositional",
         "--backbone", str(model / "backbone"), "--out", str(out), "--quiet"],
    )  # fmt: skip
    assert code == 0, err
    store = FeatureStore.open(out)
    assert store.grid_size == GRID
    # A vocabulary of another grid refuses these features.
    from xlxmert.visual.vocabulary import VisualVocabulary, VocabularyConfig

    vocab_dir = tmp_path / "vocab16"
    config = VocabularyConfig(num_clusters=4, dim=store.dim, grid_size=2 * GRID)
    VisualVocabulary(torch.randn(4, store.dim), config).save_pretrained(vocab_dir)
    code, _, err = _run(capsys, ["vocab", "assign", "--features", str(out), "--vocab", str(vocab_dir)])
    _assert_one_line_error(code, err, 1, f"has a {GRID}×{GRID} grid but the vocabulary was built on")
    assert not (vocab_dir / "ids").exists()


def test_a_blank_line_in_metrics_csv_does_not_stop_a_resume(tmp_path):
    from xlxmert.training.pretrain import MetricsLog

    (tmp_path / "metrics.csv").write_text("step,split,metric,value\n1,train,loss,0.5\n\n3,train,loss,0.4\n")
    MetricsLog(tmp_path, resume_step=2, enabled=True).close()
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows == ["step,split,metric,value", "1,train,loss,0.5"]
