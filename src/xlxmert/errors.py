"""The project's one exception type.

Raise :class:`XLXMERTError` with what was wrong and what to do about it; the CLI prints its
message on one line and exits non-zero, without a traceback.
"""


class XLXMERTError(Exception):
    """An error the user can act on (bad argument, missing file, wrong shape, ...)."""
