"""A model folder, diffusers-style: ``model_index.json`` naming components, one subfolder each.

    MODEL/
      model_index.json      {"_class_name": "XLxmert", "preset": ..., "components": {...}}
      tokenizer/            tokenizer.json + tokenizer_config.json
      backbone/             config.json + model.safetensors   (grid-feature backbone)
      vocabulary/           config.json + centroids.safetensors
      transformer/          config.json + model.safetensors
      generator/            config.json + model.safetensors
      sampler/              config.json (optional: how the model paints by default)
      heads/<task>/         fine-tuned task heads (optional; models.heads), listed under "heads"

Every training stage writes its component into such a folder; every pipeline loads from one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from xlxmert.errors import XLXMERTError

INDEX_NAME = "model_index.json"
COMPONENTS = ("tokenizer", "backbone", "vocabulary", "transformer", "generator")
OPTIONAL_COMPONENTS = ("sampler",)
HEAD_CLASS_NAMES = {"vqa": "VQAHead", "gqa": "GQAHead", "nlvr2": "NLVR2Head"}


def read_model_index(folder: str | Path) -> dict[str, Any]:
    """The parsed ``model_index.json`` of ``folder`` (error if the folder is not a model folder)."""
    folder = Path(folder)
    path = folder / INDEX_NAME
    if not folder.is_dir():
        raise XLXMERTError(f"model folder not found: {folder}")
    if not path.is_file():
        raise XLXMERTError(f"{folder} has no {INDEX_NAME}: not an xlxmert model folder")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise XLXMERTError(f"{path} is not valid JSON ({exc.msg})") from None


def update_model_index(folder: str | Path, **fields: Any) -> dict[str, Any]:
    """Create or update ``model_index.json``; components found as subfolders are listed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / INDEX_NAME
    index = json.loads(path.read_text()) if path.is_file() else {"_class_name": "XLxmert"}
    index.update(fields)
    present = (name for name in COMPONENTS + OPTIONAL_COMPONENTS if (folder / name).is_dir())
    index["components"] = {name: name for name in present}
    # Fine-tuned task heads (heads/<task>/config.json), as [library, class] like the design's index.
    heads = sorted(p.parent.name for p in (folder / "heads").glob("*/config.json"))
    if heads:
        index["heads"] = {t: ["xlxmert", HEAD_CLASS_NAMES.get(t, "TaskHead")] for t in heads}
    else:
        index.pop("heads", None)
    path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return index


def component_dir(folder: str | Path, name: str) -> Path:
    """Path of component ``name`` inside model folder ``folder``, which must exist."""
    if name not in COMPONENTS + OPTIONAL_COMPONENTS:
        raise ValueError(f"unknown component {name!r}; expected one of {COMPONENTS + OPTIONAL_COMPONENTS}")
    path = Path(folder) / name
    if not path.is_dir():
        raise XLXMERTError(f"{folder} has no {name}/ component; train it first (see README: training stages)")
    return path


def copy_component(src: str | Path, folder: str | Path, name: str) -> Path:
    """Copy a component folder ``src`` into ``folder/name`` (replacing it) and update the index."""
    src = Path(src)
    if not src.is_dir():
        raise XLXMERTError(f"{name} folder not found: {src}")
    dst = Path(folder) / name
    if src.resolve() != dst.resolve():
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst)
    update_model_index(folder)
    return dst
