"""Per-caption scores of one row's images, for the bootstrap (:mod:`xlxmert.study.intervals`).

The same graders as ``xlxmert evaluate`` (:mod:`xlxmert.evaluation.report`): the evaluator reads
each image's scene, the caption's facts are checked against it (overall, per fact kind, and
"all facts true"), and the matcher's R-precision outcome of each image (``return_hits``). Summed
over all captions these equal the evaluation's own scores. FID and IS are set-level: they are
recomputed on each replicate's resampled images (:func:`set_statistics`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from xlxmert.data.shapes.facts import fact_is_true, parse_caption
from xlxmert.evaluation.graders.evaluator import EvaluatorClassLogits, EvaluatorFeatures
from xlxmert.evaluation.graders.suite import EvaluationSuite
from xlxmert.evaluation.metrics.fidelity import frechet_distance, inception_score
from xlxmert.evaluation.metrics.rprecision import r_precision
from xlxmert.evaluation.report import EvaluationConfig

FACT_KINDS = ("place", "total", "object", "count", "position", "relation")

# metric → (num [N], den [N]) for one seed
ItemScores = dict[str, tuple[np.ndarray, np.ndarray]]


@torch.no_grad()
def item_scores(
    suite: EvaluationSuite,
    images: torch.Tensor,
    captions: Sequence[str],
    scenes: Sequence,
    config: EvaluationConfig,
    batch_size: int = 64,
) -> ItemScores:
    """Per-caption ``(num, den)`` of ``images: FloatTensor[N, 3, H, W] in [-1, 1]`` for
    ``captions`` (``scenes[i]``: the scene ``captions[i]`` describes): ``facts_true``,
    ``all_facts_true``, ``facts_<kind>``, ``rprec_easy``, ``rprec_hard``."""
    n = len(captions)
    predicted = []
    for s in range(0, n, batch_size):
        predicted.extend(suite.evaluator.predict_scenes(images[s : s + batch_size]))
    true, stated = np.zeros(n), np.zeros(n)
    kind_true = {k: np.zeros(n) for k in FACT_KINDS}
    kind_stated = {k: np.zeros(n) for k in FACT_KINDS}
    for i, (caption, scene) in enumerate(zip(captions, predicted)):
        facts = parse_caption(caption)
        if not facts:  # outside the grammar: one false fact, as check_caption counts it
            stated[i] = 1
            continue
        for fact in facts:
            hit = fact_is_true(fact, scene)
            true[i] += hit
            stated[i] += 1
            kind_true[fact.kind][i] += hit
            kind_stated[fact.kind][i] += 1
    ones = np.ones(n)
    out: ItemScores = {
        "facts_true": (true, stated),
        "all_facts_true": ((true == stated).astype(float), ones),
    }
    out.update({f"facts_{k}": (kind_true[k], kind_stated[k]) for k in FACT_KINDS})
    rp = r_precision(
        suite.matcher,
        images,
        captions,
        scenes,
        seed=config.seed,
        easy_negatives=config.easy_negatives,
        hard_count=config.hard_negatives,
        return_hits=True,
    )
    out["rprec_easy"] = (np.array(rp["easy_hits"], dtype=float), ones)
    hard = rp.get("hard_hits") or [None] * n
    out["rprec_hard"] = (
        np.array([float(h) if h is not None else 0.0 for h in hard]),
        np.array([0.0 if h is None else 1.0 for h in hard]),
    )
    return out


def set_statistics(
    suite: EvaluationSuite,
    images: Sequence[torch.Tensor],
    reference: torch.Tensor | None,
    seeds: Sequence[int],
    batch_size: int = 64,
) -> dict[str, Callable[[int, np.ndarray], float]]:
    """``metric → statistic(seed_index, item_indices)`` for FID (against ``reference``, the original
    images; omitted when None) and IS, on ``images[seed_index][item_indices]``."""

    def fid(s: int, idx: np.ndarray) -> float:
        fake = images[s][torch.as_tensor(idx)]
        return frechet_distance(reference, fake, EvaluatorFeatures(suite.evaluator), batch_size=batch_size)

    def inception(s: int, idx: np.ndarray) -> float:
        fake = images[s][torch.as_tensor(idx)]
        with warnings.catch_warnings():  # torchmetrics' buffer notice, once per replicate otherwise
            warnings.filterwarnings("ignore", message="Metric `InceptionScore` will save")
            return inception_score(fake, EvaluatorClassLogits(suite.evaluator), seed=seeds[s])[0]

    stats: dict[str, Callable[[int, np.ndarray], float]] = {"is": inception}
    if reference is not None:
        stats["fid"] = fid
    return stats
