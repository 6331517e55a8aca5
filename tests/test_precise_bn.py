"""Precise BN: re-estimated statistics make eval-mode outputs equal train-mode outputs on the same images;
frozen (eval-mode) layers are left alone."""

import torch

from detzoo.common.config import DatasetSpec
from detzoo.data.formats import read_dataset
from detzoo.data.loader import Collate, DetectionDataset
from detzoo.data.transforms import eval_transform, normalize
from detzoo.engine.precise_bn import recompute_bn_statistics
from detzoo.models import create_model


def test_recomputed_statistics_match_the_batch(shapes):
    torch.manual_seed(0)
    data = read_dataset(DatasetSpec(path=str(shapes[0])))
    model = create_model("ssd300_mobilenetv2", num_classes=4, input_size=96)
    model.train()
    model.backbone.features[0].eval()  # a "frozen" layer keeps its statistics
    frozen = model.backbone.features[0][1]
    frozen.running_mean.fill_(3.0)
    for module in model.modules():  # stale statistics, as after a steep schedule
        if isinstance(module, torch.nn.BatchNorm2d) and module is not frozen:
            module.running_mean.fill_(5.0)
    updated = recompute_bn_statistics(model, data, batches=1, batch_size=len(data), device=torch.device("cpu"))
    assert updated > 50
    assert torch.all(frozen.running_mean == 3.0)
    batch = Collate()([DetectionDataset(data, eval_transform(model.preprocess))[i] for i in range(len(data))])
    images = normalize(batch.images, model.preprocess)
    with torch.no_grad():
        model.train()
        model.backbone.features[0].eval()
        train_mode = model(images)
        model.eval()
        eval_mode = model(images)
    for a, b in zip(train_mode, eval_mode):
        torch.testing.assert_close(a, b, rtol=0.05, atol=0.05)


def test_an_ema_copy_gets_the_statistics_of_its_own_weights(shapes):
    import copy

    torch.manual_seed(0)
    data = read_dataset(DatasetSpec(path=str(shapes[0])))
    model = create_model("ssd300_mobilenetv2", num_classes=4, input_size=96).train()
    ema = copy.deepcopy(model).eval()
    with torch.no_grad():
        for p in ema.parameters():
            p.mul_(0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recompute_bn_statistics(model, data, batches=1, batch_size=8, device=torch.device("cpu"), target=ema)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the model is untouched
    assert not ema.training and model.training  # modes restored
    first = ema.backbone.features[0][1]
    assert not torch.equal(first.running_mean, model.backbone.features[0][1].running_mean)
    assert first.num_batches_tracked.item() == 1
