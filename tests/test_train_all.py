"""The whole pipeline, tiny: train-all from nothing to an evaluated model folder, then paint from it."""

import json

import pytest

from xlxmert.cli import main
from xlxmert.training.train_all import TrainAllConfig, recipe_hash, recipe_stages, train_all, visual_sizes


@pytest.mark.slow
def test_train_all_tiny_end_to_end(tmp_path, capsys):
    out, work = tmp_path / "model", tmp_path / "work"
    # The recipe's options on the way (cell predictions as features, an 8×8 grid, K = 64, standardized
    # features, caption dropout, fully masked images, continuation runs) and non-default ones.
    config = TrainAllConfig.from_preset(
        "tiny",
        standardize_ccc_output=True,
        caption_dropout=0.2,
        full_mask_prob=0.2,
        ccc_class_balance=0.5,
        position_frequencies=2,
        eval_sampler="mask-predict",
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
    stages = recipe_stages(config)
    assert [s.name for s in stages][6:9] == ["pretraining", "pretraining-2", "pretraining-3"]
    assert set(summary["stages"]) == {s.name for s in stages} | {"evaluation"}

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
    assert (pretrain_config["full_mask_prob"], pretrain_config["caption_dropout"]) == (0.2, 0.2)
    assert pretrain_config["ccc_class_balance"] == 0.5
    # Validation on ShapeScenes also scores the object cells alone.
    assert ",val,ccc_top1_objects@1.0," in (work / "transformer" / "metrics.csv").read_text()
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: xlxmert\n")
    assert (
        f"xlxmert train-all --preset tiny --out {out.as_posix()} --standardize-ccc-output "
        "--caption-dropout 0.2 --full-mask-prob 0.2 --ccc-class-balance 0.5 --position-frequencies 2 "
        "--eval-sampler mask-predict --eval-steps 3 --eval-temperature 2.0 --eval-anneal "
        "--eval-guidance-scale 2.0"
    ) in card
    # Continuation runs start from the previous run and take their own settings; the model folder
    # holds the last one's transformer and names the recipe.
    for run, (fmp, ratio) in enumerate([(0.2, [1, 1, 1]), (0.2, [1, 1, 1]), (0.5, [4, 1, 1])], start=1):
        folder = work / ("transformer" if run == 1 else f"transformer-{run}")
        saved = json.loads((folder / "pretrain_config.json").read_text())
        assert (saved["full_mask_prob"], saved["task_ratio"], saved["caption_dropout"]) == (fmp, ratio, 0.2)
    first = json.loads((work / "transformer" / "transformer" / "config.json").read_text())
    assert first["standardize_ccc_output"] is True
    last = work / "transformer-3" / "transformer" / "model.safetensors"
    assert (out / "transformer" / "model.safetensors").read_bytes() == last.read_bytes()
    assert last.read_bytes() != (work / "transformer-2" / "transformer" / "model.safetensors").read_bytes()
    assert index["recipe"] == "tiny" and index["recipe_hash"] == recipe_hash(config)
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
    assert sum("complete, skipped" in line for line in lines) == len(stages) + 1
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


@pytest.mark.parametrize("grid", [5, 64])  # 0: refused when parsed (tests/test_bad_inputs.py)
def test_a_grid_that_does_not_divide_the_image_is_a_one_line_error(tmp_path, capsys, grid):
    out = str(tmp_path / "m")
    code = main(["train-all", "--preset", "tiny", "--out", out, "--grid-size", str(grid), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "grid size must divide the image size 64" in err and "\n" not in err
    assert not (tmp_path / "m.work").exists()


def test_the_reproducing_command_spells_a_task_ratio_as_the_cli_reads_it(tmp_path):
    from xlxmert.cli import build_parser

    config = TrainAllConfig.from_preset(
        "shapes-64", task_ratio=(4, 1, 1), caption_dropout=0.2, standardize_features=False
    )
    command = config.command("models/x")
    assert "--task-ratio 4,1,1" in command and "--caption-dropout 0.2" in command
    assert "--no-standardize-features" in command
    assert TrainAllConfig.from_preset("shapes-64").command("models/x") == (
        "xlxmert train-all --preset shapes-64 --out models/x"
    )
    args = build_parser().parse_args(command.split()[1:])
    assert args.task_ratio == (4, 1, 1) and args.caption_dropout == 0.2
    assert args.standardize_features is False


def test_the_shipped_model_is_the_shapes_64_recipe():
    """models/shapes-64 names the recipe by its settings' hash, and every component's config is what
    that recipe builds (a change to the recipe or to the shipped folder alone fails here)."""
    from pathlib import Path

    from xlxmert.sampling.visual import SamplerConfig

    model = Path(__file__).resolve().parents[1] / "models" / "shapes-64"
    recipe = TrainAllConfig.from_preset("shapes-64")
    index = json.loads((model / "model_index.json").read_text())
    assert (index["recipe"], index["recipe_hash"]) == ("shapes-64", recipe_hash(recipe))
    assert recipe_hash(TrainAllConfig.from_preset("shapes-64", pretrain_steps=5999)) != index["recipe_hash"]

    def config(component):
        return json.loads((model / component / "config.json").read_text())

    assert config("backbone")["output"] == recipe.backbone_output
    vocab = config("vocabulary")
    assert (vocab["grid_size"], vocab["num_clusters"]) == (recipe.grid_size, recipe.vocab_clusters)
    transformer = config("transformer")
    last = recipe.continuations[-1]
    assert (transformer["grid_size"], transformer["num_clusters"]) == (
        recipe.grid_size,
        recipe.vocab_clusters,
    )
    assert transformer["standardize_features"] is recipe.standardize_features
    assert transformer["standardize_ccc_output"] is last.standardize_ccc_output
    assert transformer["position_frequencies"] == recipe.position_frequencies
    assert (config("generator")["grid_size"], config("generator")["output_size"]) == (
        recipe.grid_size,
        recipe.image_size,
    )
    # The sizes the benchmarks build the shipped model with are the shipped folder's.
    sizes = visual_sizes("shapes-64")
    assert sizes == {key: transformer[key] for key in sizes}
    assert (config("generator")["input_dim"], vocab["dim"]) == (sizes["feature_dim"],) * 2
    assert SamplerConfig.from_pretrained(model / "sampler") == recipe.sampler
    assert "xlxmert train-all --preset shapes-64 --out models/shapes-64" in (model / "README.md").read_text()
