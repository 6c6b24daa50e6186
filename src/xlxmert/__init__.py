"""X-LXMERT: one multimodal transformer that paints, captions and answers questions.

Layout follows the pipeline (dependencies point one way):
``data`` → ``visual`` (grid features, visual vocabulary) → ``models`` (transformer, generator)
→ ``training`` → ``sampling`` → ``pipelines`` → ``evaluation`` → ``cli``.

The pipelines and the component classes a model folder's ``model_index.json`` names
(``["xlxmert", "XLxmertForPreTraining"]``) are importable from here, loaded on first use::

    from xlxmert import PaintPipeline
"""

import importlib

from xlxmert.errors import XLXMERTError

__version__ = "0.1.0"

# Public class -> the module that defines it (imported lazily: `xlxmert --help` must not load torch).
_EXPORTS = {
    "TextTokenizer": "xlxmert.data.tokenizer",
    "GridFeatureExtractor": "xlxmert.visual.grid",
    "VisualVocabulary": "xlxmert.visual.vocabulary",
    "XLxmertConfig": "xlxmert.models.transformer",
    "XLxmertForPreTraining": "xlxmert.models.transformer",
    "XUniterConfig": "xlxmert.models.uniter",
    "XUniterForPreTraining": "xlxmert.models.uniter",
    "SpadeGenerator": "xlxmert.models.generator",
    "VQAHead": "xlxmert.models.heads",
    "GQAHead": "xlxmert.models.heads",
    "NLVR2Head": "xlxmert.models.heads",
    "SamplerConfig": "xlxmert.sampling.visual",
    "PaintPipeline": "xlxmert.pipelines.paint",
    "CaptionPipeline": "xlxmert.pipelines.caption",
    "AnswerPipeline": "xlxmert.pipelines.answer",
    "NLVR2Pipeline": "xlxmert.pipelines.verify",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'xlxmert' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = ["XLXMERTError", "__version__", *_EXPORTS]
