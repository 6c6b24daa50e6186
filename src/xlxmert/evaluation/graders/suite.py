"""The evaluation suite: the networks that grade images (the scene evaluator: FID/IS features, IS
classes, facts; the image–text matcher: R-precision, semantic accuracy), trained on ShapeScenes
only and never on or by the models they grade, and loaded together from one folder."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlxmert.data.images import load_image
from xlxmert.errors import XLXMERTError
from xlxmert.evaluation.graders.evaluator import (
    EvaluatorConfig,
    EvaluatorTrainingConfig,
    ShapeSceneEvaluator,
    evaluator_accuracy,
    train_evaluator,
)
from xlxmert.evaluation.graders.matcher import ImageTextMatcher, MatcherConfig
from xlxmert.evaluation.graders.matcher_training import MatcherTrainingConfig, train_matcher
from xlxmert.evaluation.metrics.rprecision import r_precision
from xlxmert.evaluation.split import choose_captions, load_examples, stack_images

EVALUATOR_SUBDIR = "evaluator"
MATCHER_SUBDIR = "matcher"


@dataclass
class EvaluationSuite:
    """The two networks that grade images: the evaluator (FID/IS, facts) and the matcher
    (R-precision, semantic accuracy). Folder: ``EVAL_DIR/evaluator/`` and ``EVAL_DIR/matcher/``."""

    evaluator: ShapeSceneEvaluator
    matcher: ImageTextMatcher

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> EvaluationSuite:
        folder = Path(folder)
        if not (folder / EVALUATOR_SUBDIR).is_dir() or not (folder / MATCHER_SUBDIR).is_dir():
            raise XLXMERTError(
                f"{folder} is not an evaluation folder (needs {EVALUATOR_SUBDIR}/ and {MATCHER_SUBDIR}/); "
                f"train one: xlxmert evaluator train --data DATA --out {folder}"
            )
        return cls(
            ShapeSceneEvaluator.from_pretrained(folder / EVALUATOR_SUBDIR),
            ImageTextMatcher.from_pretrained(folder / MATCHER_SUBDIR),
        )

    def fingerprint(self) -> str:
        """A short hash of both networks' weights (cached scores are only valid for the same ones)."""
        h = hashlib.sha256()
        for module in (self.evaluator, self.matcher):
            for key, tensor in sorted(module.state_dict().items()):
                h.update(key.encode())
                h.update(tensor.detach().float().numpy().tobytes())
        return h.hexdigest()[:16]


def train_suite(
    data_root: str | Path,
    out: str | Path,
    evaluator_steps: int = 3000,
    matcher_steps: int = 1000,
    split: str = "train",
    eval_split: str | None = "val",
    n: int | None = None,
    evaluator_config: EvaluatorConfig | None = None,
    matcher_config: MatcherConfig | None = None,
    evaluator_training: EvaluatorTrainingConfig | None = None,
    matcher_training: MatcherTrainingConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the evaluator, then the matcher (its CNN started from the evaluator's), into ``out``.

    Returns (and writes to ``out/report.json``) the evaluator's accuracy on ``eval_split`` of the
    same data root, and the matcher's R-precision there, when that split exists.
    """
    out = Path(out)
    evaluator = train_evaluator(
        data_root,
        out / EVALUATOR_SUBDIR,
        evaluator_steps,
        split,
        evaluator_config,
        evaluator_training,
        n,
        progress,
    )
    matcher = train_matcher(
        data_root,
        out / MATCHER_SUBDIR,
        matcher_steps,
        split,
        matcher_config,
        matcher_training,
        n,
        progress,
        evaluator=evaluator,
    )
    report: dict[str, Any] = {
        "train_split": split,
        "evaluator_steps": evaluator_steps,
        "matcher_steps": matcher_steps,
    }
    if eval_split is not None and (Path(data_root) / eval_split).is_dir():
        examples = load_examples(data_root, eval_split, 500)
        report["eval_split"] = eval_split
        report["evaluator_accuracy"] = evaluator_accuracy(evaluator, examples)
        images = stack_images([load_image(ex.path) for ex in examples])
        captions = choose_captions(examples, seed=0)
        report["matcher_r_precision"] = r_precision(matcher, images, captions, [ex.scene for ex in examples])
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
