"""Faster R-CNN: the backbone (frozen parts, 13 DCNv2 convs, ImageNet weights), targets (labels shifted, crowd
boxes dropped, empty images), the two-stage data pipeline on real files, and parity with torchvision's
``fasterrcnn_resnet50_fpn`` on real coco128 images."""

from dataclasses import replace

import pytest
import torch
import torchvision
from torchvision.models.detection import fasterrcnn_resnet50_fpn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.misc import FrozenBatchNorm2d

from detzoo.common.config import DatasetSpec, load_config
from detzoo.data.formats import read_dataset
from detzoo.data.loader import Collate, DetectionDataset, TrainBatchSampler, read_image, train_loader
from detzoo.data.transforms import eval_transform, normalize, train_transform
from detzoo.engine.evaluate import local_detections
from detzoo.engine.inference import TorchBackend
from detzoo.models import create_model
from detzoo.models.dcn import ModulatedDeformConv2d
from detzoo.models.faster_rcnn import FasterRCNN
from detzoo.models.weights import WeightsError, load_backbone_weights, load_transfer_weights

SMALL = {"num_classes": 3, "input_size": 128, "roi_batch_size": 64}


@pytest.fixture(scope="module")
def dcn_model():
    torch.manual_seed(0)
    return create_model("faster_rcnn_r50_fpn_dcn", **SMALL)


def test_backbone_is_frozen_where_the_recipe_says(dcn_model):
    body = dcn_model.backbone.body
    deformable = [name for name, m in body.named_modules() if isinstance(m, ModulatedDeformConv2d)]
    assert len(deformable) == 13 and all(name.endswith(".conv2") for name in deformable)
    assert {name.split(".")[0] for name in deformable} == {"layer2", "layer3", "layer4"}
    assert all(m.padding == (1, 1) for m in dcn_model.backbone.deformable_convs().values())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in dcn_model.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in body.modules()) == 53
    for name, parameter in body.named_parameters():
        assert parameter.requires_grad == name.startswith(("layer2", "layer3", "layer4")), name
    plain = create_model("faster_rcnn_r50_fpn", **SMALL)
    assert not plain.backbone.deformable_convs()
    assert dcn_model.preprocess.size == (128, 213) and plain.preprocess.resize == "keep_aspect"
    assert create_model("faster_rcnn_r50_fpn", num_classes=3).preprocess.size == (768, 1280)
    assert dcn_model.preprocess.size_divisible == 32


def test_imagenet_weights_load_into_the_deformable_convs(tmp_path):
    torch.manual_seed(1)
    imagenet = torchvision.models.resnet50().state_dict()
    path = tmp_path / "resnet50.pth"
    torch.save(imagenet, path)
    model = create_model("faster_rcnn_r50_fpn_dcn", **SMALL)
    fpn_before = {k: v.clone() for k, v in model.backbone.fpn.state_dict().items()}
    load_backbone_weights(model, str(path))
    body = model.backbone.body
    for name, dcn in model.backbone.deformable_convs().items():
        torch.testing.assert_close(dcn.weight, imagenet[f"{name.removeprefix('body.')}.weight"], rtol=0, atol=0)
        assert torch.count_nonzero(dcn.offset_mask.weight) == 0  # still the zero-initialised predictor
    torch.testing.assert_close(body.conv1.weight, imagenet["conv1.weight"], rtol=0, atol=0)
    torch.testing.assert_close(body.layer3[2].bn2.running_var, imagenet["layer3.2.bn2.running_var"], rtol=0, atol=0)
    for key, value in model.backbone.fpn.state_dict().items():
        torch.testing.assert_close(value, fpn_before[key], rtol=0, atol=0)
    wrong = tmp_path / "partial.pth"
    torch.save({"conv1.weight": imagenet["conv1.weight"]}, wrong)
    with pytest.raises(WeightsError, match="missing keys: .*body"):
        load_backbone_weights(model, str(wrong))


def test_torchvision_detector_weights_start_a_model_with_other_classes(tmp_path):
    """A torchvision FasterRCNN state dict laid out like its COCO-trained ``fasterrcnn_resnet50_fpn`` file (91
    classes, frozen BN) as ``model.weights``: everything loads except the class-dependent predictor layers,
    which are re-made for 3 classes."""
    torch.manual_seed(2)
    backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d)
    reference = torchvision.models.detection.FasterRCNN(backbone, num_classes=91).state_dict()
    path = tmp_path / "torchvision_frcnn.pth"
    torch.save(reference, path)
    model = create_model("faster_rcnn_r50_fpn", **SMALL)
    dropped = load_transfer_weights(model, str(path))
    assert dropped == [f"roi_heads.box_predictor.{layer}.{kind}" for layer in ("bbox_pred", "cls_score")
                       for kind in ("bias", "weight")]
    state = model.state_dict()
    for key in ("backbone.body.layer4.2.conv3.weight", "backbone.fpn.layer_blocks.3.0.weight",
                "rpn.head.cls_logits.weight", "roi_heads.box_head.fc7.weight"):
        torch.testing.assert_close(state[key], reference[key], rtol=0, atol=0)


def test_labels_shift_and_crowd_boxes_are_dropped():
    target = {"boxes": torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20]]), "labels": torch.tensor([0, 2]),
              "iscrowd": torch.tensor([False, True])}
    converted = FasterRCNN._torchvision_target(target)
    assert converted["labels"].tolist() == [1] and converted["boxes"].tolist() == [[0, 0, 10, 10]]


def test_difficult_boxes_are_dropped_like_crowd_boxes():
    """VOC difficult objects are not trained on as positives (torchvision's samplers cannot ignore a box)."""
    target = {"boxes": torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20], [30, 30, 40, 40]]),
              "labels": torch.tensor([0, 2, 1]), "iscrowd": torch.tensor([False, True, False]),
              "difficult": torch.tensor([False, False, True])}
    converted = FasterRCNN._torchvision_target(target)
    assert converted["labels"].tolist() == [1] and converted["boxes"].tolist() == [[0, 0, 10, 10]]


def test_crowd_only_and_empty_images_train_as_background(dcn_model):
    """With its only box a crowd region (dropped) or no box at all, nothing is positive: no box losses."""
    torch.manual_seed(0)
    dcn_model.train()
    images = torch.randn(2, 3, 96, 128)
    targets = [{"boxes": torch.tensor([[10.0, 10, 60, 50]]), "labels": torch.tensor([1]),
                "iscrowd": torch.tensor([True]), "image_size": (96, 120)},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                "iscrowd": torch.zeros(0, dtype=torch.bool), "image_size": (80, 128)}]
    losses = dcn_model.compute_loss(images, targets)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    assert losses["loss_rpn_box_reg"].item() == 0 and losses["loss_box_reg"].item() == 0
    assert losses["loss_objectness"].item() > 0 and losses["loss_classifier"].item() > 0
    targets[0]["iscrowd"] = torch.tensor([False])
    assert dcn_model.compute_loss(images, targets)["loss_rpn_box_reg"].item() > 0
    with pytest.raises(RuntimeError, match="eval mode"):
        dcn_model.detect(images)
    dcn_model.eval()
    with pytest.raises(RuntimeError, match="train mode"):
        dcn_model.compute_loss(images, targets)


def test_trains_and_detects_under_bfloat16_autocast(dcn_model):
    torch.manual_seed(0)
    images = torch.randn(1, 3, 96, 128)
    targets = [{"boxes": torch.tensor([[10.0, 10, 60, 50]]), "labels": torch.tensor([1])}]
    dcn_model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = dcn_model.compute_loss(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert dcn_model.backbone.body.layer2[0].conv2.offset_mask.weight.grad.abs().sum() > 0
    dcn_model.zero_grad(set_to_none=True)
    dcn_model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert len(dcn_model.detect(images)[0]["boxes"]) > 0


def test_two_stage_batches_from_a_6_field_txt_file(tmp_path, micro, dcn_model):
    """Keep-aspect resize inside the limits, per-batch padding to 32, crowd flags carried to the loss, an image
    without objects in the batch - through the training data path the engine uses."""
    names = ["Arduino_Nano", "ESP8266", "Heltec_ESP32_Lora", "Raspberry_Pi_3"]
    images = sorted((micro / "test").glob("*.jpg"))
    listing = tmp_path / "train.txt"
    listing.write_text(f"{images[0].name} 100,120,400,380,2,0 30,40,250,300,4,1\n{images[1].name}\n"
                       f"{images[2].name} 50,60,300,200,1,1\n")
    data = read_dataset(DatasetSpec(path=str(listing), images=str(micro / "test")), names)
    pre = dcn_model.preprocess
    augment = load_config("faster_rcnn_r50_fpn_dcn").data.augment
    dataset = DetectionDataset(data, train_transform(pre, augment))
    sampler = TrainBatchSampler(data, 3, group_aspect=pre.resize == "keep_aspect")
    batch = next(iter(train_loader(dataset, sampler, pre.size_divisible, workers=0)))
    assert batch.images.shape[-2] % 32 == 0 and batch.images.shape[-1] % 32 == 0
    for target, size in zip(batch.targets, batch.image_sizes):
        assert target["image_size"] == size and min(size) <= pre.size[0] and max(size) <= pre.size[1]
        assert min(size) == pre.size[0] or max(size) == pre.size[1]
    by_path = {t["path"]: t for t in batch.targets}
    assert by_path[str(images[0])]["iscrowd"].tolist() == [False, True]
    assert len(by_path[str(images[1])]["boxes"]) == 0
    dcn_model.train()
    losses = dcn_model.compute_loss(normalize(batch.images, pre, batch.image_sizes), batch.targets)
    assert all(torch.isfinite(v) for v in losses.values())


def test_aspect_ratio_grouping_on_coco128(coco128):
    data = read_dataset(DatasetSpec(path=str(coco128)))
    sampler = TrainBatchSampler(data, 4, group_aspect=True)
    batches = [[i for i, _ in batch] for batch in sampler]
    wide = {i for i, r in enumerate(data.records) if r.width >= r.height}
    assert 0 < len(wide) < len(data) and len(batches) >= len(data) // 4 - 1
    assert all({i in wide for i in batch} in ({True}, {False}) for batch in batches)


# --------------------------------------------------------------------------- parity with torchvision

PARITY_SHORT_SIDE = 320


def _calibrated_torchvision_model(images: list[torch.Tensor], preprocess) -> torch.nn.Module:
    """torchvision's fasterrcnn_resnet50_fpn with random weights made usable: BN statistics measured on the
    test images (else the unnormalised features explode), score logits scaled so scores are well separated
    (else near-ties reorder the top 100). Its transform keeps the already resized images as they are."""
    torch.manual_seed(0)
    model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=81, box_score_thresh=0.0)
    for module in model.backbone.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for image in images:
            model.backbone(normalize(image[None], preprocess))
        model.roi_heads.box_predictor.cls_score.weight.mul_(4.0)
        model.rpn.head.cls_logits.weight.mul_(10.0)
    model.transform = GeneralizedRCNNTransform(min_size=PARITY_SHORT_SIDE, max_size=100_000,
                                               image_mean=list(preprocess.mean), image_std=list(preprocess.std))
    return model.eval()


def _assert_same_detections(ours: dict, theirs: dict, box_tol: float = 0.05, score_tol: float = 1e-3,
                            their_label_offset: int = 1) -> None:
    """Every detection of one is in the other (same label, box within box_tol px, score within score_tol),
    except near the top-100 cut-off, where a score difference below score_tol may swap the last ones.
    torchvision's labels are ours + 1 (``their_label_offset``)."""
    assert len(ours["scores"]) == len(theirs["scores"]) == 100
    cutoff = min(ours["scores"].min(), theirs["scores"].min()) + score_tol
    same = ((ours["labels"][:, None] == theirs["labels"][None] - their_label_offset)
            & ((ours["boxes"][:, None] - theirs["boxes"][None]).abs().amax(-1) <= box_tol)
            & ((ours["scores"][:, None] - theirs["scores"][None]).abs() <= score_tol))
    compared = 0
    for side, found in ((ours, same.any(1)), (theirs, same.any(0))):
        above = side["scores"] > cutoff
        assert found[above].all(), f"{int((~found[above]).sum())} detections without a counterpart"
        compared += int(above.sum())
    assert compared >= 160  # most of the 2 x 100 detections are compared


@pytest.fixture(scope="module")
def parity(coco128):
    """(coco128 data, our model, torchvision's with the same weights) for the first two coco128 images."""
    data = read_dataset(DatasetSpec(path=str(coco128)))
    ours = create_model("faster_rcnn_r50_fpn", num_classes=80, input_size=PARITY_SHORT_SIDE, score_thresh=0.0)
    images = [eval_transform(ours.preprocess)(read_image(record)) for record in data.records[:2]]
    reference = _calibrated_torchvision_model(images, ours.preprocess)
    ours.load_state_dict(reference.state_dict())  # same module names: no key map
    return data, ours.eval(), reference


def test_same_detections_as_torchvision_with_the_same_weights(parity):
    """Random weights made usable (``_calibrated_torchvision_model``), loaded into both; two coco128 images of
    different sizes. Ours runs the real evaluation path - the dataset, ``Collate`` (one batch, padded to the
    larger image and to 32) and the backend that normalises and pads with 0; torchvision runs its own
    ``GeneralizedRCNNTransform``. The tolerances compare the same torch kernels on the same machine: 0.05 px
    is 1e-4 of the image side, far above float32 rounding and far below what a padding or resizing
    difference moves."""
    data, ours, reference = parity
    dataset = DetectionDataset(data, eval_transform(ours.preprocess))
    batch = Collate(ours.preprocess.size_divisible)([dataset[0], dataset[1]])
    assert batch.image_sizes[0] != batch.image_sizes[1]  # a padded batch of two sizes
    with torch.no_grad():
        expected = reference([batch.images[i, :, :h, :w].float() / 255 for i, (h, w) in enumerate(batch.image_sizes)])
    got = TorchBackend(ours)(batch)
    for mine, theirs, (h, w) in zip(got, expected, batch.image_sizes):
        _assert_same_detections(mine, theirs)
        assert (mine["boxes"][:, 2] <= w).all() and (mine["boxes"][:, 3] <= h).all()


def test_an_images_detections_do_not_depend_on_the_batch(parity):
    """The same image alone and among a portrait image and landscape images of other sizes (what evaluating a
    dataset gives): the same detections, to the tolerances above (the same kernels; only the batch dimension
    differs). Evaluation batches it only with images of its padded size and pads with 0, so it sees what it
    sees alone; padded to the batch's largest image (1.3x to 1.7x its side here) it would not."""
    data, ours, _ = parity
    image = data.records[0]
    size = ours.preprocess.output_size(image.height, image.width)
    same = next(r for r in data.records[1:] if ours.preprocess.output_size(r.height, r.width) == size)
    portrait = next(r for r in data.records if r.height > r.width)
    other = next(r for r in data.records if r.width > r.height and ours.preprocess.output_size(r.height, r.width)[1]
                 > size[1] + 32)
    backend = TorchBackend(ours)
    alone = local_detections(backend, replace(data, records=[image]), batch_size=4, workers=0)
    mixed = local_detections(backend, replace(data, records=[portrait, image, other, same]), batch_size=4,
                             workers=0)
    assert [d.image_id for d in mixed] == [portrait.image_id, image.image_id, other.image_id, same.image_id]
    as_dict = [{"boxes": d.boxes, "scores": d.scores, "labels": d.labels} for d in (mixed[1], alone[0])]
    _assert_same_detections(*as_dict, their_label_offset=0)
