"""Training the SSD family: the zoo recipes load, gradient clipping holds the global norm, and the
transfer-learning flow (train on COCO, fine-tune on the 4-class microcontroller set with a frozen backbone,
evaluate with VOC07 mAP) runs end to end through the CLI."""

import json

import pytest
import torch

from detzoo.cli import main
from detzoo.common.config import load_config
from detzoo.data.loader import Batch
from detzoo.data.transforms import normalize
from detzoo.engine.trainer import StepModule, Trainer
from detzoo.models import create_model
from detzoo.models.registry import model_options

ZOO = {"ssd_vgg16": ("coco", None), "ssd_mobilenetv1_fpn": ("coco", 1.0), "ssd_resnet50_fpn": ("coco", 1.0),
       "ssdlite_mobilenetv2": ("voc07", None)}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_recipes_load_and_fit_their_model(name):
    config = load_config(name)
    assert config.model.name == name
    assert set(config.model.model_kwargs()) <= set(model_options(name))
    assert (config.eval.metric, config.train.grad_clip) == ZOO[name]


def test_gradient_clipping_bounds_the_global_norm(tmp_path):
    config = load_config("ssd_mobilenetv1_fpn", ["model.input_size=128", "train.grad_clip=0.001"])
    torch.manual_seed(0)
    model = create_model("ssd_mobilenetv1_fpn", num_classes=3, input_size=128)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)  # plain SGD: the step is exactly the gradient
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    trainer = Trainer(config, model, StepModule(model), None, None, optimizer, scheduler, torch.device("cpu"),
                      tmp_path, ["a", "b", "c"])
    images = torch.randint(0, 255, (2, 3, 128, 128), dtype=torch.uint8)
    targets = [{"boxes": torch.tensor([[10.0, 20, 70, 90]]), "labels": torch.tensor([1]),
                "iscrowd": torch.zeros(1, dtype=torch.bool)}] * 2
    batch = Batch(images, targets, [(128, 128)] * 2)
    sum(model.compute_loss(normalize(images, model.preprocess), targets).values()).backward()
    unclipped = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).norm().item()
    model.zero_grad(set_to_none=True)
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train_step(batch)
    losses = trainer.collect()
    assert losses is not None and losses["loss"] > 0 and not trainer.stop_voted
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert unclipped > 0.1 and step.norm().item() == pytest.approx(0.001, rel=0.01)  # float32 differences


FAST = ["model.input_size=128", "train.batch_size=8", "data.workers=0", "train.epochs=1", "train.max_steps=2",
        "train.eval_every=0", "train.warmup_epochs=0", "data.val=[]"]


def test_transfer_learning_from_coco_to_microcontroller(tmp_path, coco128, micro, capsys):
    """The reference delivery's flow: COCO weights -> drop only the class predictor -> fine-tune on 4 classes
    with the backbone frozen -> VOC07 mAP on the test split."""
    assert main(["train", "ssd_mobilenetv1_fpn", *FAST, f"data.train={coco128}", f"train.output={tmp_path}",
                 "train.name=coco"]) == 0
    coco = torch.load(tmp_path / "coco" / "last.pt", weights_only=True)
    assert len(coco["class_names"]) == 80
    capsys.readouterr()
    assert main(["train", "ssd_mobilenetv1_fpn", *FAST, f"data.train={micro / 'train'}", f"train.output={tmp_path}",
                 "train.name=micro", f"model.weights={tmp_path / 'coco' / 'last.pt'}", "train.freeze=backbone",
                 "model.score_thresh=0.001", "eval.metric=voc07"]) == 0
    log = capsys.readouterr().out
    assert "re-initialised, class count differs: head.class_predictor.bias, head.class_predictor.weight)" in log
    assert "backbone frozen" in log
    tuned = torch.load(tmp_path / "micro" / "last.pt", weights_only=True)
    assert tuned["class_names"] == ["Arduino_Nano", "ESP8266", "Heltec_ESP32_Lora", "Raspberry_Pi_3"]
    assert tuned["model"]["head.class_predictor.weight"].shape[0] == 6 * 4
    for key, value in tuned["model"].items():
        if key.startswith("backbone."):  # frozen, batch-norm statistics included
            assert torch.equal(value, coco["model"][key]), key
    moved = [k for k in tuned["model"] if not k.startswith("backbone.") and "class_predictor" not in k
             and not torch.equal(tuned["model"][k], coco["model"][k])]
    assert any(k.startswith("neck.") for k in moved) and any(k.startswith("head.") for k in moved)

    out = tmp_path / "eval"
    assert main(["eval", str(tmp_path / "micro" / "last.pt"), "--data", str(micro / "test"), "--metric", "voc07",
                 "--out", str(out), "--workers", "0"]) == 0
    report = capsys.readouterr().out
    assert "AP@0.5 (11-point)" in report and "VOC mAP@0.5 " in report and "7 images" in report
    assert all(name in report for name in tuned["class_names"])
    assert json.loads((out / "detections.json").read_text()), "score 0.001 keeps detections"
