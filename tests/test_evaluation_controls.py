"""The evaluation table's rows by value (issue 26): with oracle graders and an oracle painter, the
original images, the model and the reconstruction score the maximum, and both controls (empty
caption, other image's caption) score the chance computed from the data."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import xlxmert.evaluation.report as report
from test_metrics_oracle import (
    EASY,
    HARD,
    OracleEvaluator,
    OracleMatcher,
    band,
    easy_chance,
    hard_chance,
    rotate,
    semantic_chance,
)
from xlxmert.evaluation.graders.suite import EvaluationSuite
from xlxmert.evaluation.negatives import CATEGORIES
from xlxmert.evaluation.report import EvaluationConfig, evaluate, parse_metrics
from xlxmert.evaluation.split import (
    choose_captions,
    images_uint8,
    load_example_images,
    load_examples,
    to_float,
)
from xlxmert.pipelines.paint import PaintPipeline

N = 120


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """``evaluate`` run with oracle graders and a painter that paints each caption's original image."""
    from xlxmert.data.shapes.generate import generate_split

    tmp = tmp_path_factory.mktemp("controls")
    generate_split(tmp / "data", "test", N, size=64, seed=260, progress=False)
    examples = load_examples(tmp / "data", "test")
    originals = load_example_images(examples)
    images = to_float(images_uint8(originals))
    captions = choose_captions(examples, seed=0)
    scenes = [ex.scene for ex in examples]
    painting = {}
    for caption, image in zip(captions, originals):
        painting.setdefault(caption, image)

    class OraclePainter:
        """Paints a caption as the original image it was chosen for; the empty caption as grey."""

        def to(self, device=None, dtype=None):
            return self

        def __call__(self, captions, sampler=None, seed=0, guidance_scale=1.0, allow_empty=False):
            grey = Image.new("RGB", (64, 64), (120, 120, 120))
            return type("Out", (), {"images": [painting.get(c, grey) for c in captions]})()

    suite = EvaluationSuite(OracleEvaluator(images, scenes), OracleMatcher(images, captions))
    mp = pytest.MonkeyPatch()
    mp.setattr(EvaluationSuite, "from_pretrained", classmethod(lambda cls, folder: suite))
    mp.setattr(PaintPipeline, "from_pretrained", classmethod(lambda cls, folder: OraclePainter()))
    mp.setattr(report, "_reconstruct", lambda model_dir, pipe, originals, config, progress: list(originals))
    (tmp / "oracle-model").mkdir()
    config = EvaluationConfig(
        n=N,
        metrics=parse_metrics("r-precision,semantic,facts"),
        easy_negatives=EASY,
        hard_negatives=HARD,
        figure_rows=2,
    )
    try:
        results = evaluate(
            [tmp / "oracle-model"], tmp / "data", tmp / "eval", tmp / "out", config, progress=False
        )
    finally:
        mp.undo()
    rows = {row["kind"]: row["scores"] for row in results["rows"]}
    return rows, captions, scenes


SEMANTIC = [f"semantic_{c}" for c in CATEGORIES]
CEILING = ["rprec_easy", "rprec_hard", *SEMANTIC, "facts_true", "all_facts_true"]


def test_original_model_and_reconstruction_rows_score_the_maximum(table):
    rows, *_ = table
    assert set(rows) == {"original", "model", "reconstruction", "control-empty", "control-mismatched"}
    for kind in ("original", "model", "reconstruction"):
        for key in CEILING:
            assert rows[kind][key] == 1.0, (kind, key)
    assert rows["original"]["evaluator_accuracy"]["scene_exact"] == 1.0


def test_other_image_caption_control_is_at_computed_chance(table):
    rows, captions, scenes = table
    control = rows["control-mismatched"]
    shown, shown_scenes = rotate(captions), rotate(scenes)
    easy = easy_chance(shown, captions)
    hard = hard_chance(shown, shown_scenes, captions)
    assert abs(control["rprec_easy"] - np.mean(easy)) < band(easy)
    assert abs(control["rprec_hard"] - np.mean(hard)) < band(hard)
    chance = semantic_chance(shown, shown_scenes, captions)
    for category in CATEGORIES:
        value, p = control[f"semantic_{category}"], chance[category]
        assert abs(value - np.mean(p)) < band(p), category
    for key in CEILING:
        assert control[key] < rows["original"][key], key


def test_empty_caption_control_is_at_chance_and_below_the_model(table):
    rows, captions, scenes = table
    control = rows["control-empty"]
    # The grey image is nobody's: every row is a uniform draw among 1 + k captions.
    blind = [1 / (EASY + 1)] * len(captions)
    assert abs(control["rprec_easy"] - 0.1) < band(blind)
    assert abs(control["rprec_hard"] - 0.1) < band(blind)
    chance = semantic_chance(captions, scenes, [None] * len(captions))
    for category in CATEGORIES:
        value, p = control[f"semantic_{category}"], chance[category]
        assert abs(value - np.mean(p)) < band(p), category
    for key in CEILING:
        assert control[key] < rows["model"][key], key
