"""Precise BN: re-estimated statistics make eval-mode outputs equal train-mode outputs on the same images;
frozen (eval-mode) layers are left alone."""

import torch

from detzoo.config import DatasetSpec
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
