"""Where a model folder is: a local folder, or a Hugging Face Hub repository id resolved to one.

``from_pretrained("models/shapes-64")`` reads that folder; ``from_pretrained("user/repo")`` (no such
local folder) asks ``huggingface_hub`` for a snapshot of the repository, which downloads it once
into the Hub cache or, offline (``HF_HUB_OFFLINE=1``), finds it there.
"""

from __future__ import annotations

import re
from pathlib import Path

from xlxmert.errors import XLXMERTError

# A Hub repository id: "name" or "owner/name", letters, digits, "-", "_", "." (no path separators).
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")


def resolve_model_folder(name_or_path: str | Path, revision: str | None = None) -> Path:
    """The local folder of a model: ``name_or_path`` itself when it exists (or is not a repository
    id), else the Hub snapshot of repository ``name_or_path`` at ``revision`` (default: main).

    Raises :class:`XLXMERTError` when neither is found (offline and not in the cache, unknown
    repository, no network).
    """
    path = Path(name_or_path)
    if path.exists() or not _REPO_ID.match(str(name_or_path)):
        return path
    if "/" not in str(name_or_path):
        return path  # a bare word: a relative folder that does not exist; the loader says so
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id=str(name_or_path), revision=revision))
    except LocalEntryNotFoundError:
        raise XLXMERTError(
            f"model {name_or_path!r} is neither a local folder nor in the Hugging Face cache, and the "
            "Hub cannot be reached (offline?); pass a model folder"
        ) from None
    except (RepositoryNotFoundError, HFValidationError) as exc:
        reason = str(exc).splitlines()[0]
        raise XLXMERTError(
            f"model {name_or_path!r}: no such local folder or Hub repository ({reason})"
        ) from None
