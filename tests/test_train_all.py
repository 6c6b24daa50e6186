"""The whole pipeline, tiny: train-all from nothing to an evaluated model folder, then paint from it."""

import json

import pytest
import torch

from xlxmert.cli import main
from xlxmert.training.train_all import STAGES, TrainAllConfig, train_all


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_train_all_tiny_end_to_end(tmp_path, capsys):
    out, work = tmp_path / "model", tmp_path / "work"
    config = TrainAllConfig.from_preset("tiny")

    # Stop part-way: later stages have not run, earlier ones are recorded.
    assert (
        train_all(out, config, work=work, progress=False, stop_after="tokenizer", log=lambda _: None) is None
    )
    assert (work / "tokenizer" / "tokenizer.json").is_file()
    assert not (work / "backbone").exists()

    lines: list[str] = []
    summary = train_all(out, config, work=work, progress=False, log=lines.append)
    assert any("data: complete, skipped" in line for line in lines)
    assert any("tokenizer: complete, skipped" in line for line in lines)
    assert set(summary["stages"]) == {s.name for s in STAGES} | {"evaluation"}

    index = json.loads((out / "model_index.json").read_text())
    assert set(index["components"]) == {"tokenizer", "backbone", "vocabulary", "transformer", "generator"}
    assert not list(out.rglob(".complete")) and not (out / "vocabulary" / "ids").exists()
    # The features are the backbone's cell predictions (4 places + 36 coverages), K = 256 words;
    # the model folder's backbone computes them the same way.
    assert json.loads((out / "backbone" / "config.json").read_text())["output"] == "predictions"
    vocab = json.loads((out / "vocabulary" / "config.json").read_text())
    assert (vocab["dim"], vocab["num_clusters"]) == (40, 256)
    transformer = json.loads((out / "transformer" / "config.json").read_text())
    assert transformer["standardize_features"] is True and transformer["feature_dim"] == 40
    pretrain_config = json.loads((work / "transformer" / "pretrain_config.json").read_text())
    assert (pretrain_config["full_mask_prob"], pretrain_config["caption_dropout"]) == (0.3, 0.1)
    card = (out / "MODEL_CARD.md").read_text()
    assert f"xlxmert train-all --preset tiny --out {out.as_posix()}" in card
    assert "Metrics on `test`" in card
    for split in ("test", "compositional"):
        assert (work / "eval" / split / "table.md").is_file()
        assert (work / "eval" / split / "results.json").is_file()

    # A finished run is all skips, and the model paints from the CLI.
    lines.clear()
    train_all(out, config, work=work, progress=False, log=lines.append)
    assert sum("complete, skipped" in line for line in lines) == len(STAGES) + 1
    png = tmp_path / "painting.png"
    assert main(["paint", "a red circle at night", "--model", str(out), "-o", str(png)]) == 0
    assert png.stat().st_size > 0


def test_train_all_refuses_other_settings_in_the_same_work_folder(tmp_path, capsys):
    work = tmp_path / "work"
    train_all(
        tmp_path / "m",
        TrainAllConfig.from_preset("tiny"),
        work=work,
        progress=False,
        stop_after="data",
        log=lambda _: None,
    )
    code = main(
        [
            "train-all",
            "--preset",
            "tiny",
            "--out",
            str(tmp_path / "m"),
            "--work",
            str(work),
            "--seed",
            "1",
            "--stop-after",
            "data",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and "other train-all settings" in err and "\n" not in err


def test_unknown_stop_after_stage_is_an_error(tmp_path):
    from xlxmert.errors import XLXMERTError

    with pytest.raises(XLXMERTError, match="unknown stage"):
        train_all(tmp_path / "m", TrainAllConfig.from_preset("tiny"), work=tmp_path / "w", stop_after="nope")
