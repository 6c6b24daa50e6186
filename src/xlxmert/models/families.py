"""The transformer families (paper §7.2): LXMERT's two streams and UNITER's one.

``ARCHITECTURES`` names each family's config and model class; :func:`transformer_config` builds a
family's preset; :func:`load_transformer` loads a model folder's ``transformer/`` whichever family
wrote it (``model_index.json`` maps the component to its class), with the vocabulary's centroids.
Everything above the models (pretraining, samplers, pipelines) reaches a
family through this module and the shared interface of
:class:`~xlxmert.models.grid_embedding.GridEmbeddingModel`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xlxmert.errors import XLXMERTError
from xlxmert.models.grid_embedding import GridEmbeddingModel
from xlxmert.models.transformer import XLxmertConfig, XLxmertForPreTraining
from xlxmert.models.uniter import XUniterConfig, XUniterForPreTraining
from xlxmert.utils.model_folder import load_component
from xlxmert.visual.vocabulary import VisualVocabulary

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


def load_transformer(model_dir: str | Path, vocabulary: VisualVocabulary | None = None) -> GridEmbeddingModel:
    """``model_dir/transformer/`` as the class ``model_index.json`` maps it to, wired with the
    centroids of ``vocabulary`` (default: the folder's ``vocabulary/``, loaded here). Both load
    through :func:`~xlxmert.utils.model_folder.load_component`."""
    if vocabulary is None:
        vocabulary = load_component(model_dir, "vocabulary", VisualVocabulary)
    return load_component(model_dir, "transformer", GridEmbeddingModel, centroids=vocabulary.centroids)
