"""A table's rows from its evaluation folders: per-caption scores, bootstrap intervals, and the
paper's orderings decided with the interval of each difference (:mod:`xlxmert.study.intervals`).

Rows: the original images, each painted row (a model, or a sampler of Table 4), each painted row's
empty-caption control, and the original images under another image's caption (chance level).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from xlxmert.study.intervals import (
    bootstrap_draws,
    percentile_interval,
    point_estimate,
    ratio_replicates,
    set_replicates,
    verdict,
)
from xlxmert.study.tables import LOWER_IS_BETTER, ORIGINAL, TableSpec

# Scores taken as evaluate() reports them (mean over seeds), without an interval: auto-HUMMUS and
# the per-category breakdowns (Tables 6/7 of the paper).
POINT_PREFIXES = ("semantic_", "rprec_hard_")


def _stack(paths: list[Path]) -> torch.Tensor:
    from xlxmert.data.images import load_image, pil_to_tensor

    return torch.stack([pil_to_tensor(load_image(p)) for p in paths])


def _mean_point(scores: list[dict[str, Any]], key: str) -> float | None:
    values = [s.get(key) for s in scores]
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in values):
        return None
    return float(np.mean(values))


def collect_rows(
    spec: TableSpec,
    painted: list[tuple[str, Path, Path, dict[str, Any]]],
    evaluations: dict[str, list[dict[str, Any]]],
    work: Path,
    n: int,
    study: Any,
) -> list[dict[str, Any]]:
    """Every row's values (``metric → {"mean", "interval", "replicates"}``) under shared draws."""
    from xlxmert.evaluation.graders.suite import EvaluationSuite
    from xlxmert.evaluation.report import EvaluationConfig
    from xlxmert.evaluation.split import choose_captions, load_examples
    from xlxmert.study.scores import item_scores, set_statistics

    suite = EvaluationSuite.from_pretrained(work / "eval-suite")
    examples = load_examples(work / "data", "test", n)
    n = len(examples)
    seeds = list(range(study.seeds))
    scenes = [ex.scene for ex in examples]
    captions = [choose_captions(examples, s) for s in seeds]
    originals = _stack([ex.path for ex in examples])
    rotated = list(range(1, n)) + [0]
    draws = bootstrap_draws(len(seeds), n, study.n_boot, seed=0)

    def row(key, label, kind, images, caps, scs, reference, reported) -> dict[str, Any]:
        values: dict[str, dict[str, Any]] = {}
        items = [
            item_scores(
                suite,
                images[s],
                caps[s],
                scs,
                EvaluationConfig(seed=seed, easy_negatives=study.easy_negatives),
            )
            for s, seed in enumerate(seeds)
        ]
        for metric in items[0]:
            num = np.stack([it[metric][0] for it in items])
            den = np.stack([it[metric][1] for it in items])
            reps = ratio_replicates(num, den, draws)
            values[metric] = {
                "mean": point_estimate(num, den),
                "interval": percentile_interval(reps, study.confidence),
                "replicates": reps,
            }
        for metric, statistic in set_statistics(suite, images, reference, seeds).items():
            reps = set_replicates(statistic, draws, study.set_boot)
            values[metric] = {
                "mean": _mean_point(reported, metric),
                "interval": percentile_interval(reps, study.confidence),
                "replicates": reps,
            }
        for metric in sorted({k for s in reported for k in s if k.startswith(POINT_PREFIXES)}):
            if not metric.startswith("semantic_n") and not metric.startswith("rprec_hard_n"):
                values[metric] = {"mean": _mean_point(reported, metric), "interval": None}
        return {"key": key, "label": label, "kind": kind, "values": values}

    def reported(key: str, kind: str) -> list[dict[str, Any]]:
        return [next(r["scores"] for r in res["rows"] if r["kind"] == kind) for res in evaluations[key]]

    first = painted[0][0]
    rows = [
        row(
            ORIGINAL,
            "Original images",
            "original",
            [originals] * len(seeds),
            captions,
            scenes,
            None,
            reported(first, "original"),
        )
    ]
    controls = []
    for key, model_dir, folder, _ in painted:
        name = model_dir.resolve().name  # evaluate's name of the model (its folder's)
        label = spec.label(key)
        for sub, kind, target, row_key, row_label in (
            ("generated", "model", rows, key, label),
            ("empty", "control-empty", controls, f"{key}:empty", f"Control: empty caption ({label})"),
        ):
            images = [
                _stack(
                    [folder / f"seed-{s}" / "models" / name / sub / f"{ex.image_id}.png" for ex in examples]
                )
                for s in seeds
            ]
            target.append(
                row(row_key, row_label, kind, images, captions, scenes, originals, reported(key, kind))
            )
    rows.extend(controls)
    rows.append(
        row(
            "mismatched",
            "Control: original, other image's caption",
            "control-mismatched",
            [originals] * len(seeds),
            [[caps[j] for j in rotated] for caps in captions],
            [scenes[j] for j in rotated],
            None,
            reported(first, "control-mismatched"),
        )
    )
    return rows


def _sign(metric: str) -> float:
    return -1.0 if metric in LOWER_IS_BETTER else 1.0


def table_results(
    spec: TableSpec, rows: list[dict[str, Any]], extra: dict[str, dict[str, list[float]]], study: Any
) -> dict[str, Any]:
    """The JSON of a table: rows with means and intervals, the paper's numbers and each of the
    paper's orderings with the interval of the difference and its verdict.

    ``extra``: per row key, per-seed values of scores measured once per seed (fine-tuned task
    scores, seconds per image); their interval resamples the seeds only (none with one seed)."""
    seed_draws = bootstrap_draws(study.seeds, 1, study.n_boot, seed=1)
    by_key = {r["key"]: r for r in rows}
    for key, metrics in extra.items():
        for metric, per_seed in metrics.items():
            values = np.asarray(per_seed, dtype=float)[:, None]
            reps = ratio_replicates(values, None, seed_draws) if len(per_seed) > 1 else None
            by_key[key]["values"][metric] = {
                "mean": float(values.mean()),
                "interval": None if reps is None else percentile_interval(reps, study.confidence),
                "replicates": reps,
                "per_seed": list(map(float, per_seed)),
            }
    claims = []
    for claim in spec.claims:
        for metric in claim.metrics:
            a = by_key[claim.better]["values"].get(metric, {})
            b = by_key[claim.worse]["values"].get(metric, {})
            ra, rb = a.get("replicates"), b.get("replicates")
            interval = None
            if ra is not None and rb is not None and len(ra) == len(rb):
                interval = percentile_interval(_sign(metric) * (ra - rb), study.confidence)
            difference = None
            if a.get("mean") is not None and b.get("mean") is not None:
                difference = _sign(metric) * (a["mean"] - b["mean"])
            claims.append(
                {
                    "better": claim.better,
                    "worse": claim.worse,
                    "metric": metric,
                    "difference": difference,
                    "interval": interval,
                    "verdict": verdict(interval),
                }
            )
    out_rows = []
    for r in rows:
        values = {m: {k: v for k, v in val.items() if k != "replicates"} for m, val in r["values"].items()}
        mine = [c for c in claims if c["better"] == r["key"]]
        out_rows.append(
            {
                "key": r["key"],
                "label": r["label"],
                "kind": r["kind"],
                "values": values,
                "paper": spec.paper.get(r["key"], {}),
                "ordering": ordering_summary(spec, mine),
            }
        )
    return {
        "table": spec.number,
        "title": spec.title,
        "metrics": list(spec.metrics),
        "rows": out_rows,
        "claims": claims,
        "confidence": study.confidence,
    }


def ordering_summary(spec: TableSpec, claims: list[dict[str, Any]]) -> str:
    """One cell: for each row this one should beat, which metrics held (``>`` worse row: …)."""
    from xlxmert.study.tables import METRIC_LABELS

    parts = []
    for worse in dict.fromkeys(c["worse"] for c in claims):
        mine = [c for c in claims if c["worse"] == worse]
        held = [METRIC_LABELS[c["metric"]].rstrip("↑↓") for c in mine if c["verdict"] == "held"]
        rest = [METRIC_LABELS[c["metric"]].rstrip("↑↓") for c in mine if c["verdict"] != "held"]
        text = f"> {spec.label(worse)}: held {len(held)}/{len(mine)}"
        if held:
            text += f" ({', '.join(held)})"
        if rest:
            text += f"; not held: {', '.join(rest)}"
        parts.append(text)
    return "; ".join(parts) if parts else ""
