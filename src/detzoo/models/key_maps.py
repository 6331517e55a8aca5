"""Key maps from other codebases' state-dict layouts to detzoo's, so their weight files load as they are.

One mechanism: a backbone's (or a model's) ``convert_pretrained(state)`` renames the keys of a foreign file
into its own layout; keys it does not recognise pass through unchanged, so the loader's report of missing
and unexpected keys names them. Written by hand because the layouts are those of pytorch-ssd
(qfgaohao/pytorch-ssd), which has no package to import them from:

- MobileNetV2 base net (``mb2-imagenet-71_8.pth``): keys relative to ``features`` (``0.0.weight``,
  ``k.conv.N.*``, ``18.0.*``); its inverted residual blocks keep convolutions and batch norms in one flat
  ``conv`` Sequential (conv, BN, ReLU6, conv, BN, ReLU6, conv, BN), where torchvision nests the first two
  pairs (``conv.0.0``, ``conv.0.1``, ``conv.1.0``, ``conv.1.1``, ``conv.2``, ``conv.3``).
- MobileNetV1 base net (``mobilenet_v1_with_relu_69_5.pth``): ``[model.]k.{0,1,3,4}.*`` (dw conv, BN,
  pw conv, BN) with ``k.0``/``k.1`` for the stem.
- the whole ``mb2-ssd-lite`` model: ``base_net.*``, ``extras.E.conv.*``, ``classification_headers.L.*`` and
  ``regression_headers.L.*``.
"""

from __future__ import annotations

import re

import torch

StateDict = dict[str, torch.Tensor]

# flat index in pytorch-ssd's InvertedResidual.conv -> torchvision's nested index
_EXPANDED_BLOCK = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "6": "2", "7": "3"}  # 1x1, dw, 1x1
_PLAIN_BLOCK = {"0": "0.0", "1": "0.1", "3": "1", "4": "2"}  # expand ratio 1: dw, 1x1


def _inverted_residual_key(state: StateDict, key: str, source: str, target: str) -> str | None:
    """``{source}{b}.conv.{i}.{tail}`` (pytorch-ssd) -> ``{target}{b}.conv.{j}.{tail}`` (torchvision)."""
    match = re.fullmatch(rf"{re.escape(source)}(\d+)\.conv\.(\d+)\.(.+)", key)
    if match is None:
        return None
    block, index, tail = match.groups()
    expanded = f"{source}{block}.conv.6.weight" in state
    new_index = (_EXPANDED_BLOCK if expanded else _PLAIN_BLOCK).get(index)
    return None if new_index is None else f"{target}{block}.conv.{new_index}.{tail}"


def pytorch_ssd_mobilenet_v2(state: StateDict, source: str = "", target: str = "features.") -> StateDict:
    """pytorch-ssd's MobileNetV2 base-net keys (under ``source``) -> torchvision ``mobilenet_v2`` keys (under
    ``target``). The first and last layers (conv + BN) already have torchvision's ``k.0``/``k.1`` layout."""
    out = {}
    for key, value in state.items():
        new = _inverted_residual_key(state, key, source, target)
        if new is None and key.startswith(source) and re.fullmatch(r"\d+\.[01]\..+", key[len(source):]):
            new = target + key[len(source):]
        out[new or key] = value
    return out


def pytorch_ssd_mobilenet_v1(state: StateDict, target: str = "features.") -> StateDict:
    """pytorch-ssd's MobileNetV1 (``model.k.i.*`` or, as a base-net file, ``k.i.*``) -> detzoo's
    ``MobileNetV1Features`` (``features.0.{0,1}`` stem, ``features.k.{0,1}.{0,1}`` dw / pw conv + BN)."""
    out = {}
    for key, value in state.items():
        match = re.fullmatch(r"(?:model\.)?(\d+)\.(\d)\.(.+)", key)
        if match is None:
            if not key.startswith("fc."):  # the ImageNet classifier has no place in a backbone
                out[key] = value
            continue
        layer, index, tail = match.groups()
        if layer == "0":
            out[f"{target}0.{index}.{tail}"] = value
        else:
            nested = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1"}.get(index, index)
            out[f"{target}{layer}.{nested}.{tail}"] = value
    return out


def pytorch_ssd_lite_model(state: StateDict) -> StateDict:
    """A whole pytorch-ssd ``mb2-ssd-lite`` state dict -> detzoo's ``ssdlite_mobilenetv2`` keys. Files already
    in detzoo's layout come back unchanged."""
    if not any(k.startswith("base_net.") for k in state):
        return state
    out = {}
    for key, value in pytorch_ssd_mobilenet_v2(state, "base_net.", "backbone.features.").items():
        new = _inverted_residual_key(state, key, "extras.", "neck.blocks.")
        if new is None:
            new = re.sub(r"^classification_headers\.", "head.class_layers.", key)
            new = re.sub(r"^regression_headers\.", "head.box_layers.", new)
        out[new] = value
    return out
