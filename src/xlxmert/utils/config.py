"""Configs are frozen dataclasses saved as JSON beside the weights.

``save_config(cfg, folder)`` writes ``folder/config.json``; ``load_config(cls, folder)`` reads it
back. Tuples are stored as JSON lists and restored from the dataclass' field types; unknown keys
are an error (a config written by a newer version should fail loudly, not silently drop fields).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from xlxmert.errors import XLXMERTError

T = TypeVar("T")

CONFIG_NAME = "config.json"


class PresetConfig:
    """Named presets for a frozen config dataclass: ``PRESETS`` maps a name (``paper``,
    ``shapes-64``, ...) to field values; ``from_preset(name, **overrides)`` builds one.
    ``PRESET_KIND`` names the config in the error for an unknown name; ``PRESET_FIELD``, when set,
    names the field that records which preset built the config (a recipe, a study budget)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    PRESET_KIND: ClassVar[str] = "config"
    PRESET_FIELD: ClassVar[str | None] = None

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> Any:
        """Preset ``name`` with ``overrides`` applied (e.g. sizes the data decide)."""
        if name not in cls.PRESETS:
            raise XLXMERTError(
                f"unknown {cls.PRESET_KIND} preset {name!r}; choose one of {sorted(cls.PRESETS)}"
            )
        named = {cls.PRESET_FIELD: name} if cls.PRESET_FIELD else {}
        return cls(**{**cls.PRESETS[name], **named, **overrides})


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a dataclass config (nested dataclasses and tuples included)."""
    if not dataclasses.is_dataclass(cfg):
        raise TypeError(f"{type(cfg).__name__} is not a dataclass")
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def same_settings(saved: dict[str, Any], current: dict[str, Any], config_cls: type) -> bool:
    """Whether settings saved earlier (a JSON dict) are ``current`` (a ``config_cls`` as
    :func:`config_to_dict` writes it, perhaps with fields left out). A field the saved dict lacks
    (written before the field existed) matches when ``current`` holds that field's default."""
    defaults = {
        f.name: json.loads(json.dumps(f.default, default=dataclasses.asdict))
        for f in dataclasses.fields(config_cls)
        if f.default is not dataclasses.MISSING
    }
    return set(saved) <= set(current) and all(
        saved[k] == v if k in saved else k in defaults and v == defaults[k] for k, v in current.items()
    )


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild ``cls`` from :func:`config_to_dict`'s output."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise XLXMERTError(
            f"{cls.__name__}: unknown config keys {unknown}; was it written by a newer xlxmert?"
        )
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return config_from_dict(hint, value)
    if origin is tuple and isinstance(value, list):
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v) for v in value)
        return tuple(_coerce(a, v) for a, v in zip(args, value))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arg in typing.get_args(hint):
            if arg is type(None) and value is None:
                return None
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return config_from_dict(arg, value)
            if typing.get_origin(arg) is tuple and isinstance(value, list):
                return _coerce(arg, value)
    return value


def save_config(cfg: Any, folder: str | Path, name: str = CONFIG_NAME) -> Path:
    """Write ``cfg`` as ``folder/name`` (pretty JSON, sorted keys) and return the path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(config_to_dict(cfg), indent=2, sort_keys=True) + "\n")
    return path


def load_config(cls: type[T], folder: str | Path, name: str = CONFIG_NAME) -> T:
    """Read ``folder/name`` into ``cls``; a missing or broken file is an :class:`XLXMERTError`."""
    path = Path(folder) / name
    if not path.is_file():
        raise XLXMERTError(f"no {name} in {folder}: is this a folder written by xlxmert save_pretrained?")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise XLXMERTError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return config_from_dict(cls, data)
