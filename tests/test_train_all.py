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
    # The non-default options on the way: cell predictions as features, an 8×8 grid, K = 64, standardized
    # features, caption dropout, fully masked images, a sampled evaluation.
    config = TrainAllConfig.from_preset(
        "tiny",
        backbone_output="predictions",
        grid_size=8,
        vocab_clusters=64,
        standardize_features=True,
        standardize_ccc_output=True,
        caption_dropout=0.1,
        full_mask_prob=0.3,
        ccc_class_balance=0.5,
        position_frequencies=2,
        eval_steps=3,
        eval_temperature=2.0,
        eval_anneal=True,
        eval_guidance_scale=2.0,
    )

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
    assert set(index["components"]) == {
        "tokenizer",
        "backbone",
        "vocabulary",
        "transformer",
        "generator",
        "sampler",
    }
    assert not list(out.rglob(".complete")) and not (out / "vocabulary" / "ids").exists()
    # The features are the backbone's cell predictions (4 places + 36 coverages), K = 64 words;
    # the model folder's backbone computes them the same way.
    assert json.loads((out / "backbone" / "config.json").read_text())["output"] == "predictions"
    vocab = json.loads((out / "vocabulary" / "config.json").read_text())
    assert (vocab["dim"], vocab["num_clusters"], vocab["grid_size"]) == (40, 64, 8)
    transformer = json.loads((out / "transformer" / "config.json").read_text())
    assert transformer["grid_size"] == 8
    assert json.loads((out / "generator" / "config.json").read_text())["grid_size"] == 8
    assert transformer["standardize_features"] is True and transformer["feature_dim"] == 40
    assert transformer["standardize_ccc_output"] is True
    assert transformer["position_frequencies"] == 2
    pretrain_config = json.loads((work / "transformer" / "pretrain_config.json").read_text())
    assert (pretrain_config["full_mask_prob"], pretrain_config["caption_dropout"]) == (0.3, 0.1)
    assert pretrain_config["ccc_class_balance"] == 0.5
    # Validation on ShapeScenes also scores the object cells alone.
    assert ",val,ccc_top1_objects@1.0," in (work / "transformer" / "metrics.csv").read_text()
    card = (out / "MODEL_CARD.md").read_text()
    assert (
        f"xlxmert train-all --preset tiny --out {out.as_posix()} --backbone-output predictions "
        "--grid-size 8 --vocab-clusters 64 --full-mask-prob 0.3 --ccc-class-balance 0.5 "
        "--position-frequencies 2 "
        "--caption-dropout 0.1 --standardize-features --standardize-ccc-output "
        "--eval-steps 3 --eval-temperature 2.0 --eval-anneal --eval-guidance-scale 2.0"
    ) in card
    sampler = json.loads((out / "sampler" / "config.json").read_text())
    assert sampler == {
        "anneal": True,
        "guidance_scale": 2.0,
        "name": "mask-predict",
        "steps": 3,
        "temperature": 2.0,
        "top_k": None,
    }
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


def test_a_work_folder_from_before_a_new_setting_resumes(tmp_path):
    work = tmp_path / "work"
    train_all(tmp_path / "m", TrainAllConfig.from_preset("tiny"), work=work, progress=False,
              stop_after="data", log=lambda _: None)  # fmt: skip
    path = work / "train_all_config.json"
    saved = json.loads(path.read_text())
    del saved["full_mask_prob"]  # as written by a version without the field
    path.write_text(json.dumps(saved))
    lines: list[str] = []
    train_all(tmp_path / "m", TrainAllConfig.from_preset("tiny"), work=work, progress=False,
              stop_after="data", log=lines.append)  # fmt: skip
    assert any("data: complete, skipped" in line for line in lines)
    path.write_text(json.dumps(saved))
    with pytest.raises(Exception, match="other train-all settings"):
        train_all(tmp_path / "m", TrainAllConfig.from_preset("tiny", full_mask_prob=0.5), work=work,
                  progress=False, stop_after="data", log=lambda _: None)  # fmt: skip


def test_unknown_stop_after_stage_is_an_error(tmp_path):
    from xlxmert.errors import XLXMERTError

    with pytest.raises(XLXMERTError, match="unknown stage"):
        train_all(tmp_path / "m", TrainAllConfig.from_preset("tiny"), work=tmp_path / "w", stop_after="nope")


@pytest.mark.parametrize("grid", [0, 5, 64])
def test_a_grid_that_does_not_divide_the_image_is_a_one_line_error(tmp_path, capsys, grid):
    out = str(tmp_path / "m")
    code = main(["train-all", "--preset", "tiny", "--out", out, "--grid-size", str(grid), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "grid size must divide the image size 64" in err and "\n" not in err
    assert not (tmp_path / "m.work").exists()


def test_the_reproducing_command_spells_a_task_ratio_as_the_cli_reads_it(tmp_path):
    from xlxmert.cli import build_parser

    config = TrainAllConfig.from_preset("shapes-64", task_ratio=(4, 1, 1), caption_dropout=0.1)
    command = config.command("models/x")
    assert "--task-ratio 4,1,1" in command and "--caption-dropout 0.1" in command
    assert "--task-ratio" not in TrainAllConfig.from_preset("shapes-64").command("models/x")
    args = build_parser().parse_args(command.split()[1:])
    assert args.task_ratio == (4, 1, 1) and args.caption_dropout == 0.1
