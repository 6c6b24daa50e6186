"""The transformer families (paper §7.2): LXMERT's two streams and UNITER's one.

``ARCHITECTURES`` names each family's config and model class; :func:`transformer_config` builds a
family's preset; :func:`load_transformer` loads a model folder's ``transformer/`` whichever family
wrote it (``model_index.json`` records the class as ``transformer_class``; folders written before
the record are LXMERT's). Everything above the models (pretraining, samplers, pipelines) reaches a
family through this module and the shared interface of
:class:`~xlxmert.models.grid_embedding.GridEmbeddingModel`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xlxmert.errors import XLXMERTError
from xlxmert.models.grid_embedding import GridEmbeddingModel
from xlxmert.models.transformer import XLxmertConfig, XLxmertForPreTraining
from xlxmert.models.uniter import XUniterConfig, XUniterForPreTraining
from xlxmert.utils.model_folder import INDEX_NAME

ARCHITECTURES: dict[str, tuple[type, type[GridEmbeddingModel]]] = {
    "lxmert": (XLxmertConfig, XLxmertForPreTraining),
    "uniter": (XUniterConfig, XUniterForPreTraining),
}
# The paper's names of each family's two variants: X-<family> (visual words, CCC) and <family>+Grid
# (exact features, regression).
VARIANT_NAMES = {
    "lxmert": {"x": "x-lxmert", "grid": "lxmert-grid"},
    "uniter": {"x": "x-uniter", "grid": "uniter-grid"},
}


def transformer_config(architecture: str, preset: str, variant: str = "x", **overrides: Any) -> Any:
    """Family ``architecture``'s preset with ``variant`` ``"x"`` or ``"grid"`` (the +Grid baseline
    reads exact features and regresses them unless ``visual_target`` says otherwise)."""
    if architecture not in ARCHITECTURES:
        raise XLXMERTError(f"unknown architecture {architecture!r}; choose one of {sorted(ARCHITECTURES)}")
    names = VARIANT_NAMES[architecture]
    if variant not in names:
        raise XLXMERTError(f"unknown variant {variant!r}; choose one of {sorted(names)}")
    if variant == "grid":
        overrides.setdefault("visual_target", "regression")
    return ARCHITECTURES[architecture][0].from_preset(preset, variant=names[variant], **overrides)


def architecture_of(config: Any) -> str:
    """The family name of a transformer config."""
    for name, (config_cls, _) in ARCHITECTURES.items():
        if isinstance(config, config_cls):
            return name
    raise XLXMERTError(f"{type(config).__name__} is not a transformer config")


def build_transformer(config: Any, centroids: Any = None) -> GridEmbeddingModel:
    """A new model of ``config``'s family (``centroids: FloatTensor[K, D]`` or None)."""
    return ARCHITECTURES[architecture_of(config)][1](config, centroids)


def transformer_class(model_dir: str | Path) -> type[GridEmbeddingModel]:
    """The class that wrote ``model_dir/transformer/`` (from ``model_index.json``)."""
    index_path = Path(model_dir) / INDEX_NAME
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    name = index.get("transformer_class", XLxmertForPreTraining.__name__)
    for _, model_cls in ARCHITECTURES.values():
        if model_cls.__name__ == name:
            return model_cls
    raise XLXMERTError(f"{index_path}: unknown transformer_class {name!r}; written by a newer xlxmert?")


def load_transformer(model_dir: str | Path) -> GridEmbeddingModel:
    """``model_dir/transformer/`` with the centroids of ``model_dir/vocabulary/``, whichever family."""
    return transformer_class(model_dir).from_pretrained(model_dir)
