"""Crash-safe training checkpoints: the one way every training stage saves and resumes.

    RUN/checkpoints/
      step_0000250/          state.pt (the stage's state dict) + state.sha256 (its checksum)
      step_0000500/
      .tmp-step_0000750/     a checkpoint being written: ignored on resume, removed by the next save

:func:`save_checkpoint` writes the new checkpoint into a temporary folder, fsyncs its files and the
folder, renames the folder to ``step_<step>`` (atomic on POSIX) and fsyncs the parent; only then are
checkpoints older than the newest ``keep`` deleted. A kill at any moment therefore leaves every
finished checkpoint intact. :func:`load_latest_checkpoint` resumes from the newest checkpoint whose
checksum matches and that loads; a damaged one (a disk error, a truncated copy) is reported as a
warning and the one before it is used.

A state is a dict of tensors, numbers, strings, lists, tuples and dicts (model and optimiser
``state_dict()``s, RNG states, the step): it is read back with ``torch.load(weights_only=True)``,
so a checkpoint can never run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xlxmert.errors import XLXMERTError

CHECKPOINT_DIR = "checkpoints"
STATE_NAME = "state.pt"
CHECKSUM_NAME = "state.sha256"
_PREFIX = "step_"
_TMP_PREFIX = ".tmp-"


@dataclass
class Checkpoint:
    """A loaded checkpoint: its step, its state dict and its folder."""

    step: int
    state: dict[str, Any]
    path: Path


def checkpoint_folders(folder: str | Path) -> list[Path]:
    """The finished checkpoints ``folder/step_*`` (not the temporary ones), oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        digits = path.name[len(_PREFIX) :]
        if path.name.startswith(_PREFIX) and digits.isdigit() and path.is_dir():
            found.append((int(digits), path))
    return [path for _, path in sorted(found)]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(folder: str | Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` as ``folder/step_<step>/`` (see the module docstring); keep the newest ``keep``.

    Returns the checkpoint's folder. An existing checkpoint of the same step is replaced only
    after the new one is complete.
    """
    if keep < 1:
        raise XLXMERTError(f"keep must be at least 1 checkpoint, got {keep}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f"{_TMP_PREFIX}*"):  # left by a run killed mid-write
        shutil.rmtree(stale, ignore_errors=True)
    name = f"{_PREFIX}{step:07d}"
    tmp, final = folder / f"{_TMP_PREFIX}{name}", folder / name
    tmp.mkdir()
    torch.save({**state, "step": int(step)}, tmp / STATE_NAME)
    (tmp / CHECKSUM_NAME).write_text(f"{_sha256(tmp / STATE_NAME)}  {STATE_NAME}\n")
    for path in (tmp / STATE_NAME, tmp / CHECKSUM_NAME, tmp):
        _fsync(path)
    if final.exists():  # the same step written again (e.g. a finished run extended): move it aside
        old = folder / f"{_TMP_PREFIX}old-{name}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
    _fsync(folder)
    for old in checkpoint_folders(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Load one checkpoint folder, checking its checksum; a damaged one is an :class:`XLXMERTError`."""
    path = Path(path)
    state_path, sum_path = path / STATE_NAME, path / CHECKSUM_NAME
    if not state_path.is_file() or not sum_path.is_file():
        raise XLXMERTError(f"checkpoint {path} lacks {STATE_NAME} or {CHECKSUM_NAME}")
    expected = sum_path.read_text().split()[:1]
    if expected != [_sha256(state_path)]:
        raise XLXMERTError(f"checkpoint {path} fails its checksum (truncated or damaged)")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a damaged checkpoint
        raise XLXMERTError(f"checkpoint {path} does not load ({type(exc).__name__})") from None
    if not isinstance(state, dict) or "step" not in state:
        raise XLXMERTError(f"checkpoint {path} holds no training state")
    return Checkpoint(int(state["step"]), state, path)


def load_latest_checkpoint(folder: str | Path) -> Checkpoint | None:
    """The newest intact checkpoint in ``folder`` (None when there is none).

    A damaged newer one is reported with a warning and skipped; when every checkpoint is damaged
    the run cannot resume and an :class:`XLXMERTError` says which folder to delete.
    """
    folders = checkpoint_folders(folder)
    for path in reversed(folders):
        try:
            return read_checkpoint(path)
        except XLXMERTError as exc:
            older = "an older one" if path != folders[0] else "none left"
            warnings.warn(f"{exc}; skipping it ({older})", stacklevel=2)
    if folders:
        raise XLXMERTError(f"every checkpoint in {folder} is damaged; delete {folder} to start the run over")
    return None


class LoopCheckpoints:
    """Checkpoints of a simple training loop: named parts saved and restored together.

    ``parts``: objects with ``state_dict()``/``load_state_dict()`` (models, optimisers,
    schedulers), ``torch.Generator``s and NumPy ``Generator``s. ``settings``: a JSON-ready dict of
    what must not change between a run and its resumption (else an :class:`XLXMERTError`)::

        ckpt = LoopCheckpoints(out / CHECKPOINT_DIR, every, settings, model=model, opt=opt, gen=gen)
        start, extra = ckpt.resume()            # (0, {}) on a fresh run
        for step in range(start, steps):
            ...
            ckpt.maybe_save(step + 1, steps, losses=losses)
    """

    def __init__(self, folder: str | Path, every: int, settings: dict[str, Any], **parts: Any) -> None:
        if every < 1:
            raise XLXMERTError(f"checkpoint_every must be at least 1, got {every}")
        self.folder, self.every, self.parts = Path(folder), every, parts
        self.settings = json.dumps(settings, sort_keys=True)

    def resume(self) -> tuple[int, dict[str, Any]]:
        """Restore the parts from the newest intact checkpoint; its step and its extra entries."""
        ckpt = load_latest_checkpoint(self.folder)
        if ckpt is None:
            return 0, {}
        if ckpt.state.get("settings") != self.settings:
            raise XLXMERTError(
                f"{self.folder} holds a run with other settings; rerun with the same ones to resume, "
                f"or delete {self.folder} to start over"
            )
        for name, part in self.parts.items():
            value = ckpt.state["parts"][name]
            if isinstance(part, torch.Generator):
                part.set_state(value)
            elif isinstance(part, np.random.Generator):
                part.bit_generator.state = json.loads(value)
            else:
                part.load_state_dict(value)
        return ckpt.step, ckpt.state.get("extra", {})

    def maybe_save(self, step: int, total: int, **extra: Any) -> Path | None:
        """Save after every ``every`` steps and after the last (``step == total``)."""
        if step % self.every and step != total:
            return None
        parts = {}
        for name, part in self.parts.items():
            if isinstance(part, torch.Generator):
                parts[name] = part.get_state()
            elif isinstance(part, np.random.Generator):
                parts[name] = json.dumps(part.bit_generator.state)
            else:
                parts[name] = part.state_dict()
        return save_checkpoint(self.folder, step, {"settings": self.settings, "parts": parts, "extra": extra})

    def remove(self) -> None:
        """Delete the checkpoints (the run's result is saved elsewhere)."""
        shutil.rmtree(self.folder, ignore_errors=True)
