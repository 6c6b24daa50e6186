"""X-LXMERT: one multimodal transformer that paints, captions and answers questions.

Layout follows the pipeline (dependencies point one way):
``data`` → ``visual`` (grid features, visual vocabulary) → ``models`` (transformer, generator)
→ ``training`` → ``sampling`` → ``pipelines`` → ``evaluation`` → ``cli``.
"""

from xlxmert.errors import XLXMERTError

__version__ = "0.1.0"

__all__ = ["XLXMERTError", "__version__"]
