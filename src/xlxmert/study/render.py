"""Writing a study table: ``OUT/tableN.json``, ``OUT/tableN.md`` (ours with 95 % intervals, the
paper's numbers beside them, the paper's orderings held or not) and ``OUT/tableN.png`` (bars with
the intervals)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xlxmert.study.scores import FACT_KINDS
from xlxmert.study.tables import METRIC_LABELS, PERCENT, TableSpec


def _number(value: float | None, metric: str) -> str:
    if value is None:
        return "–"
    if metric in PERCENT or metric.startswith("facts_"):
        return f"{100 * value:.1f}"
    return f"{value:.3f}" if metric == "seconds_per_image" else f"{value:.2f}"


def cell(values: dict[str, Any], metric: str) -> str:
    """``mean [lo, hi]`` (percent for rates), ``–`` when the row has no such score."""
    v = values.get(metric)
    if not v or v.get("mean") is None:
        return "–"
    text = _number(v["mean"], metric)
    if v.get("interval"):
        lo, hi = v["interval"]
        text += f" [{_number(lo, metric)}, {_number(hi, metric)}]"
    return text


def markdown_table(spec: TableSpec, results: dict[str, Any]) -> str:
    metrics = results["metrics"]
    budget = results.get("budget", {})
    lines = [
        f"# Table {spec.number} on ShapeScenes: {spec.title}",
        "",
        f"Budget `{budget.get('preset', '?')}` (recipe `{budget.get('recipe', '?')}`), "
        f"{results.get('num_images', '?')} test captions × seeds {results.get('seeds', '?')}; "
        f"mean [{int(100 * results['confidence'])} % bootstrap interval over seeds and captions]. "
        "Percentages except IS, FID and seconds. IS/FID in the evaluator's feature space; R-precision "
        "and auto-HUMMUS by the matching surrogate; facts read off each image by the evaluator.",
        "",
        "| Row | " + " | ".join(METRIC_LABELS[m] for m in metrics) + " | The paper's ordering |",
        "|---|" + "---:|" * len(metrics) + "---|",
    ]
    for row in results["rows"]:
        cells = [cell(row["values"], m) for m in metrics]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + f" | {row['ordering']} |")
    lines += ["", "## The paper's numbers (Cho et al. 2020, COCO)", ""]
    paper_metrics = [m for m in metrics if any(m in r["paper"] for r in results["rows"])]
    lines += [
        "| Row | " + " | ".join(METRIC_LABELS[m] for m in paper_metrics) + " |",
        "|---|" + "---:|" * len(paper_metrics),
    ]
    for row in results["rows"]:
        if row["paper"]:
            cells = [_number(row["paper"].get(m), m) for m in paper_metrics]
            lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## The paper's orderings, decided with the interval",
        "",
        "Held: the lower bound of the interval of (better − worse; for FID and time worse − better) "
        "is above 0. FID and IS are recomputed on each replicate's resampled images; repeated images "
        "raise FID, so its interval can sit above the point estimate (differences are paired, so the "
        "shift cancels in them). Fine-tuned task scores and seconds per image vary over seeds only "
        "(no interval with one seed).",
        "",
        "| Claim | Metric | Difference [interval] | Verdict |",
        "|---|---|---:|---|",
    ]
    for c in results["claims"]:
        diff = "–" if c["difference"] is None else _number(c["difference"], c["metric"])
        if c["interval"]:
            diff += f" [{_number(c['interval'][0], c['metric'])}, {_number(c['interval'][1], c['metric'])}]"
        claim = f"{spec.label(c['better'])} > {spec.label(c['worse'])}"
        lines.append(f"| {claim} | {METRIC_LABELS[c['metric']]} | {diff} | {c['verdict']} |")
    kinds = [k for k in FACT_KINDS if any(f"facts_{k}" in r["values"] for r in results["rows"])]
    lines += [
        "",
        "## Facts true per kind (%)",
        "",
        "| Row | " + " | ".join(kinds) + " |",
        "|---|" + "---:|" * len(kinds),
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['label']} | " + " | ".join(cell(row["values"], f"facts_{k}") for k in kinds) + " |"
        )
    lines += [
        "",
        f"Command: `{results.get('command', '')}` ({results.get('seconds', '?')} s this run, cached work "
        "included).",
    ]
    return "\n".join(lines) + "\n"


def figure(spec: TableSpec, results: dict[str, Any], path: Path) -> None:
    """Bars (one panel per metric, one bar per row) with the 95 % intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in results["metrics"] if any(m in r["values"] for r in results["rows"])]
    rows = results["rows"]
    cols = min(4, len(metrics))
    nrows = (len(metrics) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.6 * nrows), squeeze=False)
    colours = {"original": "#888888", "model": "#1f77b4", "control-empty": "#ff7f0e"}
    for ax, metric in zip(axes.flat, metrics):
        heights, lows, highs, labels, colour = [], [], [], [], []
        for row in rows:
            v = row["values"].get(metric)
            if not v or v.get("mean") is None:
                continue
            scale = 100 if metric in PERCENT else 1
            mean = v["mean"] * scale
            lo, hi = v["interval"] if v.get("interval") else (v["mean"], v["mean"])
            heights.append(mean)
            lows.append(max(mean - lo * scale, 0))
            highs.append(max(hi * scale - mean, 0))
            labels.append(row["label"])
            colour.append(colours.get(row["kind"], "#2ca02c"))
        x = range(len(heights))
        ax.bar(x, heights, yerr=[lows, highs], color=colour, capsize=3)
        ax.set_xticks(list(x), labels, rotation=60, ha="right", fontsize=6)
        ax.set_title(METRIC_LABELS[metric] + (" (%)" if metric in PERCENT else ""), fontsize=9)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.suptitle(f"Table {spec.number} on ShapeScenes: {spec.title} (95 % bootstrap intervals)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_table(out: Path, spec: TableSpec, results: dict[str, Any]) -> None:
    """``OUT/tableN.json``, ``.md`` and ``.png``, each written whole (temporary file, then rename)."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"table{spec.number}"
    for suffix, write in (
        (".json", lambda p: p.write_text(json.dumps(results, indent=2, default=float) + "\n")),
        (".md", lambda p: p.write_text(markdown_table(spec, results))),
        (".png", lambda p: figure(spec, results, p)),
    ):
        tmp = stem.with_name(f".{stem.name}.tmp{suffix}")
        write(tmp)
        tmp.replace(stem.with_suffix(suffix))
