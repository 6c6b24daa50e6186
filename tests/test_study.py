"""xlxmert study: the paper's Tables 1–4 end to end on a tiny recipe (one shared base), resuming
without retraining, and the bootstrap interval on hand-made examples."""

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from xlxmert.cli import main
from xlxmert.study.intervals import bootstrap_draws, bootstrap_interval, ratio_replicates, verdict
from xlxmert.study.runner import StudyConfig, run_table
from xlxmert.training.train_all import TrainAllConfig

VERDICTS = {"held", "not held (reversed)", "not held (interval includes 0)", "undecided (no interval)"}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One study folder for the four tables: the tiny recipe with fewer steps, 4 test captions."""
    root = tmp_path_factory.mktemp("study")
    recipe = TrainAllConfig.from_preset(
        "tiny",
        num_train=48,
        num_eval=8,
        backbone_steps=3,
        generator_steps=2,
        evaluator_steps=3,
        matcher_steps=3,
        pretrain_steps=2,
        eval_n=4,
    )
    config = StudyConfig.from_preset(
        "small", seeds=1, n_boot=50, set_boot=2, timing_images=1, finetune_max_train=16, easy_negatives=9
    )
    return {"data": root / "data", "out": root / "out", "recipe": recipe, "config": config}


def _run(study, number, log=None, **overrides):
    config = dataclasses.replace(study["config"], **overrides)
    kwargs = {"log": log} if log is not None else {}
    return run_table(number, study["data"], study["out"], config, study["recipe"], progress=False, **kwargs)


def _check_written(study, number, results, labels, metrics):
    out = study["out"]
    saved = json.loads((out / f"table{number}.json").read_text())
    assert [r["label"] for r in saved["rows"]] == [r["label"] for r in results["rows"]]
    assert [r["label"] for r in saved["rows"]][: len(labels)] == labels
    assert saved["rows"][-1]["label"] == "Control: original, other image's caption"
    assert any(r["kind"] == "control-empty" for r in saved["rows"])
    md = (out / f"table{number}.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Row |"))
    for column in metrics:
        assert column in header
    assert header.endswith("The paper's ordering |")
    assert "## The paper's numbers" in md and "## The paper's orderings" in md
    assert {c["verdict"] for c in saved["claims"]} <= VERDICTS and saved["claims"]
    with Image.open(out / f"table{number}.png") as png:
        assert png.format == "PNG" and png.size[0] > 200
    for row in saved["rows"]:
        for key in ("all_facts_true", "rprec_easy", "rprec_hard", "facts_true"):
            value = row["values"][key]
            assert 0.0 <= value["mean"] <= 1.0
            lo, hi = value["interval"]
            assert lo <= hi
    return saved


@pytest.mark.slow
def test_table1_end_to_end(study):
    results = _run(study, 1)
    saved = _check_written(
        study,
        1,
        results,
        ["Original images", "X-LXMERT", "LXMERT+Grid (probe painting)"],
        ["IS↑", "FID↓", "R-prec-easy↑", "R-prec-hard↑", "All facts true↑", "VQA↑", "GQA↑", "NLVR2↑"],
    )
    rows = {r["key"]: r for r in saved["rows"]}
    for key in ("x-lxmert", "lxmert-grid"):
        for task in ("vqa", "gqa", "nlvr2"):
            assert 0.0 <= rows[key]["values"][task]["mean"] <= 1.0
            assert rows[key]["values"][task]["interval"] is None  # one seed: no interval
    assert rows["x-lxmert"]["paper"]["fid"] == 37.4
    # The per-caption scores add up to the evaluation's own (same graders, same captions).
    evaluated = json.loads((study["out"] / "evals/x-lxmert/default/seed-0/results.json").read_text())
    model = next(r["scores"] for r in evaluated["rows"] if r["kind"] == "model")
    for key in ("facts_true", "all_facts_true", "fid", "is"):
        assert rows["x-lxmert"]["values"][key]["mean"] == pytest.approx(model[key])
    assert rows["x-lxmert"]["values"]["rprec_easy"]["mean"] == pytest.approx(model["rprec_easy"])
    md = (study["out"] / "table1.md").read_text()
    assert "| Original images > X-LXMERT | IS↑ |" in md
    assert "| LXMERT+Grid (probe painting) > X-LXMERT | VQA↑ |" in md
    understanding = [c for c in saved["claims"] if c["metric"] == "vqa"]
    assert understanding[0]["verdict"] == "undecided (no interval)"


@pytest.mark.slow
def test_table2_end_to_end(study):
    results = _run(study, 2)
    _check_written(
        study, 2, results, ["Original images", "X-UNITER", "UNITER+Grid", "X-LXMERT"], ["IS↑", "FID↓"]
    )
    index = json.loads((study["out"] / "models/uniter-grid/model_index.json").read_text())
    assert index["variant"] == "uniter-grid"


@pytest.mark.slow
def test_table3_end_to_end(study):
    results = _run(study, 3)
    labels = [
        "Original images",
        "X-LXMERT",
        "w/o discrete visual words (regression)",
        "w/o uniform masking (Bernoulli 0.15)",
        "w/o data alignment (CCC on all data)",
    ]
    _check_written(study, 3, results, labels, ["IS↑", "FID↓", "All facts true↑"])
    settings = {
        key: json.loads((study["out"] / f"models/.stages/{key}.json").read_text())["settings"]
        for key in ("x-lxmert", "no-discrete", "no-uniform", "no-alignment")
    }
    assert settings["no-discrete"]["transformer"]["visual_target"] == "regression"
    assert settings["no-uniform"]["pretraining"]["visual_masking"] == "bernoulli"
    assert settings["no-alignment"]["pretraining"]["ccc_data"] == "all"
    full = settings["x-lxmert"]["pretraining"]
    assert (full["visual_masking"], full["ccc_data"]) == ("uniform", "captions")


@pytest.mark.slow
def test_table4_end_to_end(study):
    results = _run(study, 4)
    labels = ["Original images", "TL→BR (argmax)", "Random (argmax)", "Easy-First (argmax)"]
    saved = _check_written(study, 4, results, labels, ["s / image↓", "IS↑", "R-prec-hard↑"])
    painted = [r for r in saved["rows"] if r["kind"] == "model"]
    assert len(painted) == 5
    assert all(r["values"]["seconds_per_image"]["mean"] > 0 for r in painted)
    assert saved["seeds"] == [0]
    folders = sorted(p.name for p in (study["out"] / "evals/x-lxmert").iterdir())
    assert folders == ["default", "easy-first", "mask-predict-4", "random", "tl-br"]


def test_resumed_study_does_not_retrain(study):
    _run(study, 3)  # trains whatever the table-3 test did not
    weights = sorted((study["out"] / "models").glob("*/transformer/*.safetensors"))
    assert len(weights) >= 4
    before = {p: p.stat().st_mtime_ns for p in weights}
    lines = []
    _run(study, 3, log=lines.append)
    trained = [line for line in lines if line.startswith("model ")]
    assert len(trained) == 4 and all(
        line.split(": ", 1)[1].startswith("trained, skipped") for line in trained
    )
    assert not any("pretraining" in line and "skipped" not in line for line in lines)
    assert any(line.startswith("graders: complete, skipped") for line in lines)
    assert {p: p.stat().st_mtime_ns for p in weights} == before


def test_study_cli_errors(study, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["study", "table5", "--data", "d", "--out", "o"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err
    code = main(["study", "table2", "--data", "d", "--out", "o", "--seeds", "0"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "--seeds must be at least 1" in err
    # Another recipe in a study folder started with this one: refused before any work.
    if (study["out"] / "work").is_dir():
        out = str(study["out"])
        code = main(["study", "table2", "--data", str(study["data"]), "--out", out, "--budget", "small"])
        err = capsys.readouterr().err
        assert code == 1 and "other train-all settings" in err and err.count("\n") == 1


def test_bootstrap_interval_constant_values_is_zero_width():
    assert bootstrap_interval(np.full(7, 0.25)) == (0.25, 0.25)
    assert bootstrap_interval(np.full((3, 5), 2.0)) == (2.0, 2.0)


def test_bootstrap_interval_computed_case():
    # Mean of 4 resampled values from {0, 0, 0, 1} = Binomial(4, 1/4) / 4: P(0) = 0.32 > 2.5 %,
    # P(<= 0.5) = 0.949 < 97.5 % < P(<= 0.75) = 0.996, so the 95 % interval is [0, 0.75].
    assert bootstrap_interval(np.array([0.0, 0.0, 0.0, 1.0]), n_boot=4000) == (0.0, 0.75)
    # Two seeds, each constant: the seed level alone varies (mean of 2 draws of {0, 1}).
    assert bootstrap_interval(np.array([[0.0] * 4, [1.0] * 4]), n_boot=4000) == (0.0, 1.0)


def test_paired_replicates_and_verdict():
    draws = bootstrap_draws(1, 6, 500, seed=3)
    better = ratio_replicates(np.array([[1.0, 1, 1, 0, 1, 1]]), None, draws)
    worse = ratio_replicates(np.array([[0.0, 0, 1, 0, 0, 0]]), None, draws)
    lo, hi = np.percentile(better - worse, [2.5, 97.5])
    assert lo > 0 and verdict((lo, hi)) == "held"
    assert verdict((-(hi), -(lo))) == "not held (reversed)"
    assert verdict((-0.1, 0.2)) == "not held (interval includes 0)"
    # Ratios of sums: a caption without the quantity (den 0) is left out, not counted as a miss.
    only = ratio_replicates(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]]), bootstrap_draws(1, 2, 200))
    assert np.nanmin(only) == 1.0
