"""Weights on disk: safetensors only (never pickles), one file per component folder."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from xlxmert.errors import XLXMERTError

WEIGHTS_NAME = "model.safetensors"


def save_weights(module: torch.nn.Module, folder: str | Path, name: str = WEIGHTS_NAME) -> Path:
    """Save ``module.state_dict()`` as safetensors; tied tensors are stored once per storage."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    seen: dict[int, str] = {}
    for key, tensor in module.state_dict().items():
        ptr = tensor.untyped_storage().data_ptr() if tensor.numel() else -1
        if ptr in seen and ptr != -1 and tensor.shape == state[seen[ptr]].shape:
            continue  # tied weight (e.g. MLM decoder = word embeddings): restored by the tie
        seen[ptr] = key
        state[key] = tensor.detach().contiguous().cpu()
    path = folder / name
    save_file(state, str(path))
    return path


def load_weights(module: torch.nn.Module, folder: str | Path, name: str = WEIGHTS_NAME) -> torch.nn.Module:
    """Load safetensors weights into ``module`` (strict, except for keys dropped by ties)."""
    path = Path(folder) / name
    if not path.is_file():
        raise XLXMERTError(f"no {name} in {folder}: train or download the component first")
    try:
        state = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError: a damaged or foreign file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise XLXMERTError(
            f"{path} is not a readable safetensors file ({reason}); copy or train it again"
        ) from None
    own = module.state_dict()
    wrong = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise XLXMERTError(
            f"{path}: {len(wrong)} weights do not fit {Path(folder) / 'config.json'} (e.g. {k}: "
            f"{tuple(state[k].shape)} on disk, {tuple(own[k].shape)} by the config); "
            "config and weights disagree"
        )
    missing, unexpected = module.load_state_dict(state, strict=False)
    if unexpected:
        raise XLXMERTError(f"{path}: unexpected weights {unexpected[:5]} (config and weights disagree)")
    tied = _tied_keys(module)
    really_missing = [k for k in missing if k not in tied]
    if really_missing:
        raise XLXMERTError(f"{path}: missing weights {really_missing[:5]} (config and weights disagree)")
    return module


def _tied_keys(module: torch.nn.Module) -> set[str]:
    """State-dict keys whose tensor shares storage with an earlier key."""
    seen: set[int] = set()
    tied: set[str] = set()
    for key, tensor in module.state_dict().items():
        if not tensor.numel():
            continue
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in seen:
            tied.add(key)
        seen.add(ptr)
    return tied


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` for an ``nn.Module`` built from its config alone.

    A subclass sets ``config_class`` (a frozen dataclass) and ``missing_hint`` (what to run when
    the folder is absent), and may override :meth:`check_config` to refuse a loaded config; the
    folder holds ``config.json`` beside ``model.safetensors``.
    """

    config_class: type
    missing_hint: str = "train it first"

    def save_pretrained(self, folder: str | Path) -> Path:
        from xlxmert.utils.config import save_config

        folder = Path(folder)
        save_config(self.config, folder)
        save_weights(self, folder)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path):
        from xlxmert.utils.config import load_config

        folder = Path(folder)
        if not folder.is_dir():
            raise XLXMERTError(f"{cls.__name__} folder not found: {folder} ({cls.missing_hint})")
        config = load_config(cls.config_class, folder)
        cls.check_config(config, folder)
        model = cls(config)
        load_weights(model, folder)
        model.eval()
        return model

    @classmethod
    def check_config(cls, config, folder: Path) -> None:
        """Raise :class:`XLXMERTError` if ``config`` (read from ``folder``) cannot build ``cls``."""
