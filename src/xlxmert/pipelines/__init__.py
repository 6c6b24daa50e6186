"""Pipelines: the glue from a caption/image to images, captions and answers.

Each loads one model folder (``model_index.json`` + ``tokenizer/``, ``backbone/``, ``vocabulary/``,
``transformer/``, ``generator/``) with ``from_pretrained(model_dir)``::

    from xlxmert.pipelines import PaintPipeline
    pipe = PaintPipeline.from_pretrained("models/shapes-64")
    out = pipe(["a red circle to the left of a blue square"], sampler="mask-predict", steps=4, seed=0)
    out.images[0].save("painted.png")
"""

from __future__ import annotations

import os
from pathlib import Path

from xlxmert.errors import XLXMERTError

MODEL_ENV = "XLXMERT_MODEL"


def default_model_dir() -> Path:
    """The model folder used when none is given: ``$XLXMERT_MODEL`` if set, else the repository's
    ``models/shapes-64`` (found from this file's place in the src layout), else an error."""
    env = os.environ.get(MODEL_ENV)
    if env:
        return Path(env)
    repo_model = Path(__file__).resolve().parents[3] / "models" / "shapes-64"
    if repo_model.is_dir():
        return repo_model
    raise XLXMERTError(
        f"no model folder given and none found ({MODEL_ENV} is unset, {repo_model} does not exist); "
        "pass --model DIR (a folder written by pretraining)"
    )


def __getattr__(name: str):
    # Lazy: `default_model_dir` (used by every CLI command) must not import torch and the models.
    if name in ("PaintPipeline", "PaintOutput"):
        from xlxmert.pipelines import paint

        return getattr(paint, name)
    if name in ("CaptionPipeline", "CaptionOutput"):
        from xlxmert.pipelines import caption

        return getattr(caption, name)
    if name in ("AnswerPipeline", "AnswerOutput"):
        from xlxmert.pipelines import answer

        return getattr(answer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AnswerOutput",
    "AnswerPipeline",
    "CaptionOutput",
    "CaptionPipeline",
    "PaintOutput",
    "PaintPipeline",
    "default_model_dir",
]
