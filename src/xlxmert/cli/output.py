"""Output files of the commands: checked before any work starts, written whole or not at all.

:func:`check_output_file` / :func:`check_output_dir` refuse, with one line naming the option, a
path that cannot be written (unknown image format, a folder where a file is asked for, a file
where a folder must be, no permission) before a model is even loaded. :func:`write_image` writes
to a temporary file beside the target and renames it into place, and removes the folders it made
when the write fails, so a failed command leaves nothing behind.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from xlxmert.errors import XLXMERTError


def _first_existing(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path(".")


def _check_parent(path: Path, option: str) -> None:
    ancestor = _first_existing(path)
    if not ancestor.is_dir():
        raise XLXMERTError(f"{option} {path}: {ancestor} is a file, not a folder; choose another path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise XLXMERTError(f"{option} {path}: no permission to write in {ancestor}; choose another path")


def check_output_file(path: str | Path, option: str = "-o") -> Path:
    """``path`` as an image file the command may write (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        raise XLXMERTError(f"{option} {path} is a folder; give a file name such as {path / 'painting.png'}")
    formats = Image.registered_extensions()
    if path.suffix.lower() not in formats or formats[path.suffix.lower()] not in Image.SAVE:
        raise XLXMERTError(f"{option} {path}: not an image file name; use a .png or .jpg name")
    _check_parent(path, option)
    if path.exists() and not os.access(path, os.W_OK):
        raise XLXMERTError(f"{option} {path}: no permission to overwrite it; choose another path")
    return path


def check_output_dir(path: str | Path, option: str = "--out-dir") -> Path:
    """``path`` as a folder the command may create or write into."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise XLXMERTError(f"{option} {path} is a file, not a folder; choose another path")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise XLXMERTError(f"{option} {path}: no permission to write in it; choose another folder")
    else:
        _check_parent(path / "x", option)
    return path


def write_image(image: Image.Image, path: str | Path) -> Path:
    """Save ``image`` to ``path`` atomically, creating missing folders (removed again on failure)."""
    path = Path(path)
    made = [p for p in reversed(path.parents) if not p.exists()]
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(tmp, format=Image.registered_extensions()[path.suffix.lower()])
        os.replace(tmp, path)
    except (OSError, ValueError, KeyError) as exc:
        tmp.unlink(missing_ok=True)
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:
                break
        reason = getattr(exc, "strerror", None) or exc
        raise XLXMERTError(f"cannot write {path}: {reason}") from None
    return path
