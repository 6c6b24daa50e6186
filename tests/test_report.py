"""The evaluation report (``evaluation.report`` runs, ``evaluation.render`` renders): table, JSON,
figure and cache; ratios to the original images; seeds and their mean; the CLI's errors."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import RandomFeatures, build_tiny_model
from xlxmert.cli import main
from xlxmert.errors import XLXMERTError
from xlxmert.evaluation.report import EvaluationConfig, evaluate, parse_metrics


def test_parse_metrics():
    assert parse_metrics("all")[0] == "fid"
    assert parse_metrics("is,fid") == ("fid", "is")
    with pytest.raises(XLXMERTError, match="unknown metrics"):
        parse_metrics("fid,bleu")


@pytest.mark.slow
def test_evaluate_writes_table_json_figure_and_reuses_cache(eval_suite_dir, eval_shapes, tmp_path):
    model = build_tiny_model(tmp_path / "tiny-model")
    out = tmp_path / "report"
    network = tmp_path / "inception-stand-in.pt2"
    example = torch.zeros(2, 3, 64, 64)
    dynamic = {"x": {0: torch.export.Dim("batch")}}
    torch.export.save(torch.export.export(RandomFeatures(), (example,), dynamic_shapes=dynamic), str(network))
    config = EvaluationConfig(
        feature_network=str(network),
        n=12,
        metrics=parse_metrics("all"),
        steps=2,
        easy_negatives=9,
        figure_rows=3,
    )
    results = evaluate([model], eval_shapes, eval_suite_dir, out, config, progress=False)
    names = [r["name"] for r in results["rows"]]
    assert names[0] == "Original images" and names[-1].startswith("Control: original")
    assert any(n.startswith("Reconstruction from ground-truth ids") for n in names)
    assert any(n.startswith("Control: empty caption") for n in names)
    table = (out / "table.md").read_text()
    assert "| Method | IS↑ | FID↓ | FID-ext↓ | R-prec-easy↑ | R-prec-hard↑" in table
    # Table 1, per category, and relative to the original images.
    model_lines = [line for line in table.splitlines() if line.startswith("| X-LXMERT (tiny-model)")]
    assert len(model_lines) == 3
    ratio = results["rows"][1]["scores"]["rprec_hard"] / results["rows"][0]["scores"]["rprec_hard"]
    assert model_lines[2].endswith(f" | {ratio:.2f} |")
    assert json.loads((out / "results.json").read_text())["num_images"] == 12
    from PIL import Image

    with Image.open(out / "figure.png") as fig:
        assert fig.size[1] > 3 * 128
    model_row = results["rows"][1]["scores"]
    assert model_row["fid"] >= 0 and model_row["fid_external"] >= 0 and 1.0 <= model_row["is"]
    assert 0.0 <= model_row["vqa"] <= 1.0 and 0.0 <= model_row["gqa"] <= 1.0
    assert 0.0 <= model_row["caption_facts_true"] <= 1.0 and "nlvr2_note" in model_row
    assert results["rows"][0]["scores"]["evaluator_accuracy"]["place"] > 0.9
    stamp = (out / "models" / "tiny-model" / "generated" / "settings.json").stat().st_mtime_ns
    again = evaluate([model], eval_shapes, eval_suite_dir, out, config, progress=False)
    assert again["rows"] == results["rows"]
    assert (out / "models" / "tiny-model" / "generated" / "settings.json").stat().st_mtime_ns == stamp
    compared = evaluate([model, model], eval_shapes, eval_suite_dir, out, config, progress=False)
    assert [r["name"] for r in compared["rows"]].count("X-LXMERT (tiny-model-2)") == 1
    assert compared["rows"][1] == results["rows"][1]


def test_relative_table_divides_by_the_original_row():
    from xlxmert.evaluation.render import _relative_table

    original = {"semantic_shape": 0.8, "semantic_color": 0.5, "semantic_number": 0.4,
                "semantic_position": 0.2, "rprec_hard": 0.5}  # fmt: skip
    painted = {"semantic_shape": 0.4, "semantic_color": 0.5, "semantic_number": 0.6,
               "semantic_position": None, "rprec_hard": 0.35}  # fmt: skip
    rows = [
        {"name": "Original images", "kind": "original", "scores": original},
        {"name": "X-LXMERT (m)", "kind": "model", "scores": painted},
        {
            "name": "Control: original, other image's caption",
            "kind": "control-mismatched",
            "scores": original,
        },
    ]
    lines = _relative_table(rows)
    assert lines[-1] == "| X-LXMERT (m) | 0.50 | 1.00 | 1.50 | – | 0.70 |"
    assert not any("other image" in line for line in lines)
    assert _relative_table(rows[1:]) == []


def test_average_results_means_scores_and_ratios_over_seeds():
    from xlxmert.evaluation.render import markdown_report
    from xlxmert.evaluation.report import average_results

    def result(seed, shape, painted_shape, hard):
        keys = {"semantic_color": 0.5, "semantic_number": None, "semantic_position": 0.5}
        return {
            "config": {"split": "test", "sampler": "random", "steps": 16, "seed": seed},
            "num_images": 3,
            "rows": [
                {"name": "Original images", "kind": "original",
                 "scores": {"semantic_shape": shape, "rprec_hard": 0.5, "note_note": "a", **keys}},
                {"name": "X-LXMERT (m)", "kind": "model",
                 "scores": {"semantic_shape": painted_shape, "rprec_hard": hard, "note_note": "a", **keys}},
            ],
        }  # fmt: skip

    runs = [result(0, 0.8, 0.4, 0.25), result(1, 0.5, 0.5, 0.45)]
    mean = average_results(runs, [0, 1])
    assert mean["seeds"] == [0, 1] and mean["num_images"] == 3
    model = mean["rows"][1]
    assert model["scores"]["semantic_shape"] == pytest.approx(0.45)
    assert model["scores"]["semantic_number"] is None and model["scores"]["note_note"] == "a"
    # the mean of the per-seed ratios (0.5 and 1.0), not the ratio of the means (0.45 / 0.65)
    assert model["relative"]["semantic_shape"] == pytest.approx(0.75)
    assert model["relative_range"]["semantic_shape"] == pytest.approx([0.5, 1.0])
    assert model["relative"]["rprec_hard"] == pytest.approx(0.7)
    table = markdown_report(mean)
    assert "mean of seeds 0, 1 (each seed's table: seed-S/table.md)" in table
    assert (
        "| X-LXMERT (m) | 0.75 (0.50–1.00) | 1.00 (1.00–1.00) | – | 1.00 (1.00–1.00) | 0.70 (0.50–0.90) |"
    ) in table.splitlines()
    with pytest.raises(XLXMERTError, match="different rows"):
        average_results([runs[0], {**runs[1], "rows": runs[1]["rows"][:1]}], [0, 1])


@pytest.mark.slow
def test_evaluate_over_seeds_keeps_each_seed_and_writes_their_mean(
    eval_suite_dir, eval_shapes, tmp_path, capsys
):
    model = build_tiny_model(tmp_path / "tiny-model")
    out = tmp_path / "seeds"
    args = ["evaluate", "--model", str(model), "--data", str(eval_shapes), "--evaluator", str(eval_suite_dir)]
    args += ["--n", "8", "--metrics", "semantic,r-precision", "--steps", "2", "--quiet"]
    assert main([*args, "--seed", "0", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mean of seeds 0, 1" in printed and printed.endswith("(each seed)\n")
    per_seed = [json.loads((out / f"seed-{s}" / "results.json").read_text()) for s in (0, 1)]
    assert [r["config"]["seed"] for r in per_seed] == [0, 1]
    mean = json.loads((out / "results.json").read_text())
    assert mean["seeds"] == [0, 1]
    for i, row in enumerate(mean["rows"]):
        values = [r["rows"][i]["scores"]["rprec_hard"] for r in per_seed]
        assert row["scores"]["rprec_hard"] == pytest.approx(sum(values) / 2)
    # one seed is the plain evaluation, as before
    assert main([*args, "--seed", "1", "--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    one = json.loads((tmp_path / "one" / "results.json").read_text())["rows"]
    for alone, within in zip(one, per_seed[1]["rows"], strict=True):
        alone["scores"].pop("evaluator_accuracy", None)  # holds a timing
        within["scores"].pop("evaluator_accuracy", None)
        assert alone == within
    assert main([*args, "--seed", "1", "1", "--out", str(tmp_path / "twice")]) == 1
    assert (
        capsys.readouterr().err
        == "xlxmert: error: averaging needs at least two different seeds, got [1, 1]\n"
    )


@pytest.mark.slow
def test_samplers_default_step_counts(eval_suite_dir, eval_shapes, tmp_path):
    model = build_tiny_model(tmp_path / "tiny-model")
    for sampler, label in (("easy-first", "one per cell"), ("mask-predict", "4")):
        config = EvaluationConfig(n=2, metrics=parse_metrics("facts"), sampler=sampler, figure_rows=1)
        evaluate([model], eval_shapes, eval_suite_dir, tmp_path / sampler, config, progress=False)
        assert f"Sampler `{sampler}`, steps {label}," in (tmp_path / sampler / "table.md").read_text()


def test_cli_errors_are_one_line(tmp_path, eval_shapes, capsys):
    args = ["--model", str(tmp_path), "--evaluator", str(tmp_path / "none"), "--out", str(tmp_path / "o")]
    code = main(["evaluate", "--data", str(eval_shapes), *args])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "xlxmert evaluator train" in err
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--data", str(eval_shapes), "--out", str(tmp_path / "o"), "--steps", "0"])
    assert exc.value.code == 2
