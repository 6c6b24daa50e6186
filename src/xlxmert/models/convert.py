"""Authors' checkpoints → our models.

``G_60.pth`` (the released generator) is a plain ``torch.save`` of a DistributedDataParallel
state dict (keys start with ``module.``) whose spectral norm is stored the old way
(``weight_orig`` plus power-iteration vectors ``weight_u`` / ``weight_v``). Our convs use
``torch.nn.utils.parametrizations.spectral_norm``, which stores ``parametrizations.weight.original``
and ``parametrizations.weight.0._u`` / ``_v``. In eval mode both compute ``W / σ`` with
``σ = uᵀ W v`` from the stored vectors, so copying ``weight_orig → original``, ``u → _u`` and
``v → _v`` gives the same function. (In train mode the two run their single power iteration in
opposite orders, u-then-v versus v-then-u, so continued training is not bit-identical; inference is.)
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from xlxmert.errors import XLXMERTError
from xlxmert.models.generator import GeneratorConfig, SpadeGenerator

_SN_SUFFIXES = {
    "weight_orig": "parametrizations.weight.original",
    "weight_u": "parametrizations.weight.0._u",
    "weight_v": "parametrizations.weight.0._v",
    "bias": "bias",
}
_PLAIN_SUFFIXES = {"weight": "weight", "bias": "bias"}

# (reference module path regex, our module path template, spectrally normalised?)
_GENERATOR_MODULES = [
    (r"bottleneck_emb\.0", "bottleneck", False),
    (r"learned_init_conv\.0", "initial_conv", True),
    (r"style_init_conv\.0", "style_conv", True),
    (r"resblocks\.(\d+)\.cbn([12])\.shared\.0", "blocks.{0}.spade{1}.shared", False),
    (r"resblocks\.(\d+)\.cbn([12])\.gamma", "blocks.{0}.spade{1}.gamma", False),
    (r"resblocks\.(\d+)\.cbn([12])\.beta", "blocks.{0}.spade{1}.beta", False),
    (r"resblocks\.(\d+)\.conv([12])", "blocks.{0}.conv{1}", True),
    (r"resblocks\.(\d+)\.res_branch\.1", "blocks.{0}.shortcut", True),
    (r"to_RGB_blocks\.(\d+)\.conv", "to_rgb.{0}", False),
]
_NOISE = re.compile(r"resblocks\.(\d+)\.noise([12])\.weight")


def _read_state_dict(path_or_state_dict: str | Path | dict) -> dict[str, torch.Tensor]:
    if isinstance(path_or_state_dict, dict):
        state = path_or_state_dict
    else:
        path = Path(path_or_state_dict)
        if not path.is_file():
            raise XLXMERTError(f"checkpoint not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is the user's file
            raise XLXMERTError(f"cannot read {path} as a weights-only torch checkpoint: {exc}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise XLXMERTError("expected a flat state dict of tensors (the authors' G_60.pth layout)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def reference_to_ours(key: str) -> str:
    """Our state-dict key for a reference generator key (without ``module.``)."""
    match = _NOISE.fullmatch(key)
    if match:
        return f"blocks.{match[1]}.noise{match[2]}.weight"
    for pattern, template, sn in _GENERATOR_MODULES:
        match = re.fullmatch(pattern + r"\.(\w+)", key)
        if match:
            *groups, suffix = match.groups()
            suffixes = _SN_SUFFIXES if sn else _PLAIN_SUFFIXES
            if suffix not in suffixes:
                break
            return f"{template.format(*groups)}.{suffixes[suffix]}"
    raise XLXMERTError(f"unexpected key {key!r} in the generator checkpoint: is this the authors' G_60.pth?")


def convert_reference_generator(
    path_or_state_dict: str | Path | dict[str, torch.Tensor],
    config: GeneratorConfig | None = None,
) -> SpadeGenerator:
    """Load the authors' generator (``G_60.pth`` or its state dict) into a :class:`SpadeGenerator`.

    config defaults to the ``paper`` preset (8×8×2048 → 256×256); the number of blocks and every
    tensor shape must agree with it. Returns the generator in eval mode.
    """
    config = config or GeneratorConfig.from_preset("paper")
    reference = _read_state_dict(path_or_state_dict)
    model = SpadeGenerator(config)
    ours = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in reference.items():
        new_key = reference_to_ours(key)
        if new_key not in ours:
            raise XLXMERTError(
                f"checkpoint key {key!r} has no place in a generator with {config.num_blocks} blocks; "
                "pass the GeneratorConfig it was trained with"
            )
        target = ours[new_key]
        if tensor.numel() != target.numel() or (tensor.dim() > 1 and tensor.shape != target.shape):
            raise XLXMERTError(
                f"{key}: shape {list(tensor.shape)} does not fit {new_key} {list(target.shape)}; "
                "pass the GeneratorConfig it was trained with"
            )
        converted[new_key] = tensor.reshape(target.shape).to(
            target.dtype
        )  # noise scalars: any 1-element shape
    missing = sorted(set(ours) - set(converted))
    if missing:
        raise XLXMERTError(
            f"generator checkpoint lacks {missing[:4]} ({len(missing)} tensors): incomplete file?"
        )
    model.load_state_dict(converted)
    return model.eval()
