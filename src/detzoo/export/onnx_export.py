"""ONNX export of any zoo model into one self-describing file.

The model says what to trace (``Detector.export_graph``): SSD models give their raw network plus box
decoding with a dynamic batch (optionally ending in ONNX ``NonMaxSuppression``); two-stage models give their
whole ``detect`` on one image of any size. Tracing uses torch.onnx's TorchScript exporter (``dynamo=False``):
it is the path torchvision's detection models support (the dynamo exporter of torch 2.14 stops at the
data-dependent shapes of torchvision's ``batched_nms`` in Faster R-CNN), it gives SSD graphs a dynamic batch,
is ten times faster to export, and writes a single file that ONNX Runtime and OpenCV both load.

The class names, the pre-processing (input size, resize mode, mean, std) and what the outputs are travel as
``detzoo.*`` entries of the ONNX ``metadata_props``.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch

from ..common.errors import ExportError
from ..common.files import atomic_write
from ..data.loader import padded_side
from ..data.transforms import Preprocess
from ..models.detector import CANDIDATES, IMAGES, Detector, ExportGraph
from ..predict.onnx_backend import PREFIX, OnnxMetadata

OPSET = 19  # the first with DeformConv (DCNv2 models); ONNX Runtime and OpenCV 5 load it


def set_metadata(proto, metadata: OnnxMetadata) -> None:
    """Replace the detzoo.* entries of an ONNX ModelProto."""
    kept = [(p.key, p.value) for p in proto.metadata_props if not p.key.startswith(PREFIX)]
    del proto.metadata_props[:]
    for key, value in [*kept, *metadata.to_props().items()]:
        proto.metadata_props.add(key=key, value=value)


def save_atomically(proto, path: Path) -> None:
    """Write then rename: an interrupted write never leaves a half-written model at ``path``."""
    import onnx

    with atomic_write(path, "wb") as handle:
        onnx.save(proto, handle)


def write_metadata(path: str | Path, metadata: OnnxMetadata) -> None:
    """Replace the detzoo.* entries of an ONNX file (atomically)."""
    import onnx

    path = Path(path)
    proto = onnx.load(str(path))
    set_metadata(proto, metadata)
    save_atomically(proto, path)


def deform_conv2d_symbolic(g, input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dilation_h,
                           dilation_w, groups, offset_groups, use_mask):
    """torchvision's ``deform_conv2d`` as ONNX ``DeformConv`` (opset 19): same offset layout, same modulation
    mask. Hand-written because torchvision registers ONNX symbolics for nms and roi_align only."""
    from torch.onnx import symbolic_helper

    ints = [symbolic_helper._get_const(v, "i", name) for v, name in (
        (stride_h, "stride_h"), (stride_w, "stride_w"), (pad_h, "pad_h"), (pad_w, "pad_w"),
        (dilation_h, "dilation_h"), (dilation_w, "dilation_w"), (groups, "groups"), (offset_groups, "offset_groups"))]
    stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups, offset_groups = ints
    inputs = [input, weight, offset, bias] + ([mask] if symbolic_helper._get_const(use_mask, "b", "use_mask") else [])
    return g.op("DeformConv", *inputs, strides_i=[stride_h, stride_w], pads_i=[pad_h, pad_w, pad_h, pad_w],
                dilations_i=[dilation_h, dilation_w], group_i=groups, offset_group_i=offset_groups)


def register_symbolics() -> None:
    torch.onnx.register_custom_op_symbolic("torchvision::deform_conv2d", deform_conv2d_symbolic, 19)


def example_input(preprocess: Preprocess, batch: int) -> torch.Tensor:
    """A normalised-looking input of the model's size (random, fixed seed: tracing follows real branches)."""
    if preprocess.resize == "stretch":
        height, width = preprocess.size
    else:  # a 3:4 image fitted into (short, long), padded like Collate pads
        height, width = preprocess.output_size(480, 640)
        height, width = (padded_side(side, preprocess.size_divisible) for side in (height, width))
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(0))


def dynamic_axes(graph: ExportGraph) -> dict[str, dict[int, str]]:
    axes = {IMAGES: {0: "batch"} if graph.dynamic_batch else {2: "height", 3: "width"}}
    first = "batch" if graph.outputs == CANDIDATES else "detections"
    axes.update({name: {0: first} for name in graph.output_names})
    return axes


def trace_to_onnx(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], path: str | Path | io.BytesIO,
                  input_names: list[str], output_names: list[str], dynamic_axes: dict, opset: int = OPSET) -> None:
    """torch.onnx's TorchScript exporter with detzoo's symbolics, without the warnings it always gives."""
    register_symbolics()
    with warnings.catch_warnings(), torch.no_grad():
        # expected while tracing detection code (torchvision's included): shape values turned into constants
        # only where they are fixed, sizes copied into tensors, indices that are never negative
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        for message in ("You are using the legacy TorchScript-based ONNX export", "To copy construct from a tensor",
                        "`torch.jit.script` is deprecated", "Exporting aten::index operator"):
            warnings.filterwarnings("ignore", message=f".*{message}")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        torch.onnx.export(module, inputs, path if isinstance(path, io.BytesIO) else str(path), dynamo=False, opset_version=opset, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes)


def export_onnx(model: Detector, class_names: list[str], path: str | Path, in_graph_nms: bool = False,
                opset: int = OPSET) -> tuple[ExportGraph, OnnxMetadata]:
    """Trace ``model.export_graph(in_graph_nms)`` to ``path`` with the detzoo metadata; returns the traced
    graph (the PyTorch reference for checks) and the metadata written."""
    path = Path(path)
    model = model.eval().cpu()
    if len(class_names) != model.num_classes:
        raise ExportError(f"{len(class_names)} class names for a model with {model.num_classes} classes")
    graph = model.export_graph(in_graph_nms)
    graph.module.eval()
    sample = example_input(model.preprocess, 2 if graph.dynamic_batch else 1)
    inputs = (sample,) if graph.dynamic_batch else (sample, torch.tensor(sample.shape[-2:]))
    import onnx

    traced = io.BytesIO()  # traced in memory, written once with its metadata
    trace_to_onnx(graph.module, inputs, traced, graph.input_names, graph.output_names, dynamic_axes(graph), opset)
    proto = onnx.load_model_from_string(traced.getvalue())
    metadata = OnnxMetadata(getattr(model, "zoo_name", type(model).__name__), list(class_names),
                            model.preprocess, graph.outputs, graph.dynamic_batch, dict(graph.metadata))
    set_metadata(proto, metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomically(proto, path)
    return graph, metadata
