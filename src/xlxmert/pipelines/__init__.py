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
import sysconfig
from pathlib import Path

from xlxmert.errors import XLXMERTError

MODEL_ENV = "XLXMERT_MODEL"
DEFAULT_MODEL = "shapes-64"


def default_model_dir() -> Path:
    """The model folder used when none is given: ``$XLXMERT_MODEL`` if set (a folder or a Hub id),
    else the shipped ``models/shapes-64``: the source tree's (a checkout or an editable install) or
    the one a regular install put under ``<prefix>/share/xlxmert/models/``; else an error."""
    env = os.environ.get(MODEL_ENV)
    if env:
        from xlxmert.utils.hub import resolve_model_folder

        return resolve_model_folder(env)
    candidates = (
        Path(__file__).resolve().parents[3] / "models" / DEFAULT_MODEL,
        Path(sysconfig.get_path("data")) / "share" / "xlxmert" / "models" / DEFAULT_MODEL,
    )
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise XLXMERTError(
        f"no model folder given and none found ({MODEL_ENV} is unset; looked in "
        f"{', '.join(map(str, candidates))}); pass --model DIR (a folder written by pretraining)"
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
    if name in ("NLVR2Pipeline", "VerifyOutput"):
        from xlxmert.pipelines import verify

        return getattr(verify, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AnswerOutput",
    "AnswerPipeline",
    "CaptionOutput",
    "CaptionPipeline",
    "NLVR2Pipeline",
    "PaintOutput",
    "PaintPipeline",
    "VerifyOutput",
    "default_model_dir",
]
