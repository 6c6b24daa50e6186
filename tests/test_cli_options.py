"""The CLI from the configs (issue 24): flags generated from the config dataclasses reach the
configs, ``--config FILE.json`` sits between the preset and the flags, bad files are one-line
errors (exit 2), ``-q``/``-v`` set what the library logs, and the help lists every command and
shows the preset's defaults."""

from __future__ import annotations

import importlib
import json
import types

import pytest

import xlxmert.study.runner
import xlxmert.training.finetune
import xlxmert.training.generator
import xlxmert.training.pretrain
import xlxmert.training.train_all
from xlxmert.cli import COMMAND_MODULES, main
from xlxmert.cli.options import OneLineParser

PRETRAIN = ["pretrain", "--data", "d", "--vocab", "v", "--tokenizer", "t"]


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: usage errors and --help
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def built(monkeypatch):
    """Every command's library call replaced by one that records the configs it is given."""
    seen: dict = {}

    def pretrain(data, vocab, tokenizer, out, model_config, train_config, **kwargs):
        seen.update(model=model_config, train=train_config)
        return types.SimpleNamespace(config=model_config, num_parameters=lambda: 1)

    def train_all(out, config, **kwargs):
        seen["train_all"] = config

    def finetune(model, data, out, config, **kwargs):
        seen["finetune"] = config
        return {"stopped_at": 0}

    def train_generator(data, vocab, out, config, **kwargs):
        seen["generator"] = config
        return types.SimpleNamespace(history=[], generator_dir=out, step=0, quality=None)

    def run_table(number, data, out, study, **kwargs):
        seen["study"] = study
        return {"claims": [], "rows": []}

    monkeypatch.setattr(xlxmert.training.pretrain, "pretrain", pretrain)
    monkeypatch.setattr(xlxmert.training.train_all, "train_all", train_all)
    monkeypatch.setattr(xlxmert.training.finetune, "finetune", finetune)
    monkeypatch.setattr(xlxmert.training.generator, "train_generator", train_generator)
    monkeypatch.setattr(xlxmert.study.runner, "run_table", run_table)
    return seen


def test_generated_flags_reach_the_configs_and_unset_ones_keep_the_preset(built, tmp_path, capsys):
    argv = PRETRAIN + ["--out", str(tmp_path / "run"), "--preset", "shapes-64-large", "--steps", "7"]
    argv += ["--no-qa", "--task-ratio", "4,1,1", "--position-frequencies", "2", "--bf16"]
    assert main(argv) == 0
    train, model = built["train"], built["model"]
    assert (train.steps, train.qa, train.task_ratio, train.mixed_precision) == (7, False, (4, 1, 1), "bf16")
    assert (train.batch_size, train.lr, train.eval_samples) == (256, 5e-4, 512)  # the preset's
    assert (model.position_frequencies, model.hidden_size, model.standardize_features) == (2, 256, True)
    # nargs form; +Grid's own defaults when the flags are not given
    argv = PRETRAIN + ["--out", str(tmp_path / "g"), "--task-ratio", "2", "1", "1", "--variant", "grid"]
    assert main(argv) == 0
    assert built["train"].task_ratio == (2, 1, 1) and built["train"].visual_masking == "bernoulli"
    assert built["model"].visual_target == "regression"

    assert main(["train-all", "--preset", "tiny", "--out", str(tmp_path / "m"), "--vocab-clusters", "32",
                 "--no-generator-bf16", "--eval-sampler", "tl-br"]) == 0  # fmt: skip
    recipe = built["train_all"]
    assert (recipe.vocab_clusters, recipe.generator_bf16, recipe.eval_sampler) == (32, False, "tl-br")
    assert (recipe.preset, recipe.pretrain_steps, recipe.num_train) == ("tiny", 6, 64)
    # "none" sets a field that may be None; the model card's command spells it so
    changed = xlxmert.training.train_all.TrainAllConfig.from_preset("tiny", vocab_sample_size=None, seed=3)
    assert "--vocab-sample-size None" in changed.command("m")
    assert main(changed.command(str(tmp_path / "m")).split()[1:]) == 0
    assert built["train_all"] == changed

    assert main(["finetune", "--task", "gqa", "--model", "m", "--data", "d", "--out", "o", "--epochs",
                 "2", "--from-scratch", "--weight-decay", "0.2"]) == 0  # fmt: skip
    ft = built["finetune"]
    assert (ft.task, ft.epochs, ft.from_scratch, ft.weight_decay, ft.lr) == ("gqa", 2, True, 0.2, 5e-5)

    gen_out = tmp_path / "gen"
    assert main(["generator", "train", "--data", "d", "--vocab", "v", "--out", str(gen_out), "--size", "128",
                 "--no-channels-last", "--betas", "0.5", "0.9"]) == 0  # fmt: skip
    gen = built["generator"]
    assert (gen.output_size, gen.channels_last, gen.betas, gen.steps) == (128, False, (0.5, 0.9), 2000)

    assert main(["study", "table3", "--data", "d", "--out", "o", "--budget", "small", "--n-boot", "9"]) == 0
    study = built["study"]
    assert (study.preset, study.n_boot, study.recipe, study.set_boot) == ("small", 9, "tiny", 10)
    capsys.readouterr()


def test_config_file_sits_between_the_preset_and_the_flags(built, tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(
        json.dumps({"steps": 11, "lr": 0.001, "task_ratio": [3, 1, 1], "standardize_features": True})
    )
    assert main(PRETRAIN + ["--out", str(tmp_path / "a"), "--config", str(path), "--lr", "0.002"]) == 0
    train, model = built["train"], built["model"]
    assert (train.steps, train.lr, train.task_ratio) == (11, 0.002, (3, 1, 1))  # the flag beats the file
    assert model.standardize_features is True and train.batch_size == 64  # the file's; the preset's

    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"grid_size": None, "eval_n": 5}))
    assert main(["train-all", "--out", str(tmp_path / "m"), "--config", str(recipe), "--eval-n", "6"]) == 0
    assert (built["train_all"].grid_size, built["train_all"].eval_n) == (None, 6)


@pytest.mark.parametrize(
    "content,message",
    [
        ({"stepz": 3}, "unknown field 'stepz'"),
        ({"steps": "many"}, "steps must be a int"),
        ({"steps": 0}, "steps must be a whole number in [1"),
        ({"lr": True}, "lr must be a float"),
        ({"qa": 1}, "qa must be a bool"),
        ({"task_ratio": [1, 1]}, "task_ratio must be a list of 3 ints"),
        ({"task_ratio": [0, 0, 0]}, "task_ratio must be three whole numbers V,T,M with a positive sum"),
        ({"visual_masking": "gaussian"}, "visual_masking must be one of uniform, bernoulli"),
        ({"steps": None}, "steps must not be null"),
        ([1, 2], "must hold a JSON object"),
        ("{not json", "is not JSON"),
        (None, "cannot read"),
    ],
)
def test_a_bad_config_file_is_a_one_line_error(content, message, tmp_path, capsys):
    path = tmp_path / "bad.json"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_text(json.dumps(content))
    code, _, err = _run(capsys, PRETRAIN + ["--out", str(tmp_path / "run"), "--config", str(path)])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "argument --config" in err and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_quiet_hides_and_verbose_shows_the_library_log(tmp_path, capsys):
    argv = ["train-all", "--preset", "tiny", "--out", str(tmp_path / "m"), "--stop-after", "data"]
    argv += ["--num-train", "8"]
    code, _, err = _run(capsys, argv + ["-q"])
    assert code == 0 and err == ""  # the stage lines are INFO: hidden
    code, _, err = _run(capsys, argv + ["-v"])
    assert code == 0
    assert "data: complete, skipped" in err and "stopped after data" in err  # the library's lines
    assert "TrainAllConfig: {" in err and '"num_train": 8' in err  # a debug line
    code, _, err = _run(capsys, argv)
    assert "data: complete, skipped" in err and "TrainAllConfig" not in err  # INFO by default
    code, _, err = _run(capsys, argv + ["-q", "-v"])
    assert code == 2 and "not allowed with" in err


def test_help_lists_every_command(capsys):
    code, out, _ = _run(capsys, ["--help"])
    assert code == 0
    for name in COMMAND_MODULES:
        sub = OneLineParser().add_subparsers()
        importlib.import_module(name).register(sub)
        for command in sub.choices:
            assert f"\n    {command} " in out or f"\n    {command}\n" in out, command
            code, text, _ = _run(capsys, [command, "--help"])
            assert code == 0 and text.startswith("usage: xlxmert " + command)


def test_help_shows_the_presets_effective_defaults(capsys):
    def steps_line(argv):
        code, out, _ = _run(capsys, argv)
        assert code == 0
        return " ".join(out.split("\n  --steps STEPS", 1)[1].split("\n  --", 1)[0].split())

    assert steps_line(["pretrain", "--help"]) == "optimizer updates (default: 3000; --preset shapes-64)"
    assert steps_line(["pretrain", "--preset", "paper", "--help"]) == (
        "optimizer updates (default: 200000; --preset paper)"
    )
    _, out, _ = _run(capsys, ["train-all", "--preset", "tiny", "--help"])
    assert "(default: 6; --preset tiny)" in " ".join(out.split())  # --pretrain-steps
    _, out, _ = _run(capsys, ["generator", "train", "--help"])
    assert "--size {16,32,64,128,256}" in out and "--channels-last, --no-channels-last" in out


def test_tuple_flags_check_their_values(capsys, tmp_path):
    cases = [(["1,1"], "needs 3 values"), (["1,-1,1"], "≥ 0"), (["0", "0,0"], "with a positive sum")]
    for bad, message in cases:
        code, _, err = _run(capsys, PRETRAIN + ["--out", str(tmp_path / "r"), "--task-ratio", *bad])
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_flag_written_by_hand_is_not_generated_again():
    from xlxmert.cli.options import add_config_flags, config_values
    from xlxmert.training.pretrain import PretrainConfig

    parser = OneLineParser(prog="x")
    parser.add_argument("--seed", type=int, nargs="+", default=[0])
    add_config_flags(parser, "xlxmert.training.pretrain.PretrainConfig", preset=None)
    args = parser.parse_args(["--seed", "3", "4", "--steps", "5"])
    assert args.seed == [3, 4] and config_values(args, PretrainConfig) == {"steps": 5}
