"""The inference loop shared by evaluation during training, ``detzoo eval`` and the Predictor: a backend turns
a uint8 ``Batch`` into per-image outputs in input pixels; ``run_inference`` rescales them to the original
image as ``Detections``. ``TorchBackend`` runs a detzoo model; the ONNX Runtime backend (``predict``) has the
same call."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from ..common.memory import retain_freed_memory
from ..common.precision import autocast, check_torch_precision
from ..common.structures import Detections
from ..data.loader import Batch, dataset_order
from ..data.transforms import Preprocess, normalize
from ..models.selection import SelectOptions, evaluation_options, select_with
from .compiled import compile_for_inference


class TorchBackend:
    """Runs a detzoo model on a uint8 batch; returns outputs in input-image pixels.

    ``precision`` ``bf16`` runs the network under bfloat16 autocast in NHWC layout (oneDNN's fast path;
    box decoding and NMS stay float32) and is refused in one line where the device has no bfloat16;
    ``channels_last`` moves the model and every batch to NHWC in fp32 too. Building a backend keeps freed
    memory in the process (``common.memory``), so that batches do not page-fault on every call."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str = "cpu", precision: str = "fp32",
                 channels_last: bool = False):
        self.device = torch.device(device)
        self.precision = check_torch_precision(precision, self.device)
        self.channels_last = channels_last or precision == "bf16"
        retain_freed_memory()
        self.model = model.to(self.device).eval()
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.preprocess: Preprocess = model.preprocess

    @property
    def score_threshold(self) -> float:
        """The model's own score threshold (what it selects with when a call sets none)."""
        return self.model.selection.score_thresh

    def evaluation_options(self, score_threshold: float | None = None) -> tuple[SelectOptions, str]:
        """The selection mAP is computed with (``models.selection.evaluation_options``), and a note ("")."""
        return evaluation_options(self.model.selection, score_threshold), ""

    @torch.inference_mode()
    def __call__(self, batch: Batch, options: SelectOptions | None = None) -> list[dict]:
        images = normalize(batch.images.to(self.device, non_blocking=True), self.preprocess, batch.image_sizes)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision):
            return select_with(self.model.selection, options, lambda: self.model.detect(images, batch.image_sizes))


def fold_batch_norms(model: torch.nn.Module) -> int:
    """Fold every eval-mode BatchNorm that directly follows a convolution into that convolution's weights and
    bias (torch's ``fuse_conv_bn_eval``; the BatchNorm becomes an Identity): the same function, one pass over
    the activations fewer (MobileNetV2-SSD: 18 % of the eager fp32 time, 26 % in bf16). Only pairs whose data
    flow is certain are folded: consecutive (Conv2d, BatchNorm) children of containers that run their children
    in order (``nn.Sequential``, torchvision's ``IntermediateLayerGetter``) and the convN/bnN pairs of the
    ResNet blocks and stems that compute ``bnN(convN(x))``. (Weight-shared heads keep their per-level
    BatchNorms.) For models used only for inference (the Predictor's); returns how many were folded."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.resnet import BasicBlock, Bottleneck
    from torchvision.ops import FrozenBatchNorm2d

    from ..models.backbones.resnet import ResNet50Features

    norms = (torch.nn.BatchNorm2d, FrozenBatchNorm2d)
    pairs = []
    for module in model.modules():
        if isinstance(module, (torch.nn.Sequential, IntermediateLayerGetter)):
            names = list(module._modules)
            pairs += [(module, a, b) for a, b in zip(names, names[1:])]
        elif isinstance(module, (BasicBlock, Bottleneck, ResNet50Features)):
            pairs += [(module, f"conv{k}", f"bn{k}") for k in (1, 2, 3) if hasattr(module, f"conv{k}")]
    folded = 0
    for parent, conv_name, norm_name in pairs:
        conv, norm = getattr(parent, conv_name), getattr(parent, norm_name)
        if type(conv) is torch.nn.Conv2d and isinstance(norm, norms) and not norm.training:
            if isinstance(norm, FrozenBatchNorm2d):  # the same buffers, no momentum: fuse it as a BatchNorm
                norm = _as_batch_norm(norm)
            setattr(parent, conv_name, fuse_conv_bn_eval(conv, norm))
            setattr(parent, norm_name, torch.nn.Identity())
            folded += 1
    return folded


def _as_batch_norm(frozen) -> torch.nn.BatchNorm2d:
    norm = torch.nn.BatchNorm2d(frozen.weight.numel(), eps=frozen.eps).eval()
    norm.load_state_dict({"weight": frozen.weight, "bias": frozen.bias, "running_mean": frozen.running_mean,
                          "running_var": frozen.running_var}, strict=False)
    return norm


def inference_backend(model: torch.nn.Module, device: torch.device | str = "cpu",
                      precision: str = "fp32", compile: bool = False) -> TorchBackend:
    """How a model that is only used for inference runs fastest (the Predictor's backend): BatchNorm folded
    into the convolutions, NHWC layout, ``precision``; ``compile``: the network through ``torch.compile``, as
    CUDA graphs on a GPU (``engine/compiled.py``; each new batch size compiles once). Changes the model."""
    check_torch_precision(precision, torch.device(device))
    fold_batch_norms(model.eval())
    backend = TorchBackend(model, device, precision, channels_last=True)
    if compile:
        compile_for_inference(backend.model, backend.device)
    return backend


def set_detect_precision(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """A model whose ``detect`` runs in ``precision`` from now on, as ``TorchBackend`` runs it (for torch.hub
    models, which are used without a backend): bf16 moves the weights and each call's images to NHWC and runs
    under bfloat16 autocast on the images' device. Refused in one line where the device has no bfloat16. Like
    ``TorchBackend``, it keeps freed memory in the process (no batch cliff, ``common.memory``)."""
    device = next(model.parameters()).device
    check_torch_precision(precision, device)
    retain_freed_memory()
    if precision == "fp32":
        return model
    model.to(memory_format=torch.channels_last)
    detect = model.detect

    def detect_in_precision(images: torch.Tensor, image_sizes: list[tuple[int, int]] | None = None) -> list[dict]:
        with autocast(images.device, precision):
            return detect(images.contiguous(memory_format=torch.channels_last), image_sizes)

    model.detect = detect_in_precision
    return model


def run_inference(backend, loader: Iterable[Batch], class_names: list[str],
                  options: SelectOptions | None = None) -> Iterator[Detections]:
    """Detections in original-image pixels for every image the loader yields, in dataset order (``options``: the
    selection settings for this run, the model's own where None). An inference loader batches images by padded
    size (``data.loader.InferenceBatchSampler``), so each result is held back until those of every earlier image
    are out. Other batch sources are passed through."""
    order = dataset_order(loader)
    pending: dict[int, Detections] = {}
    position = 0
    for batch in loader:
        if len(batch) == 0:
            continue
        outputs = backend(batch, options)
        for target, (height, width), output in zip(batch.targets, batch.image_sizes, outputs):
            orig_h, orig_w = target["orig_size"]
            detections = Detections.from_output(output, (orig_w / width, orig_h / height), class_names,
                                                image_id=target["image_id"], path=target["path"])
            if order is None:
                yield detections
                continue
            pending[target["index"]] = detections
        while order is not None and position < len(order) and order[position] in pending:
            yield pending.pop(order[position])
            position += 1
    yield from (pending[index] for index in sorted(pending))  # only images a loader skipped leave gaps
