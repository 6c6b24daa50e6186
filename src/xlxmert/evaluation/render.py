"""Rendering an evaluation: the paper's Table 1 layout as Markdown (absolute, per category and
relative to the originals) and the comparison figure (caption | original | reconstruction |
generated), like the paper's Fig. 2/3."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from xlxmert.evaluation.negatives import CATEGORIES
from xlxmert.sampling.visual import SAMPLERS


def _steps_label(sampler: str, steps: int | None) -> str:
    """The step count a table reports: the configured one, else the sampler's default."""
    if steps is None:
        steps = SAMPLERS[sampler].default_steps if sampler in SAMPLERS else None
    return str(steps) if steps is not None else "one per cell"


RELATIVE_KEYS: tuple[tuple[str, str], ...] = (
    *((f"Sem. {c}", f"semantic_{c}") for c in CATEGORIES),
    ("R-prec-hard", "rprec_hard"),
)


def relative_scores(rows: Sequence[dict[str, Any]]) -> list[dict[str, float | None]]:
    """Each row's :data:`RELATIVE_KEYS` scores divided by the original images' (None where either is
    missing); empty when there is no original row."""
    base = next((row["scores"] for row in rows if row.get("kind") == "original"), None)
    if base is None:
        return []
    out = []
    for row in rows:
        ratios: dict[str, float | None] = {}
        for _, key in RELATIVE_KEYS:
            value, ref = row["scores"].get(key), base.get(key)
            ratios[key] = None if value is None or not ref else value / ref
        out.append(ratios)
    return out


def _fmt(value: Any, percent: bool = False) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}" if percent else f"{value:.2f}"


TABLE_COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("IS↑", "is", False),
    ("FID↓", "fid", False),
    ("R-prec-easy↑", "rprec_easy", True),
    ("R-prec-hard↑", "rprec_hard", True),
    ("Semantic acc.↑ (auto-HUMMUS)", "semantic_mean", True),
    ("Facts true↑", "facts_true", True),
    ("All facts true↑", "all_facts_true", True),
    ("VQA↑", "vqa", True),
    ("GQA↑", "gqa", True),
    ("NLVR2↑", "nlvr2", True),
    ("Caption correctness↑", "caption_facts_true", True),
)
EXTERNAL_FID_COLUMN = ("FID-ext↓", "fid_external", False)


def _seed_label(results: dict[str, Any]) -> str:
    seeds = results.get("seeds")
    if seeds:
        return f"mean of seeds {', '.join(map(str, seeds))} (each seed's table: seed-S/table.md)"
    return f"seed {results['config']['seed']}"


def markdown_report(results: dict[str, Any]) -> str:
    """Table 1 (and the per-category breakdowns of Tables 6/7) as Markdown."""
    cfg = results["config"]
    columns = TABLE_COLUMNS
    if any("fid_external" in row["scores"] for row in results["rows"]):
        columns = columns[:2] + (EXTERNAL_FID_COLUMN,) + columns[2:]
    lines = [
        f"# Evaluation on ShapeScenes `{cfg['split']}` ({results['num_images']} images)",
        "",
        f"Sampler `{cfg['sampler']}`, steps {_steps_label(cfg['sampler'], cfg['steps'])}, "
        f"temperature {cfg.get('temperature', 0.0)}{' annealed to 0' if cfg.get('anneal') else ''}, "
        f"guidance scale {cfg.get('guidance_scale', 1.0)}, {_seed_label(results)}. "
        "Percentages except IS and FID. IS/FID in the evaluator network's feature space (not "
        "Inception-v3); R-precision and semantic accuracy scored by the independent matching "
        "surrogate. Facts are read off each image by the evaluator.",
        "",
        "| Method | " + " | ".join(c[0] for c in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for row in results["rows"]:
        s = row["scores"]
        lines.append(f"| {row['name']} | " + " | ".join(_fmt(s.get(k), pct) for _, k, pct in columns) + " |")
    base = next((r["scores"] for r in results["rows"] if "vqa_majority_answer" in r["scores"]), None)
    if base is not None:  # image-blind baselines of the understanding columns (evaluation.metrics.tasks)
        lines += ["", "| Baseline | VQA↑ | GQA↑ | NLVR2↑ |", "|---|---:|---:|---:|"]
        for name, label in (("majority_answer", "majority answer"), ("question_only", "question only")):
            cells = [_fmt(base.get(f"{t}_{name}"), True) for t in ("vqa", "gqa", "nlvr2")]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Per category (R-precision-hard, Table 6; semantic accuracy, Table 7)",
        "",
        "| Method | "
        + " | ".join(f"R-hard {c}" for c in CATEGORIES)
        + " | "
        + " | ".join(f"Sem. {c}" for c in CATEGORIES)
        + " |",
        "|---|" + "---:|" * (2 * len(CATEGORIES)),
    ]
    for row in results["rows"]:
        s = row["scores"]
        cells = [_fmt(s.get(f"rprec_hard_{c}"), True) for c in CATEGORIES]
        cells += [_fmt(s.get(f"semantic_{c}"), True) for c in CATEGORIES]
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    lines += _relative_table(results["rows"])
    acc = results["rows"][0]["scores"].get("evaluator_accuracy")
    if acc:
        lines += [
            "",
            "## The evaluator on original images",
            "",
            f"Place {100 * acc['place']:.1f}% (chance 25%), "
            f"all 36 pair counts right {100 * acc['pair_counts']:.1f}%, "
            f"exact scene {100 * acc['scene_exact']:.1f}%, object recall {100 * acc['object_recall']:.1f}%, "
            f"object precision {100 * acc['object_precision']:.1f}%.",
        ]
    notes = sorted(
        {
            f"{row['name']}: {v}"
            for row in results["rows"]
            for k, v in row["scores"].items()
            if k.endswith("_note")
        }
    )
    if notes:
        lines += ["", "Notes:", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def _relative_table(rows: list[dict[str, Any]]) -> list[str]:
    """Each painted row's scores divided by the original images' (empty when there is no original
    row). Rows averaged over seeds show the mean ratio and, in brackets, its range over the seeds."""
    ratios = relative_scores(rows)
    if not any(v is not None for own in ratios for v in own.values()):
        return []
    lines = [
        "",
        "## Relative to the original images (painted score / original score)",
        "",
        "| Method | " + " | ".join(name for name, _ in RELATIVE_KEYS) + " |",
        "|---|" + "---:|" * len(RELATIVE_KEYS),
    ]
    for row, own in zip(rows, ratios):
        if row.get("kind") in ("original", "control-mismatched"):
            continue
        cells = []
        for _, key in RELATIVE_KEYS:
            value = row["relative"][key] if "relative" in row else own[key]
            spread = row.get("relative_range", {}).get(key)
            cell = "–" if value is None else f"{value:.2f}"
            if spread and value is not None:
                cell += f" ({spread[0]:.2f}–{spread[1]:.2f})"
            cells.append(cell)
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    return lines


def _text_tile(text: str, width: int, height: int) -> Image.Image:
    tile = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(tile)
    font = ImageFont.load_default()
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) > width - 8 and line:
            lines.append(line)
            line = word
        else:
            line = trial
    lines.append(line)
    for k, ln in enumerate(lines):
        draw.text((4, 4 + 12 * k), ln, fill=(0, 0, 0), font=font)
    return tile


def comparison_figure(
    captions: Sequence[str],
    originals: Sequence[Image.Image],
    columns: Sequence[tuple[str, Sequence[Image.Image]]],
    cell: int = 128,
) -> Image.Image:
    """Fig. 2/3 layout: one row per caption — caption | original | reconstruction | generated …"""
    headers = ["caption", "original", *[name for name, _ in columns]]
    width = 2 * cell + cell * (len(headers) - 1)
    header_h = 20
    figure = Image.new("RGB", (width, header_h + cell * len(captions)), (255, 255, 255))
    draw = ImageDraw.Draw(figure)
    xs = [0] + [2 * cell + cell * k for k in range(len(headers) - 1)]
    for x, head in zip(xs, headers):
        draw.text((x + 4, 4), head, fill=(0, 0, 0), font=ImageFont.load_default())
    for r, caption in enumerate(captions):
        y = header_h + r * cell
        figure.paste(_text_tile(caption, 2 * cell, cell), (0, y))
        figure.paste(originals[r].resize((cell, cell), Image.NEAREST), (xs[1], y))
        for k, (_, images) in enumerate(columns):
            figure.paste(images[r].resize((cell, cell), Image.NEAREST), (xs[2 + k], y))
    return figure
