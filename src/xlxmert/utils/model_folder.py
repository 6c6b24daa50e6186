"""A model folder, diffusers-style: ``model_index.json`` mapping each component to the class that
loads it, one subfolder per component.

    MODEL/
      model_index.json      {"_class_name": "PaintPipeline", "_xlxmert_version": "0.1.0",
                             "components": {"transformer": ["xlxmert", "XLxmertForPreTraining"], ...},
                             "recipe": ..., "recipe_hash": ..., "heads": {...}, ...}
      tokenizer/            tokenizer.json + tokenizer_config.json          (TextTokenizer)
      backbone/             config.json + model.safetensors + grid.json     (GridFeatureExtractor)
      vocabulary/           config.json + centroids.safetensors             (VisualVocabulary)
      transformer/          config.json + model.safetensors (+ answers.json) (XLxmertForPreTraining
                            or XUniterForPreTraining; no centroids: the pipeline hands it the
                            vocabulary's)
      generator/            config.json + model.safetensors                 (SpadeGenerator)
      sampler/              config.json (optional: how the model paints by default; SamplerConfig)
      heads/<task>/         fine-tuned task heads (optional; models.heads), listed under "heads"

``components`` maps a component to ``[library, class]``: ``library`` is ``"xlxmert"`` for the
classes the package exports (``xlxmert.XLxmertForPreTraining``), else the module that defines the
class. :func:`load_component` is the one loader: it imports that class and calls its
``from_pretrained`` on the component's own folder. Each component's ``save_pretrained`` writes
only its own folder; whoever assembles a folder (a training stage, a pipeline's
``save_pretrained``) records the classes with :func:`update_model_index`. ``_class_name`` names
the pipeline that reads the whole folder.

Folders written before the ``[library, class]`` map (``"components": {"transformer":
"transformer"}``, the transformer's class in ``"transformer_class"``) are read as the default
classes below (:data:`DEFAULT_CLASSES`, the recorded transformer class) and rewritten in this
format by the next :func:`update_model_index`; so is a component subfolder the index does not list.
"""

from __future__ import annotations

import importlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import xlxmert
from xlxmert.errors import XLXMERTError

INDEX_NAME = "model_index.json"
COMPONENTS = ("tokenizer", "backbone", "vocabulary", "transformer", "generator")
OPTIONAL_COMPONENTS = ("sampler",)
LIBRARY = "xlxmert"
PIPELINE_CLASS = "PaintPipeline"  # the pipeline that reads every component
# The class of each component where nothing else is recorded (a folder of the previous format).
DEFAULT_CLASSES = {
    "tokenizer": "TextTokenizer",
    "backbone": "GridFeatureExtractor",
    "vocabulary": "VisualVocabulary",
    "transformer": "XLxmertForPreTraining",
    "generator": "SpadeGenerator",
    "sampler": "SamplerConfig",
}
HEAD_CLASS_NAMES = {"vqa": "VQAHead", "gqa": "GQAHead", "nlvr2": "NLVR2Head"}


def read_model_index(folder: str | Path) -> dict[str, Any]:
    """The parsed ``model_index.json`` of ``folder``, components as ``{name: [library, class]}``
    (a folder of the previous format is read as described in the module docstring). An
    :class:`XLXMERTError` if the folder is missing, not a model folder or its index is malformed."""
    folder = Path(folder)
    path = folder / INDEX_NAME
    if not folder.is_dir():
        raise XLXMERTError(f"model folder not found: {folder}")
    if not path.is_file():
        raise XLXMERTError(f"{folder} has no {INDEX_NAME}: not an xlxmert model folder")
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise XLXMERTError(f"{path} is not valid JSON ({exc.msg})") from None
    components = index.get("components", {}) if isinstance(index, dict) else None
    if not isinstance(components, dict):
        raise XLXMERTError(f"{path} is not a model index (no components map); write it with xlxmert")
    transformer_class = index.pop("transformer_class", DEFAULT_CLASSES["transformer"])
    for name, spec in components.items():
        if spec == name:  # the previous format: {"name": "name"}
            default = transformer_class if name == "transformer" else DEFAULT_CLASSES.get(name)
            spec = [LIBRARY, default] if default else spec
        if not (isinstance(spec, list) and len(spec) == 2 and all(isinstance(s, str) for s in spec)):
            raise XLXMERTError(f"{path}: component {name!r} is {spec!r}, not [library, class]")
        components[name] = spec
    index["components"] = components
    return index


def class_spec(obj: Any) -> list[str]:
    """``[library, class]`` of a component class or instance (or of a ``[library, class]`` list):
    ``"xlxmert"`` when the package exports the class under its name, else its module."""
    if isinstance(obj, (list, tuple)):
        return [str(obj[0]), str(obj[1])]
    cls = obj if isinstance(obj, type) else type(obj)
    if getattr(xlxmert, cls.__name__, None) is cls:
        return [LIBRARY, cls.__name__]
    return [cls.__module__, cls.__qualname__]


def update_model_index(
    folder: str | Path, components: Mapping[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    """Create or update ``model_index.json``: ``fields`` are set, ``components`` (name → class,
    instance or ``[library, class]``) recorded; every other component found as a subfolder keeps
    its recorded class, or gets its default class (:data:`DEFAULT_CLASSES`) when it has none."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / INDEX_NAME
    index = read_model_index(folder) if path.is_file() else {}
    recorded = {**index.get("components", {}), **{k: class_spec(v) for k, v in (components or {}).items()}}
    index.update(fields)
    index.update(_class_name=PIPELINE_CLASS, _xlxmert_version=xlxmert.__version__)
    present = [name for name in COMPONENTS + OPTIONAL_COMPONENTS if (folder / name).is_dir()]
    index["components"] = {name: recorded.get(name, [LIBRARY, DEFAULT_CLASSES[name]]) for name in present}
    # Fine-tuned task heads (heads/<task>/config.json), also as [library, class].
    heads = sorted(p.parent.name for p in (folder / "heads").glob("*/config.json"))
    if heads:
        index["heads"] = {t: [LIBRARY, HEAD_CLASS_NAMES.get(t, "TaskHead")] for t in heads}
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


def component_class(folder: str | Path, name: str) -> type:
    """The class ``model_index.json`` maps component ``name`` to, imported (a component folder
    the index does not list yet, e.g. a ``sampler/`` saved into the folder by hand, is read as its
    default class, as :func:`update_model_index` would record it)."""
    index = read_model_index(folder)
    path = Path(folder) / INDEX_NAME
    spec = index["components"].get(name)
    if spec is None and name in DEFAULT_CLASSES and (Path(folder) / name).is_dir():
        spec = [LIBRARY, DEFAULT_CLASSES[name]]
    if spec is None:
        raise XLXMERTError(
            f"{path} maps no {name} component; add it to the folder with xlxmert (a training stage "
            "or a pipeline's save_pretrained)"
        )
    library, class_name = spec
    try:
        module = importlib.import_module(library)
    except ImportError as exc:
        raise XLXMERTError(
            f"{path}: the {name} component's library {library!r} cannot be imported ({exc}); install it"
        ) from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not hasattr(cls, "from_pretrained"):
        raise XLXMERTError(
            f"{path}: unknown {name} class {library}.{class_name} (no such class with from_pretrained); "
            "written by a newer xlxmert?"
        )
    return cls


def load_component(folder: str | Path, name: str, expected: type | None = None, **kwargs: Any) -> Any:
    """Component ``name`` of model folder ``folder``: the class ``model_index.json`` maps it to
    (:func:`component_class`, which must subclass ``expected`` when given) loaded from
    ``folder/name/`` with ``from_pretrained(folder/name, **kwargs)``."""
    cls = component_class(folder, name)
    if expected is not None and not issubclass(cls, expected):
        raise XLXMERTError(
            f"{Path(folder) / INDEX_NAME}: the {name} class {cls.__name__} is not a {expected.__name__}"
        )
    return cls.from_pretrained(component_dir(folder, name), **kwargs)


def copy_component(src: str | Path, folder: str | Path, name: str) -> Path:
    """Copy a component folder ``src`` into ``folder/name`` (replacing it) and update the index;
    the class recorded for ``src`` in its own model folder's index (if any) comes with it."""
    src = Path(src)
    if not src.is_dir():
        raise XLXMERTError(f"{name} folder not found: {src}")
    source_index = src.parent / INDEX_NAME
    spec = read_model_index(src.parent)["components"].get(src.name) if source_index.is_file() else None
    dst = Path(folder) / name
    if src.resolve() != dst.resolve():
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst)
    update_model_index(folder, {name: spec} if spec else None)
    return dst
