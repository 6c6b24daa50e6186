"""The model card (``README.md``, with Hugging Face Hub metadata on top) of a model trained by
``xlxmert train-all``: what it is, the command that rebuilds it, data, time, metrics."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch

from xlxmert import __version__

CARD_NAME = "README.md"
# The Hub's model-card metadata (YAML front matter).
HUB_METADATA = [
    "---",
    "library_name: xlxmert",
    "license: apache-2.0",
    "pipeline_tag: text-to-image",
    "tags: [x-lxmert, text-to-image, image-captioning, visual-question-answering, shapescenes]",
    "---",
    "",
]


def _folder_size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def _component_table(out: Path) -> list[str]:
    rows = ["| component | files | size (MB) |", "|---|---|---|"]
    for sub in sorted(p for p in out.iterdir() if p.is_dir()):
        files = ", ".join(sorted(p.name for p in sub.iterdir() if p.is_file()))
        rows.append(f"| `{sub.name}/` | {files} | {_folder_size_mb(sub):.2f} |")
    return rows


def write_model_card(out: Path, summary: dict[str, Any], work: Path) -> Path:
    """Write ``out/README.md`` from train-all's ``summary`` and the evaluation tables in ``work``."""
    cfg = summary["config"]
    stages = summary["stages"]
    lines = [
        *HUB_METADATA,
        f"# xlxmert model: `{out.name}`",
        "",
        "X-LXMERT (Cho et al., EMNLP 2020) trained from scratch on the built-in ShapeScenes world by "
        "this package's own pipeline: it paints 64×64 images from captions, captions images and "
        "answers questions about them.",
        "",
        "## Reproduce",
        "",
        "```bash",
        summary["command"],
        "```",
        "",
        f"xlxmert {__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()} CPU ({torch.get_num_threads()} threads).",
        "",
        "## Data",
        "",
        f"ShapeScenes at {cfg['image_size']} px, seed {cfg['seed']}: {cfg['num_train']} training scenes "
        f"(5 captions and about 7 VQA-format questions each), {cfg['num_eval']} scenes in each of val, "
        "test and compositional (held-out colour–shape pairs).",
        "",
        "## Training time on this machine",
        "",
        "| stage | seconds |",
        "|---|---|",
    ]
    for name, record in stages.items():
        lines.append(f"| {name} | {record['seconds']:.0f} |")
    lines += [f"| **total (training)** | **{summary['training_seconds']:.0f}** |", ""]
    lines += ["## Components", "", *_component_table(out), ""]
    for split in ("test", "compositional"):
        table = work / "eval" / split / "table.md"
        if table.is_file():
            lines += [f"## Metrics on `{split}`", "", table.read_text().strip(), ""]
    lines += [
        "## Stage reports",
        "",
        "```json",
        json.dumps(
            {name: rec.get("report") for name, rec in stages.items() if name != "evaluation"}, indent=1
        ),
        "```",
        "",
    ]
    path = out / CARD_NAME
    path.write_text("\n".join(lines))
    return path
