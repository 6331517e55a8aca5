"""Loading weights: detzoo checkpoints (a whole trained model), ImageNet backbone weights from a local
file or a torchvision weight enum name, and transfer learning (class-dependent layers re-made).

Everything goes through ``torch.load(weights_only=True)``; a file that does not fit gets an error listing
the missing and unexpected keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..common.checkpoints import load_checkpoint
from ..common.config import Config, config_from_dict
from ..common.errors import WeightsError
from .registry import create_model


@dataclass
class LoadedModel:
    model: nn.Module
    config: Config
    class_names: list[str]


def build_model(config: Config, num_classes: int) -> nn.Module:
    return create_model(config.model.name, num_classes=num_classes, **config.model.model_kwargs())


def load_model(path: str | Path) -> LoadedModel:
    """A detzoo checkpoint -> the model (eval mode, CPU), its resolved config and class names."""
    state = load_checkpoint(path)
    config = config_from_dict(state["config"])
    class_names = list(state["class_names"])
    model = build_model(config, len(class_names))
    weights = without_compile_prefix(state.get("ema") or state["model"])
    model.load_state_dict(weights)
    return LoadedModel(model.eval(), config, class_names)


COMPILED_PREFIX = "_orig_mod."  # what torch.compile's OptimizedModule adds to the keys of the module it wraps


def without_compile_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict saved from a ``torch.compile``-wrapped module (``torch.compile(model).state_dict()``) with
    the module's own keys. detzoo's compiled training and inference keep the keys as they are; this reads files
    made elsewhere."""
    return {key.replace(COMPILED_PREFIX, ""): value for key, value in state.items()}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a file: a bare state dict, or one nested under model/state_dict/ema."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: cannot load weights ({type(exc).__name__}: {exc})") from None
    for key in ("ema", "model", "state_dict", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: does not hold a state dict of tensors")
    state = without_compile_prefix(state)
    return {k.removeprefix("module."): v for k, v in state.items()}


def _torchvision_weights(name: str) -> dict[str, torch.Tensor]:
    """``"MobileNet_V2_Weights.IMAGENET1K_V1"`` -> its state dict (downloads once; needs the network)."""
    import torchvision.models as tvm

    enum_name, _, member = name.partition(".")
    enum = getattr(tvm, enum_name, None)
    if enum is None or not member or not hasattr(enum, member):
        raise WeightsError(f"'{name}' is neither a file nor a torchvision weights name like "
                           "'MobileNet_V2_Weights.IMAGENET1K_V1'")
    try:
        return getattr(enum, member).get_state_dict(progress=True)
    except OSError as exc:
        raise WeightsError(f"cannot download torchvision weights '{name}' ({exc}); download the file "
                           "elsewhere and give its path") from None


def load_backbone_weights(model: nn.Module, source: str) -> None:
    """ImageNet weights into ``model.backbone``: a local file (torchvision layout, or any layout the
    backbone's ``convert_pretrained`` knows) or a torchvision weights enum name."""
    state = read_state_dict(source) if Path(source).expanduser().exists() else _torchvision_weights(source)
    backbone = model.backbone
    converted = backbone.convert_pretrained(state) if hasattr(backbone, "convert_pretrained") else state
    own = backbone.state_dict()
    missing = sorted(k for k in own if k not in converted and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in converted if k not in own)
    wrong_shape = sorted(k for k in converted if k in own and converted[k].shape != own[k].shape)
    if missing or unexpected or wrong_shape:
        raise WeightsError(_key_report(source, missing, unexpected, wrong_shape))
    backbone.load_state_dict(converted, strict=False)


def _key_report(source: str, missing: list[str], unexpected: list[str], wrong_shape: list[str]) -> str:
    def show(keys: list[str]) -> str:
        return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

    parts = [f"{source}: weights do not fit the model"]
    if missing:
        parts.append(f"missing keys: {show(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {show(unexpected)}")
    if wrong_shape:
        parts.append(f"keys with a different shape: {show(wrong_shape)}")
    return "\n  ".join(parts)


def load_transfer_weights(model: nn.Module, source: str) -> list[str]:
    """Start from another model's weights (a detzoo checkpoint, a state dict, or a layout the model's
    ``convert_pretrained`` knows). Parameters whose shape depends on the class count are dropped when it
    differs; returns their names. Any other mismatch is an error."""
    state = read_state_dict(source)
    if hasattr(model, "convert_pretrained"):
        state = model.convert_pretrained(state)
    own = model.state_dict()
    dropped = sorted(k for k in state if k in own and state[k].shape != own[k].shape)
    foreign = [k for k in dropped if state[k].shape[1:] != own[k].shape[1:]]
    if foreign:  # only the output dimension may depend on the class count
        raise WeightsError(_key_report(source, [], [], foreign))
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in own)
    if unexpected or [k for k in missing if k not in dropped]:
        raise WeightsError(_key_report(source, missing, unexpected, []))
    model.load_state_dict({k: v for k, v in state.items() if k not in dropped}, strict=False)
    return dropped
