"""Evaluation: FID/IS, hard negatives, R-precision, semantic accuracy, task scores, the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from xlxmert.cli import main
from xlxmert.data.shapes.facts import check_caption
from xlxmert.errors import XLXMERTError
from xlxmert.evaluation.graders.evaluator import (
    EvaluatorClassLogits,
    EvaluatorConfig,
    EvaluatorTrainingConfig,
    ShapeSceneEvaluator,
    evaluator_accuracy,
    scene_targets,
)
from xlxmert.evaluation.graders.matcher import ImageTextMatcher, MatcherConfig
from xlxmert.evaluation.graders.matcher_training import MatcherTrainingConfig
from xlxmert.evaluation.graders.suite import EvaluationSuite, train_suite
from xlxmert.evaluation.metrics.fidelity import frechet_distance, inception_score, load_feature_network
from xlxmert.evaluation.metrics.rprecision import r_precision
from xlxmert.evaluation.metrics.semantic import fact_scores, semantic_accuracy
from xlxmert.evaluation.metrics.tasks import (
    caption_correctness,
    gqa_accuracy,
    nlvr2_accuracy,
    vqa_accuracy,
    vqa_score,
)
from xlxmert.evaluation.negatives import CATEGORIES, category_slots, fill_slot, hard_negatives, tokenize
from xlxmert.evaluation.report import EvaluationConfig, evaluate, parse_metrics
from xlxmert.evaluation.split import (
    choose_captions,
    images_uint8,
    load_example_images,
    load_examples,
    to_float,
)

TINY_EVALUATOR = EvaluatorConfig(widths=(16, 24, 32, 48), image_size=32)  # reads 64-px images at 32 px


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    """Enough ShapeScenes images for a briefly trained evaluator and matcher to beat chance."""
    from xlxmert.data.shapes.generate import generate_split

    root = tmp_path_factory.mktemp("eval_shapes")
    generate_split(root, "train", 400, size=64, seed=11, progress=False)
    generate_split(root, "test", 100, size=64, seed=12, progress=False)
    return root


@pytest.fixture(scope="module")
def suite_dir(shapes_root, tmp_path_factory):
    """Evaluator + matcher trained for well under a minute (tiny widths, 32 px, few steps)."""
    out = tmp_path_factory.mktemp("evaluation")
    train_suite(
        shapes_root,
        out,
        evaluator_steps=300,
        matcher_steps=300,
        eval_split=None,
        evaluator_config=TINY_EVALUATOR,
        matcher_config=MatcherConfig(dim=48, layers=1, fusion_layers=2, heads=2, cells=8),
        evaluator_training=EvaluatorTrainingConfig(batch_size=32, lr=4e-3),
        matcher_training=MatcherTrainingConfig(batch_size=32, hard_negatives=4, lr=1e-3),
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def test_set(shapes_root):
    examples = load_examples(shapes_root, "test")
    images = to_float(images_uint8(load_example_images(examples)))
    return examples, images, choose_captions(examples, seed=0)


class RandomFeatures(nn.Module):
    """A user-supplied feature network with random weights (the Inception-v3 path, tested)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean(dim=(2, 3))


# ---------------------------------------------------------------------- FID / IS
def test_fid_of_a_set_against_itself_is_zero_and_grows_with_noise(test_set, tmp_path):
    _, images, _ = test_set
    path = tmp_path / "features.pt2"
    batch = torch.export.Dim("batch")
    exported = torch.export.export(RandomFeatures(), (images[:2],), dynamic_shapes={"x": {0: batch}})
    torch.export.save(exported, str(path))
    feature = load_feature_network(path)
    same = frechet_distance(images, images, feature, num_features=32)
    gen = torch.Generator().manual_seed(0)
    small = frechet_distance(images, images + 0.1 * torch.randn(images.shape, generator=gen), feature, 32)
    large = frechet_distance(images, images + 0.4 * torch.randn(images.shape, generator=gen), feature, 32)
    assert same < 1e-3
    assert same < small < large


def test_inception_score_of_one_repeated_image_is_one(test_set):
    _, images, _ = test_set
    evaluator = ShapeSceneEvaluator(TINY_EVALUATOR)
    classifier = EvaluatorClassLogits(evaluator)
    repeated, _ = inception_score(images[:1].repeat(20, 1, 1, 1), classifier, splits=2)
    varied, _ = inception_score(images[:20], classifier, splits=2)
    assert repeated == pytest.approx(1.0, abs=1e-4)
    assert varied > repeated


def test_fid_needs_two_images_and_feature_file_errors(tmp_path, test_set):
    _, images, _ = test_set
    with pytest.raises(XLXMERTError, match="at least 2"):
        frechet_distance(images[:1], images, RandomFeatures(), 32)
    (tmp_path / "bad.pt").write_text("not a network")
    with pytest.raises(XLXMERTError, match=".pt2"):
        load_feature_network(tmp_path / "bad.pt")
    (tmp_path / "bad.pt2").write_text("not a network")
    with pytest.raises(XLXMERTError, match="re-export"):
        load_feature_network(tmp_path / "bad.pt2")


# ---------------------------------------------------------------------- hard negatives
def _slot_texts(caption: str) -> list[tuple[str, str]]:
    return [(s.category, s.text) for s in category_slots(caption)]


def _non_slot_words(caption: str) -> list[str]:
    tokens = tokenize(caption)
    keep = [True] * len(tokens)
    for s in category_slots(caption):
        for i in range(s.start, s.end):
            keep[i] = False
    return ["a" if t == "an" else t for t, k in zip(tokens, keep) if k]


def test_every_hard_negative_swaps_exactly_one_category_word_and_is_false(shapes_root):
    rng = np.random.default_rng(0)
    checked = 0
    for ex in load_examples(shapes_root, "test", 40):
        for caption in ex.captions:
            assert check_caption(caption, ex.scene)[0] == check_caption(caption, ex.scene)[1]
            original = _slot_texts(caption)
            for negative in hard_negatives(caption, ex.scene, rng, n=9):
                swapped = _slot_texts(negative)
                assert len(swapped) == len(original)
                diffs = [(a, b) for a, b in zip(original, swapped) if a != b]
                assert len(diffs) == 1 and diffs[0][0][0] == diffs[0][1][0]  # one word, same category
                assert _non_slot_words(negative) == _non_slot_words(caption)
                n_true, n_total = check_caption(negative, ex.scene)
                assert n_true < n_total
                checked += 1
    assert checked > 500


def test_hard_negatives_by_category_and_seeded():
    from xlxmert.data.shapes.scene import Scene, SceneObject

    red = SceneObject("circle", "red", "small", 0.2, 0.5)
    objects = (red, SceneObject("square", "blue", "large", 0.75, 0.5))
    scene = Scene(1, "snow", objects)
    caption = "a red circle to the left of a blue square"
    for category in ("shape", "color", "position"):
        negs = hard_negatives(caption, scene, np.random.default_rng(1), n=9, category=category)
        assert len(negs) == 9
        assert all({s.category for s in category_slots(n)} >= {category} for n in negs)
    assert hard_negatives(caption, scene, np.random.default_rng(3)) == hard_negatives(
        caption, scene, np.random.default_rng(3)
    )
    assert hard_negatives(caption, scene, np.random.default_rng(0), category="number") == []
    assert fill_slot("a red circle in the snow", category_slots("a red circle in the snow")[0], "orange") == (
        "an orange circle in the snow"
    )
    with pytest.raises(XLXMERTError, match="category"):
        hard_negatives(caption, scene, np.random.default_rng(0), category="verb")


# ---------------------------------------------------------------------- trained evaluator and matcher
def test_evaluator_accuracy_on_original_images_is_reported_and_high(suite_dir, shapes_root, capsys):
    code = main(["evaluator", "accuracy", "--data", str(shapes_root), "--evaluator", str(suite_dir)])
    assert code == 0
    acc = json.loads(capsys.readouterr().out)
    assert acc["place"] > 0.9  # chance 0.25
    assert acc["object_recall"] > 0.15  # chance ≈ 0 (colour, shape and centre within 0.1)
    assert acc["num_images"] == 100


def test_r_precision_true_pairs_far_above_shuffled_pairs(suite_dir, test_set):
    examples, images, captions = test_set
    suite = EvaluationSuite.from_pretrained(suite_dir)
    scenes = [ex.scene for ex in examples]
    true = r_precision(suite.matcher, images, captions, scenes, easy_negatives=99)
    perm = np.random.default_rng(0).permutation(len(captions))
    shuffled = r_precision(suite.matcher, images, [captions[j] for j in perm], [scenes[j] for j in perm])
    # A surrogate trained for seconds (it reaches ≈0.07 easy here; ≈0.3+ in minutes at full size):
    # true pairs well above chance (1/100), shuffled ones at it.
    assert shuffled["easy"] <= 0.04
    assert true["easy"] >= 0.05
    assert true["easy"] >= 2.5 * max(shuffled["easy"], 0.01)
    assert shuffled["hard"] < 0.25  # chance 1/10
    assert set(CATEGORIES) <= {k.removeprefix("hard_") for k in true if k.startswith("hard_")}


def test_semantic_accuracy_and_facts_of_originals_and_mismatched(suite_dir, test_set):
    examples, images, captions = test_set
    suite = EvaluationSuite.from_pretrained(suite_dir)
    scenes = [ex.scene for ex in examples]
    rolled = list(range(1, len(captions))) + [0]
    sem = semantic_accuracy(suite.matcher, images, captions, scenes)
    other_captions, other_scenes = [captions[j] for j in rolled], [scenes[j] for j in rolled]
    sem_other = semantic_accuracy(suite.matcher, images, other_captions, other_scenes)
    for result in (sem, sem_other):
        assert 0.0 <= result["mean"] <= 1.0
        assert all(result[f"n_{c}"] > 0 for c in ("shape", "color"))
    facts = fact_scores(suite.evaluator, images, captions)
    facts_other = fact_scores(suite.evaluator, images, [captions[j] for j in rolled])
    assert facts["facts_true"] > facts_other["facts_true"]
    assert facts["all_facts_true"] >= facts_other["all_facts_true"]


def test_matcher_scores_survive_saving_and_do_not_depend_on_the_batch(suite_dir, test_set, tmp_path):
    _, images, captions = test_set
    suite = EvaluationSuite.from_pretrained(suite_dir)
    rows = [captions[:5], captions[5:10], captions[10:15]]
    together = suite.matcher.score(images[:3], rows)
    alone = torch.cat([suite.matcher.score(images[i : i + 1], [rows[i]]) for i in range(3)])
    again = ImageTextMatcher.from_pretrained(suite.matcher.save_pretrained(tmp_path / "matcher"))
    assert together.shape == (3, 5)
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)
    assert torch.equal(again.score(images[:3], rows), together)
    with pytest.raises(XLXMERTError, match="same number"):
        suite.matcher.score(images[:2], [captions[:2], captions[:3]])
    assert MatcherConfig.from_preset("shapes-64") == MatcherConfig()
    with pytest.raises(XLXMERTError, match="preset"):
        MatcherConfig.from_preset("huge")


def test_evaluator_round_trip_and_targets(suite_dir, test_set):
    examples, images, _ = test_set
    suite = EvaluationSuite.from_pretrained(suite_dir)
    again = ShapeSceneEvaluator.from_pretrained(suite_dir / "evaluator")
    with torch.no_grad():
        assert torch.equal(suite.evaluator(images[:4]).features, again(images[:4]).features)
    tgt = scene_targets([ex.scene for ex in examples[:4]], again.config)
    grid = again.config.image_size // again.config.detection_stride
    assert tgt.centers.shape == (4, grid, grid)
    assert int((tgt.centers > 0).sum()) == sum(len(ex.scene.objects) for ex in examples[:4])
    acc = evaluator_accuracy(again, examples[:8])
    assert 0.0 <= acc["scene_exact"] <= 1.0


# ---------------------------------------------------------------------- tasks
def test_vqa_accuracy_follows_the_official_formula():
    assert vqa_accuracy("2", ["two"] * 10) == 1.0
    assert vqa_accuracy("Red.", ["red"] * 10) == 1.0
    assert vqa_accuracy("blue", ["red"] * 10) == 0.0
    # 2 of 10 annotators: 8 subsets keep both (2/3), 2 keep one (1/3) → 0.6
    assert vqa_accuracy("cat", ["cat", "cat"] + ["dog"] * 8) == pytest.approx(0.6)


def test_task_scores_with_oracle_and_constant_answers(shapes_root):
    split_dir = shapes_root / "test"
    annotations = json.loads((split_dir / "annotations_test.json").read_text())["annotations"]
    truth = {}
    questions = json.loads((split_dir / "questions_test.json").read_text())["questions"]
    by_qid = {a["question_id"]: a["multiple_choice_answer"] for a in annotations}
    for q in questions:
        truth[q["question"], q["image_id"]] = by_qid[q["question_id"]]
    gqa = json.loads((split_dir / "gqa_test.json").read_text())
    pixels_to_id = {
        np.asarray(img).tobytes(): ex.image_id
        for ex, img in zip(
            load_examples(shapes_root, "test"), load_example_images(load_examples(shapes_root, "test"))
        )
    }
    gqa_truth = {(q["question"], str(q["imageId"])): q["answer"] for q in gqa.values()}

    def constant(images, qs):
        return ["yes"] * len(qs)

    def oracle_gqa(images, qs):
        return [gqa_truth[q, str(pixels_to_id[np.asarray(img).tobytes()])] for img, q in zip(images, qs)]

    assert vqa_score(shapes_root, "test", constant, n=60)["score"] < 0.5
    assert gqa_accuracy(shapes_root, "test", oracle_gqa)["accuracy"] == 1.0
    records = [json.loads(line) for line in (split_dir / "nlvr2_test.jsonl").read_text().splitlines()]
    files = {ex.path.name: ex.image_id for ex in load_examples(shapes_root, "test")}
    labels = {
        (r["sentence"], files[r["left_url"].split("/")[-1]], files[r["right_url"].split("/")[-1]]): r["label"]
        == "True"
        for r in records
    }

    def oracle_nlvr2(left, right, sentences):
        ids = [
            (pixels_to_id[np.asarray(a).tobytes()], pixels_to_id[np.asarray(b).tobytes()])
            for a, b in zip(left, right)
        ]
        return [labels[s, a, b] for s, (a, b) in zip(sentences, ids)]

    assert nlvr2_accuracy(shapes_root, "test", oracle_nlvr2)["accuracy"] == 1.0
    assert nlvr2_accuracy(shapes_root, "test", lambda l, r, s: [True] * len(s))["accuracy"] < 0.75


def test_caption_correctness_of_true_and_swapped_captions(shapes_root):
    examples = load_examples(shapes_root, "test", 30)
    scenes = [ex.scene for ex in examples]
    right = caption_correctness([ex.captions[0] for ex in examples], scenes)
    rng = np.random.default_rng(0)
    wrong = []
    for ex in examples:
        negs = hard_negatives(ex.captions[0], ex.scene, rng, n=1)
        wrong.append(negs[0] if negs else "not a caption")
    swapped = caption_correctness(wrong, scenes)
    assert right["facts_true"] == 1.0 and right["all_true"] == 1.0
    assert swapped["all_true"] == 0.0 and swapped["facts_true"] < 0.9


# ---------------------------------------------------------------------- report and CLI
def test_parse_metrics():
    assert parse_metrics("all")[0] == "fid"
    assert parse_metrics("is,fid") == ("fid", "is")
    with pytest.raises(XLXMERTError, match="unknown metrics"):
        parse_metrics("fid,bleu")


def test_evaluate_writes_table_json_figure_and_reuses_cache(suite_dir, shapes_root, tmp_path):
    from test_pipelines_tiny import build_tiny_model

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
    results = evaluate([model], shapes_root, suite_dir, out, config, progress=False)
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
    again = evaluate([model], shapes_root, suite_dir, out, config, progress=False)
    assert again["rows"] == results["rows"]
    assert (out / "models" / "tiny-model" / "generated" / "settings.json").stat().st_mtime_ns == stamp
    compared = evaluate([model, model], shapes_root, suite_dir, out, config, progress=False)
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


def test_evaluate_over_seeds_keeps_each_seed_and_writes_their_mean(suite_dir, shapes_root, tmp_path, capsys):
    from test_pipelines_tiny import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny-model")
    out = tmp_path / "seeds"
    args = ["evaluate", "--model", str(model), "--data", str(shapes_root), "--evaluator", str(suite_dir)]
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


def test_samplers_default_step_counts(suite_dir, shapes_root, tmp_path):
    from test_pipelines_tiny import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny-model")
    for sampler, label in (("easy-first", "one per cell"), ("mask-predict", "4")):
        config = EvaluationConfig(n=2, metrics=parse_metrics("facts"), sampler=sampler, figure_rows=1)
        evaluate([model], shapes_root, suite_dir, tmp_path / sampler, config, progress=False)
        assert f"Sampler `{sampler}`, steps {label}," in (tmp_path / sampler / "table.md").read_text()


def test_cli_errors_are_one_line(tmp_path, shapes_root, capsys):
    args = ["--model", str(tmp_path), "--evaluator", str(tmp_path / "none"), "--out", str(tmp_path / "o")]
    code = main(["evaluate", "--data", str(shapes_root), *args])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "xlxmert evaluator train" in err
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--data", str(shapes_root), "--out", str(tmp_path / "o"), "--steps", "0"])
    assert exc.value.code == 2
