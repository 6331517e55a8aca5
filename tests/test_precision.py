"""Inference precision (fp32 / bf16 / int8) as a choice of the Predictor, the CLI and torch.hub: bf16 output close
to fp32's on a trained model, and one-line refusals where a precision cannot run."""

import copy
import json
import math
import shutil
from pathlib import Path

import onnx
import pytest
import torch

from detzoo.cli import main
from detzoo.common import precision as precision_module
from detzoo.common.errors import ConfigError
from detzoo.data.transforms import normalize
from detzoo.engine.inference import TorchBackend
from detzoo.export.onnx_export import export_onnx
from detzoo.models import create_model
from detzoo.models.weights import load_model
from detzoo.predict import Predictor
from detzoo.predict.onnx_backend import read_metadata
from fast_training import TRAIN_IMAGES

ROOT = Path(__file__).resolve().parents[1]
BF16_UNIT_ROUNDOFF = 2.0 ** -8  # 8 significant bits (7 stored + the implicit one): relative rounding <= 2^-8


@pytest.fixture
def native_bf16(monkeypatch):
    """Run the bf16 path on any CPU: autocast's bfloat16 arithmetic is the same whether the CPU has bf16
    instructions or oneDNN emulates them (only the speed differs, which is why detzoo refuses it there)."""
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: True)


@pytest.fixture
def no_bf16(monkeypatch):
    """A CPU without bfloat16 instructions, as ``torch.cpu.get_capabilities()`` would describe it."""
    capabilities = {k: v for k, v in torch.cpu.get_capabilities().items()
                    if k not in precision_module.NATIVE_CPU_BF16}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)


@pytest.fixture(scope="module")
def trained(trained_ssd):
    """conftest's briefly trained ssd300_mobilenetv2 (realistic activations: random weights and stale BN
    statistics make exploding ones): its checkpoint, a fresh copy of the model, the batch it trained on."""
    path, batch = trained_ssd
    return path, load_model(path).model.eval(), batch


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """The trained model as model.onnx, with the checkpoint beside it as model.pt."""
    path, model, _ = trained
    folder = tmp_path_factory.mktemp("exported")
    export_onnx(copy.deepcopy(model), [f"c{i}" for i in range(model.num_classes)], folder / "model.onnx")
    shutil.copy(path, folder / "model.pt")
    return folder / "model.onnx"


@pytest.fixture(scope="module")
def subset(coco128, coco128_json, tmp_path_factory):
    """The first 8 coco128 images as a COCO dataset folder (annotations filtered, images linked)."""
    full = json.loads(coco128_json.read_text())
    keep = {image["id"] for image in full["images"][:TRAIN_IMAGES]}
    root = tmp_path_factory.mktemp("subset")
    (root / "annotations").mkdir()
    (root / "annotations" / coco128_json.name).write_text(json.dumps(
        {**full, "images": [i for i in full["images"] if i["id"] in keep],
         "annotations": [a for a in full["annotations"] if a["image_id"] in keep]}))
    (root / "val2017").symlink_to(coco128 / "val2017")
    return root


def weight_layers(model: torch.nn.Module) -> int:
    return sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in model.modules())


def test_bf16_raw_outputs_stay_within_bf16_rounding_of_fp32(trained, native_bf16):
    """Tolerance from the arithmetic: every conv rounds its inputs and weights to bfloat16 (relative error
    <= u = 2^-8; products accumulate in fp32), and independent rounding errors add in quadrature, so after L
    weight layers the outputs' relative RMS error is about u * sqrt(L) (L counts every conv, an upper bound on
    the depth). Allowed: twice that (3.9 % x 2 for this model's L = 100; measured 2.5 % and 0.8 %)."""
    _, model, batch = trained
    images = normalize(batch.images, model.preprocess)
    with torch.inference_mode():
        reference = model(images)
        bf16_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        with precision_module.autocast(torch.device("cpu"), "bf16"):
            low = bf16_model(images.contiguous(memory_format=torch.channels_last))
    bound = 2 * BF16_UNIT_ROUNDOFF * math.sqrt(weight_layers(model))
    for name, a, b in zip(("box regression", "class logits"), reference, low):
        assert b.dtype == torch.bfloat16  # the network did run in bf16
        relative_rms = ((a - b.float()).pow(2).mean() / a.pow(2).mean()).sqrt().item()
        assert relative_rms <= bound, f"{name}: relative RMS error {relative_rms:.4f} > {bound:.4f}"


def test_bf16_predictor_returns_float32_detections_like_fp32(trained, native_bf16):
    """The whole Predictor path: the same number of images, float32 boxes and scores (decoding and NMS run in
    fp32), and the best detection of each image found by both at nearly the same place: its class logit and
    box deltas move by about u * sqrt(L) relative (see above), far less than what separates two objects."""
    path, _, batch = trained
    fp32 = Predictor.from_file(path, device="cpu").backend(batch)
    bf16 = Predictor.from_file(path, device="cpu", precision="bf16").backend(batch)
    assert len(fp32) == len(bf16) == TRAIN_IMAGES
    from torchvision.ops import box_iou

    for a, b in zip(fp32, bf16):
        assert b["boxes"].dtype == b["scores"].dtype == torch.float32
        same_class = b["labels"] == a["labels"][0]
        assert same_class.any()
        assert box_iou(a["boxes"][:1], b["boxes"][same_class]).max() > 0.5


def test_bf16_is_refused_in_one_line_where_the_cpu_has_none(trained, no_bf16, tmp_path, capsys):
    path, model, _ = trained
    with pytest.raises(ConfigError, match="no native bfloat16"):
        TorchBackend(copy.deepcopy(model), precision="bf16")
    with pytest.raises(ConfigError, match="no native bfloat16"):
        torch.hub.load(str(ROOT), "ssd300_mobilenetv2", source="local", weights=str(path), precision="bf16")
    code = main(["predict", str(path), str(tmp_path / "missing.jpg"), "--precision", "bf16", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "bf16" in err


def test_int8_is_refused_without_an_int8_file(trained, exported):
    path, model, _ = trained
    with pytest.raises(ConfigError, match=r"model\.int8\.onnx not found"):
        Predictor.from_file(path, device="cpu", precision="int8")
    with pytest.raises(ConfigError, match="ONNX Runtime"):
        TorchBackend(copy.deepcopy(model), precision="int8")
    with pytest.raises(ConfigError, match=r"no INT8 model \(.*model\.int8\.onnx not found\)"):
        Predictor.from_file(exported, device="cpu", precision="int8")
    with pytest.raises(ConfigError, match="bf16 is not available on ONNX Runtime"):
        Predictor.from_file(exported, device="cpu", precision="bf16")
    assert Predictor.from_file(exported, device="cpu", precision="fp32").backend.path == exported


def test_int8_picks_the_quantized_file_beside_the_model(exported, tmp_path):
    """``X.int8.onnx`` beside ``X.onnx`` (or ``X.pt``) is what int8 means; an INT8 file asked for fp32 is refused.
    (A copy of the fp32 graph labelled int8 stands in for ``detzoo quantize``'s output: only the choice of the
    file is tested here; tests/test_deploy_cli.py quantizes for real.)"""
    folder = tmp_path / "models"
    shutil.copytree(exported.parent, folder)
    fp32_file = folder / "model.onnx"
    proto = onnx.load(str(fp32_file))
    for prop in proto.metadata_props:
        if prop.key == "detzoo.precision":
            prop.value = "int8"
    int8_file = folder / "model.int8.onnx"
    onnx.save(proto, str(int8_file))
    assert read_metadata(int8_file).precision == "int8"
    assert Predictor.from_file(fp32_file, device="cpu", precision="int8").backend.path == int8_file
    assert Predictor.from_file(folder / "model.pt", device="cpu", precision="int8").backend.path == int8_file
    assert Predictor.from_file(int8_file, device="cpu", precision="int8").backend.path == int8_file
    assert Predictor.from_file(int8_file, device="cpu").backend.path == int8_file  # as it is
    with pytest.raises(ConfigError, match="is an INT8 model"):
        Predictor.from_file(int8_file, device="cpu", precision="fp32")


def test_hub_entry_runs_detect_in_bf16(trained, native_bf16):
    path, model, batch = trained
    hub_model = torch.hub.load(str(ROOT), "ssd300_mobilenetv2", source="local", weights=str(path), precision="bf16")
    images = normalize(batch.images, model.preprocess)
    with torch.inference_mode():
        detections = hub_model.detect(images)
    assert len(detections) == TRAIN_IMAGES and detections[0]["boxes"].dtype == torch.float32
    assert hub_model.backbone.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)


def test_cli_eval_takes_the_precision(trained, subset, tmp_path, capsys, native_bf16):
    path, _, _ = trained
    for precision in ("fp32", "bf16"):
        code = main(["eval", str(path), "--data", str(subset), "--precision", precision, "--device", "cpu",
                     "--workers", "0", "--out", str(tmp_path / precision)])
        assert code == 0
        assert "mAP" in capsys.readouterr().out


def test_faster_rcnn_heads_decode_boxes_in_float32_under_autocast():
    """torchvision decodes proposals and final boxes in the dtype of the head's deltas (casting the anchors to
    it); in bfloat16 a coordinate near 1000 px is only known to 4 px. Our heads hand float32 deltas on."""
    model = create_model("faster_rcnn_r50_fpn", num_classes=3, input_size=64).eval()
    features = [torch.randn(1, 256, 8, 8)]
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        objectness, deltas = model.rpn.head(features)
        scores, boxes = model.roi_heads.box_predictor(torch.randn(2, 1024))
    assert {objectness[0].dtype, deltas[0].dtype, scores.dtype, boxes.dtype} == {torch.float32}
