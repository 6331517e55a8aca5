"""Compiled steps (issue 16, item 4): ``train.compile=true`` and ``--compile`` give the eager results, and
checkpoints keep their keys. The wiring is checked with the ``aot_eager`` backend (dynamo and AOTAutograd, no
C++ compile); the numbers of inductor's generated code, on the CPU with the C++ compiler CI has, in the two
``slow`` tests (about a minute each the first time: compiling is the cost, not the model)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from detzoo.cli import main
from detzoo.common.errors import ConfigError
from detzoo.data.targets import Targets
from detzoo.data.transforms import Preprocess, normalize
from detzoo.engine import compiled
from detzoo.engine.trainer import StepModule
from detzoo.models import registry
from detzoo.models.anchors import AnchorSpec
from detzoo.models.heads import PerLevelHead
from detzoo.models.losses import SSDLoss
from detzoo.models.postprocess import Postprocess
from detzoo.models.ssd import SSD
from detzoo.models.weights import load_model, read_state_dict
from detzoo.predict import Predictor
from fast_training import fast_args, load


@pytest.fixture
def aot_eager(monkeypatch):
    torch._dynamo.reset()
    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")
    yield
    torch._dynamo.reset()


@pytest.fixture
def tiny_zoo_entry(monkeypatch):
    """``tiny_ssd`` in the model registry for one test, so that ``detzoo train`` builds it."""
    def tiny(num_classes: int = 3, input_size: int = 64, loss: str = "focal", focal_alpha: float = 0.25,
             focal_gamma: float = 2.0) -> SSD:
        return tiny_ssd(num_classes, input_size, SSDLoss(loss, alpha=focal_alpha, gamma=focal_gamma, neg_pos_ratio=3.0))

    monkeypatch.setitem(registry._MODELS, "tiny", tiny)
    return "model.name=tiny"


def test_compiled_training_keeps_checkpoint_keys_trains_alike_and_resumes(tmp_path, shapes, aot_eager,
                                                                         tiny_zoo_entry):
    """Two steps with ``train.compile=true`` and without: nearly the same weights (aot_eager runs the same
    operators, functionalised: float noise, relative 1e-4 on weights updated by a few float32 steps), the
    same state dict keys (no ``_orig_mod.``), a checkpoint that loads everywhere, and a compiled resume that
    continues it. (A toy network: what is tested is the wiring, and tracing a zoo network costs minutes here.)"""
    for name, flag in (("eager", "false"), ("compiled", "true")):
        assert main(fast_args(shapes, tmp_path, name, tiny_zoo_entry, "model.input_size=64", "train.max_steps=2",
                              f"train.compile={flag}")) == 0
    eager, compiled_run = load(tmp_path / "eager"), load(tmp_path / "compiled")
    assert eager["model"].keys() == compiled_run["model"].keys() and compiled_run["step"] == 2
    assert not any("_orig_mod" in key for key in compiled_run["model"])
    for key, value in eager["model"].items():
        torch.testing.assert_close(compiled_run["model"][key], value, rtol=1e-4, atol=1e-6)
    load_model(tmp_path / "compiled" / "last.pt")
    assert main(["train", "--resume", str(tmp_path / "compiled"), "train.max_steps=3"]) == 0
    assert load(tmp_path / "compiled")["step"] == 3


def test_only_the_tensors_of_a_target_enter_the_graph(aot_eager):
    """Paths and ids differ in every batch, and so does the number of boxes; were they guards, every step
    would compile again. Five batches of new ids, paths and box counts (padded G 8 and 16): one graph."""
    torch._dynamo.utils.counters.clear()

    def loss(images, targets):
        return {"loss": images.sum() + (targets.boxes.sum(-1) * targets.labels * targets.valid).sum()}

    step = compiled.compiled_loss(loss)
    for i in range(5):
        count = 2 + 3 * i
        targets = [{"boxes": torch.rand(count, 4), "labels": torch.ones(count, dtype=torch.long), "image_id": i,
                    "index": 10 + i, "path": f"{i}.jpg", "orig_size": (30 + i, 40), "image_size": (64, 64)}]
        assert step(torch.rand(1, 3, 8, 8), targets)["loss"].isfinite()
    seen = compiled.graph_targets(Targets.from_dicts(targets))
    assert seen.meta == [{"image_size": (64, 64)}]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_a_compiled_state_dict_from_elsewhere_loads(tmp_path, trained_checkpoint):
    """``torch.compile(model).state_dict()`` prefixes every key with ``_orig_mod.``; such a file loads."""
    state = torch.load(trained_checkpoint, weights_only=True)
    state["model"] = {f"_orig_mod.{key}": value for key, value in state["model"].items()}
    torch.save(state, tmp_path / "compiled.pt")
    load_model(tmp_path / "compiled.pt")
    assert not any(key.startswith("_orig_mod") for key in read_state_dict(tmp_path / "compiled.pt"))


def test_compile_is_refused_for_onnx_runtime(tmp_path, trained_checkpoint):
    with pytest.raises(ConfigError, match="--compile applies to PyTorch checkpoints; .*int8"):
        Predictor.from_file(trained_checkpoint, device="cpu", precision="int8", compile=True)
    (tmp_path / "m.onnx").write_bytes(b"")
    with pytest.raises(ConfigError, match="--compile applies to PyTorch checkpoints; .*m.onnx runs in ONNX"):
        Predictor.from_file(tmp_path / "m.onnx", device="cpu", compile=True)


def test_the_cli_takes_compile_for_predict_eval_and_serve():
    from detzoo.cli import build_parser

    parser = build_parser()
    for command in (["predict", "m.pt", "images/"], ["eval", "m.pt", "--data", "d.json"], ["serve", "m.pt"]):
        assert parser.parse_args([*command, "--compile"]).compile is True
        assert parser.parse_args(command).compile is False


def tiny_ssd(num_classes: int = 3, input_size: int = 64, loss: SSDLoss | None = None) -> SSD:
    """An SSD of the zoo's parts on a two-level toy backbone: what compiling costs is the number of generated
    kernels, and a zoo model makes a few hundred."""
    class Backbone(nn.Module):
        out_channels = [16, 32]

        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
            self.down = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU())

        def forward(self, x):
            x = self.stem(x)
            return [x, self.down(x)]

    anchors = AnchorSpec([[(0.2, 0.2), (0.3, 0.15)], [(0.5, 0.5), (0.7, 0.35)]])
    head = PerLevelHead([nn.Conv2d(c, 2 * 4, 3, padding=1) for c in (16, 32)],
                        [nn.Conv2d(c, 2 * num_classes, 3, padding=1) for c in (16, 32)], num_classes)
    return SSD(Backbone(), nn.Identity(), head, anchors, Preprocess((input_size, input_size)), num_classes,
               loss or SSDLoss("focal", alpha=0.25, gamma=2.0, neg_pos_ratio=3.0), Postprocess("focal"))


def tiny_batch(n: int = 4):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, 64, 64, generator=generator)
    targets = []
    for i in range(n):
        corner = torch.rand(2, 2, generator=generator) * 30
        boxes = torch.cat([corner, corner + 12 + torch.rand(2, 2, generator=generator) * 20], dim=1)
        targets.append({"boxes": boxes, "labels": torch.tensor([i % 3, (i + 1) % 3]), "path": f"{i}.jpg",
                        "iscrowd": torch.zeros(2, dtype=torch.bool), "difficult": torch.zeros(2, dtype=torch.bool)})
    return images, targets


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@pytest.mark.slow
def test_inductor_training_step_gives_the_eager_loss_and_gradients():
    """float32 throughout; inductor fuses and reorders sums (of up to a few thousand terms here), each
    reassociation a few ulp: relative errors of 1e-4 leave a wide margin over the ~1e-6 expected. A gradient
    whose true value is 0 (the bias of a convolution that a training-mode BatchNorm follows: the batch mean
    removes it) is rounding noise on both sides, of the order of eps x the sums it comes from: such tensors are
    held to 1e-5 of the whole gradient's norm instead."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = tiny_ssd().train()
    images, targets = tiny_batch()
    results = []
    for compile in (False, True):
        model.zero_grad()
        losses = StepModule(model, compile=compile)(images, targets)
        sum(losses.values()).backward()
        results.append(({k: v.detach() for k, v in losses.items()},
                        {n: p.grad.clone() for n, p in model.named_parameters()}))
    (eager_losses, eager_grads), (compiled_losses, compiled_grads) = results
    for key, value in eager_losses.items():
        assert relative_error(compiled_losses[key], value) < 1e-4, key
    scale = torch.cat([g.flatten() for g in eager_grads.values()]).double().norm()
    for name, grad in eager_grads.items():
        difference = (compiled_grads[name].double() - grad.double()).norm()
        assert difference <= 1e-4 * grad.double().norm() + 1e-5 * scale, name
    torch._dynamo.reset()


@pytest.mark.slow
def test_compiled_predictor_gives_the_eager_detections(trained_ssd):
    """The Predictor's backend (BatchNorm folded, NHWC) with ``compile=True`` against without, on the trained
    checkpoint's images: the network's decoded outputs within float32 reassociation error (relative 1e-4, as
    above) and the same detections (boxes within 1e-3 px; a score tie broken the other way would reorder two
    detections, which real scores do not have)."""
    torch._dynamo.reset()
    path, batch = trained_ssd
    eager = Predictor.from_file(path, device="cpu")
    fast = Predictor.from_file(path, device="cpu", compile=True)
    images = normalize(batch.images, eager.preprocess).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for a, b in zip(fast.backend.model.decoded(images), eager.backend.model.decoded(images)):
            assert relative_error(a, b) < 1e-4
        for got, expected in zip(fast.backend(batch), eager.backend(batch)):
            assert torch.equal(got["labels"], expected["labels"])
            torch.testing.assert_close(got["boxes"], expected["boxes"], rtol=0, atol=1e-3)
            torch.testing.assert_close(got["scores"], expected["scores"], rtol=1e-4, atol=1e-6)
    assert eager.backend.model.state_dict().keys() == fast.backend.model.state_dict().keys()
    torch._dynamo.reset()


@pytest.mark.cuda
def test_cuda_graphs_replay_batch_one_inference():
    """On a GPU, ``compile=True`` records the network as CUDA graphs ("reduce-overhead"): batch-1 calls after
    the first replay them (no graph skipped) and decode to the eager outputs. Both sides run cuDNN's TF32
    convolutions (10-bit mantissa, ~1e-3 relative per layer, possibly by other algorithms): relative error
    within 1e-2. No data needed: random weights, random pixels."""
    import copy

    from detzoo.data.loader import Batch
    from detzoo.engine.inference import inference_backend
    from detzoo.models import create_model

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    torch.manual_seed(0)
    model = create_model("ssd300_mobilenetv2", num_classes=4, input_size=128, score_thresh=0.0)
    eager = inference_backend(copy.deepcopy(model), "cuda")
    fast = inference_backend(model, "cuda", compile=True)
    images = torch.randint(0, 256, (1, 3, 128, 128), dtype=torch.uint8)
    batch = Batch(images, [{"orig_size": (128, 128), "image_id": 0, "path": None}], [(128, 128)])
    for _ in range(3):  # warm-up, record, replay
        got = fast(batch)
    expected = eager(batch)
    assert len(got[0]["scores"]) == len(expected[0]["scores"]) > 0
    normalised = normalize(images.cuda(), model.preprocess).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for a, b in zip(fast.model.decoded(normalised), eager.model.decoded(normalised)):
            assert relative_error(a, b) < 1e-2
    assert torch._dynamo.utils.counters["inductor"]["cudagraph_skips"] == 0
    torch._dynamo.reset()
