"""ONNX export of every registered model, checked with ONNX Runtime and OpenCV on real images; the ONNX Runtime
backend gives the same detections as the PyTorch one."""

import copy
import functools

import cv2
import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from torchvision.ops import DeformConv2d

from detzoo.common.errors import ExportError
from detzoo.data.loader import Collate, DetectionDataset, inference_loader
from detzoo.data.transforms import eval_transform, normalize
from detzoo.engine.inference import TorchBackend
from detzoo.export.check import (
    MAX_UNMATCHED,
    CheckResult,
    Tolerance,
    check_export,
    match_detections,
    relative_error_budget,
)
from detzoo.export.onnx_export import export_onnx, trace_to_onnx
from detzoo.export.quantize import float_nodes, name_nodes, quantize_model
from detzoo.models import Detector, create_model, list_models
from detzoo.models.detector import CANDIDATES, DETECTIONS
from detzoo.models.registry import model_options
from detzoo.predict import Predictor, list_images, unlabelled_data
from detzoo.predict.onnx_backend import OnnxBackend, read_metadata

CLASSES = ["a", "b", "c"]
CALIBRATION_IMAGES = 16  # every batch-norm channel's statistics from >= 16 values, even on a 1 x 1 map
# OpenCV's CPU kernels accumulate in another order than ONNX Runtime's; on a random network the difference grows
# along the deepest path (ssdlite's last level: 1.3e-3 in a score)
OPENCV_TOLERANCE = 5e-3
# small inputs keep the heavy models fast here: the 640-px FPN SSDs at 128 px, Faster R-CNN with a 128-px short side
FAST_INPUT = 128


def _realistic(model: Detector, paths) -> Detector:
    """Batch-norm statistics from real images, so that a freshly initialised model's outputs depend on its
    input; with the initial statistics every anchor of a level scores the same and two NMS runs may keep
    different boxes of such a tie. Enough images that the statistics of the smallest maps (1 x 1 in
    ssdlite's last level: one value per image) are not near-zero variances measured on a handful of values:
    dividing by those cancels digits, and such a network is off by 1e-3 in a score in float32 already
    (``test_test_networks_compute_like_trained_ones``)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a plain average over the batches seen
    model.train()
    with torch.no_grad():
        for batch in inference_loader(unlabelled_data(list(paths), CLASSES), model.preprocess, batch_size=4):
            empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
                      "iscrowd": torch.zeros(0, dtype=torch.bool)} for _ in range(len(batch))]
            model.compute_loss(normalize(batch.images, model.preprocess, batch.image_sizes), empty)
    return model.eval()


@functools.cache
def _create(name: str) -> Detector:
    torch.manual_seed(0)
    model = create_model(name, num_classes=len(CLASSES))
    if "input_size" in model_options(name) and max(model.preprocess.size) > 300:
        torch.manual_seed(0)
        model = create_model(name, num_classes=len(CLASSES), input_size=FAST_INPUT)
    return model.eval()


@functools.cache
def _build(name: str, paths: tuple) -> Detector:
    return _realistic(_create(name), paths)


ALL = list_models()
SSD_MODELS = [name for name in list_models() if _create(name).export_graph().outputs == CANDIDATES]


@pytest.fixture(scope="module")
def images(coco128):
    """Four real images: a batch of 1 and a batch of 3."""
    return tuple(list_images(coco128 / "val2017")[:4])


@pytest.fixture(scope="module")
def calibration(coco128):
    """The real images the batch-norm statistics come from."""
    return tuple(list_images(coco128 / "val2017")[:CALIBRATION_IMAGES])


def _tolerance(model: Detector, reference: dict) -> tuple[float, float]:
    """(pixels, score) that float32 arithmetic explains for these reference detections (export/check.py)."""
    return Tolerance(relative_error_budget(model)).for_outputs(reference["boxes"], reference["scores"])


@pytest.fixture(scope="module", params=ALL)
def exported(request, tmp_path_factory, calibration):
    model = _build(request.param, calibration)
    path = tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx"
    graph, _ = export_onnx(model, CLASSES, path)
    return model, graph, path


def _batches(paths, preprocess):
    """A batch of one image and a batch of three, collated as the data pipeline collates (for keep-aspect
    models the three have two padded sizes, which the inference loader would not batch together: the ONNX
    backend must run any batch)."""
    dataset = DetectionDataset(unlabelled_data(list(paths[:4]), CLASSES), eval_transform(preprocess))
    collate = Collate(preprocess.size_divisible)
    return [collate([dataset[0]]), collate([dataset[i] for i in (1, 2, 3)])]


def test_export_matches_pytorch_on_real_images(exported, images):
    """Batch 1 and batch 3 (dynamic batch), or one image of each size (two-stage graphs)."""
    model, graph, path = exported
    backend = OnnxBackend(path, device="cpu")
    batches = _batches(images, model.preprocess)
    assert [len(b) for b in batches] == [1, 3]
    result = check_export(graph, backend, batches)
    assert result.images == 4
    assert result.passed(), result.summary()
    if graph.outputs == DETECTIONS:  # NMS inside: near-ties at a threshold may keep a box on one side only
        assert result.detections > 0 and result.unmatched <= MAX_UNMATCHED * result.detections, result.summary()
    # the ORT backend (the shared selection, or per-image runs given their size) gives PyTorch's detections
    ours = CheckResult()
    torch_backend = TorchBackend(model)
    for batch in batches:
        for a, b in zip(torch_backend(batch) if graph.dynamic_batch else _one_by_one(torch_backend, batch),
                        backend(batch)):
            match_detections(a, b, *_tolerance(model, a), ours)
    assert ours.detections > 0 and ours.unmatched <= MAX_UNMATCHED * ours.detections, ours.summary()


def test_graph_inputs_are_zero_padded(exported, images):
    """The ONNX backend feeds what the PyTorch backend feeds: normalised images, padding exactly 0 (a batch
    padded to its largest image, or each image padded to a multiple of ``size_divisible``)."""
    model, graph, path = exported
    backend = OnnxBackend(path, device="cpu")
    batch = _batches(images, model.preprocess)[1]
    inputs = backend.graph_inputs(batch)
    assert len(inputs) == (1 if graph.dynamic_batch else len(batch))
    pictures = [image for run in inputs for image in run["images"]]
    for picture, (height, width) in zip(pictures, batch.image_sizes):
        assert not np.any(picture[:, height:]) and not np.any(picture[:, :, width:])
        assert np.abs(picture[:, :height, :width]).max() > 0


def _one_by_one(torch_backend, batch):
    """The PyTorch backend on each image alone (padded like a batch of one), as the per-image graph runs."""
    out = []
    for i, (h, w) in enumerate(batch.image_sizes):
        single = Collate(torch_backend.preprocess.size_divisible)([(batch.images[i, :, :h, :w], batch.targets[i])])
        out.extend(torch_backend(single))
    return out


@pytest.mark.parametrize("name", ALL)
def test_test_networks_compute_like_trained_ones(name, images, calibration):
    """The networks the export is checked on are well conditioned, as the tolerance of export/check.py assumes
    and trained networks are: their float32 raw outputs (SSD: box regressions and class logits; two-stage:
    the feature maps every later stage reads) are within one implementation's share of the relative error
    budget (rho / 2) of the same network in float64. Statistics from 4 images left ssdlite's 1 x 1 level
    dividing by near-zero variances: 7.8e-4 relative in its logits against 2.8e-4."""
    model = _build(name, calibration)
    batch = _batches(images, model.preprocess)[1]
    images32 = normalize(batch.images, model.preprocess, batch.image_sizes)
    exact = copy.deepcopy(model).double()
    raw = (lambda m, x: m(x)) if name in SSD_MODELS else (lambda m, x: list(m.backbone(x).values()))
    with torch.no_grad():
        float32, float64 = raw(model, images32), raw(exact, images32.double())
    budget = relative_error_budget(model) / 2
    for single, double in zip(float32, float64):
        assert (single.double() - double).abs().max() <= budget * double.abs().max()


def test_metadata_makes_the_file_self_describing(exported):
    model, graph, path = exported
    meta = read_metadata(path)
    assert meta.class_names == CLASSES and meta.preprocess == model.preprocess
    assert meta.model == model.zoo_name and meta.outputs == graph.outputs
    assert meta.dynamic_batch == graph.dynamic_batch
    if graph.outputs == CANDIDATES:
        assert meta.extra["postprocess"] == model.postprocess.settings()
    props = {p.key for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert {"detzoo.class_names", "detzoo.preprocess", "detzoo.model"} <= props
    predictor = Predictor.from_file(path, device="cpu")
    assert predictor.class_names == CLASSES and predictor.preprocess == model.preprocess


@pytest.mark.parametrize("name", SSD_MODELS)
def test_in_graph_nms_gives_the_pytorch_detections(name, images, calibration, tmp_path):
    model = _build(name, calibration)
    graph, meta = export_onnx(model, CLASSES, tmp_path / "nms.onnx", in_graph_nms=True)
    assert graph.outputs == meta.outputs == DETECTIONS
    ops = {node.op_type for node in onnx.load(str(tmp_path / "nms.onnx")).graph.node}
    assert "NonMaxSuppression" in ops
    backend = OnnxBackend(tmp_path / "nms.onnx", device="cpu")
    result = CheckResult()
    for batch in _batches(images, model.preprocess):
        for a, b in zip(TorchBackend(model)(batch), backend(batch)):
            match_detections(a, b, *_tolerance(model, a), result)
    assert result.detections > 0 and result.unmatched == 0, result.summary()


@pytest.mark.parametrize("name", SSD_MODELS)
def test_raw_export_runs_in_opencv_dnn(name, tmp_path, images, calibration):
    """A second client: OpenCV's DNN module loads the raw SSD graph and agrees with ONNX Runtime."""
    model = _build(name, calibration)
    export_onnx(model, CLASSES, tmp_path / "raw.onnx")
    backend = OnnxBackend(tmp_path / "raw.onnx", device="cpu")
    (inputs,) = backend.graph_inputs(_batches(images, model.preprocess)[1])
    net = cv2.dnn.readNetFromONNX(str(tmp_path / "raw.onnx"))
    net.setInput(inputs["images"])
    opencv = net.forward(net.getUnconnectedOutLayersNames())
    runtime = backend.run(inputs)
    assert [o.shape for o in opencv] == [r.shape for r in runtime] == [(3, model.anchors.shape[0], 4),
                                                                      (3, model.anchors.shape[0], len(CLASSES))]
    side = max(model.preprocess.size)
    assert np.abs(opencv[0] - runtime[0]).max() <= OPENCV_TOLERANCE * side
    assert np.abs(opencv[1] - runtime[1]).max() <= OPENCV_TOLERANCE


def test_files_that_are_not_detzoo_exports_get_a_clear_error(tmp_path):
    plain = tmp_path / "plain.onnx"
    value = onnx.helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1, 3, 8, 8])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["images"], ["out"])], "plain", [value],
                                   [onnx.helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [1, 3, 8, 8])])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8), str(plain))
    with pytest.raises(ExportError, match=r"plain\.onnx: not a detzoo ONNX model"):
        Predictor.from_file(plain, device="cpu")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf")
    with pytest.raises(ExportError, match="garbage.onnx"):
        Predictor.from_file(garbage, device="cpu")
    with pytest.raises(ExportError, match="2 class names for a model with 3 classes"):
        export_onnx(_create(list_models()[0]), CLASSES[:2], tmp_path / "x.onnx")


def test_box_arithmetic_stays_float_when_quantized(exported):
    """Decoding (Exp), top-k and NMS - and what computes the boxes RoIAlign takes - are excluded from INT8;
    every convolution is quantized."""
    _, graph, path = exported
    model = onnx.load(str(path))
    name_nodes(model)
    keep_float = set(float_nodes(model.graph))
    producer = {out: node for node in model.graph.node for out in node.output}
    special = [n for n in model.graph.node if n.op_type in ("Exp", "NonMaxSuppression", "TopK")]
    special += [producer[n.input[1]] for n in model.graph.node if n.op_type == "RoiAlign"]
    assert special and all(n.name in keep_float for n in special)
    assert all(n.name not in keep_float for n in model.graph.node if n.op_type == "Conv")


def test_two_stage_export_quantizes(images, calibration, tmp_path):
    """The whole-model graph (data-dependent shapes: ORT's symbolic shape inference gives up on it) goes
    through quantization and runs. Accuracy is not judged here: the model has random weights, its
    detections are near-ties; tests/test_deploy_cli.py measures the INT8 mAP cost on a trained model."""
    model = _build("faster_rcnn_r50_fpn", calibration)
    fp32 = tmp_path / "two_stage.onnx"
    export_onnx(model, CLASSES, fp32)
    int8 = quantize_model(fp32, tmp_path / "two_stage.int8.onnx", unlabelled_data(list(images), CLASSES), 2)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in onnx.load(str(int8)).graph.node}
    fp32_backend, int8_backend = OnnxBackend(fp32, device="cpu"), OnnxBackend(int8, device="cpu")
    batch = _batches(images, model.preprocess)[1]
    for (height, width), a, b in zip(batch.image_sizes, fp32_backend(batch), int8_backend(batch)):
        assert len(b["scores"]) == len(a["scores"]) > 10 and b["labels"].max() < len(CLASSES)
        assert (b["boxes"] >= 0).all() and (b["boxes"][:, 2] <= width).all() and (b["boxes"][:, 3] <= height).all()
        assert abs(b["scores"][:10].mean() - a["scores"][:10].mean()) < 0.05


def test_deformable_convolution_exports_as_onnx_deformconv(tmp_path):
    """DCNv2 (torchvision's deform_conv2d with a modulation mask) -> ONNX DeformConv, equal in ONNX Runtime."""
    class ModulatedDeformConv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.offsets = torch.nn.Conv2d(4, 27, 3, stride=2, padding=1)
            self.conv = DeformConv2d(4, 6, 3, stride=2, padding=1)

        def forward(self, x):
            offset_x, offset_y, mask = self.offsets(x).chunk(3, dim=1)
            return self.conv(x, torch.cat([offset_x, offset_y], dim=1), mask.sigmoid())

    torch.manual_seed(0)
    module = ModulatedDeformConv().eval()
    trace_to_onnx(module, (torch.randn(1, 4, 16, 16),), tmp_path / "dcn.onnx", ["x"], ["y"],
                  {"x": {0: "n", 2: "h", 3: "w"}})
    assert "DeformConv" in {n.op_type for n in onnx.load(str(tmp_path / "dcn.onnx")).graph.node}
    session = onnxruntime.InferenceSession(str(tmp_path / "dcn.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 4, 20, 12)
    with torch.no_grad():
        expected = module(x).numpy()
    np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], expected, atol=1e-4)
