"""What a batch looks like to a model: the padding is exactly 0 after normalising (as torchvision, detectron2
and MMDetection pad) in training, evaluation and the Predictor alike; keep-aspect images are batched only with
images of the same padded size; results still come out in dataset order, sharded over processes too."""

from __future__ import annotations

import torch
from torch import nn

from detzoo.common.config import DatasetSpec, load_config
from detzoo.common.distributed import DistInfo
from detzoo.data.formats import read_dataset
from detzoo.data.loader import Collate, DetectionDataset, inference_loader, padded_side
from detzoo.data.transforms import Preprocess, eval_transform, normalize
from detzoo.engine.evaluate import collect_detections, local_detections
from detzoo.engine.inference import TorchBackend
from detzoo.engine.trainer import Trainer
from detzoo.predict import Predictor

KEEP_ASPECT = Preprocess((96, 160), resize="keep_aspect", size_divisible=32)


class Recorder(nn.Module):
    """A detector that records the images it is given and finds nothing."""

    def __init__(self, preprocess: Preprocess):
        super().__init__()
        self.preprocess = preprocess
        self.weight = nn.Parameter(torch.zeros(()))
        self.seen: list[tuple[torch.Tensor, list]] = []
        self.selection = None  # the Detector contract's settings holder; only read when a call overrides them

    def detect(self, images: torch.Tensor, image_sizes: list) -> list[dict]:
        self.seen.append((images.clone(), list(image_sizes)))
        return [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
                for _ in image_sizes]

    def forward(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        """The training step's module: losses of the recorded images."""
        self.seen.append((images.detach().clone(), [t["image_size"] for t in targets]))
        return {"loss": self.weight * images.mean()}


def _assert_zero_padded(images: torch.Tensor, sizes: list) -> None:
    for image, (height, width) in zip(images, sizes):
        assert image.shape[-2:] != (height, width) or len(sizes) == 1
        assert torch.count_nonzero(image[:, height:]) == 0 and torch.count_nonzero(image[:, :, width:]) == 0
        assert image[:, :height, :width].abs().amax() > 0


def _mixed_batch(coco128) -> tuple:
    """A portrait and a landscape coco128 image in one collated batch (what training makes)."""
    data = read_dataset(DatasetSpec(path=str(coco128)))
    portrait = next(i for i, r in enumerate(data.records) if r.height > r.width)
    landscape = next(i for i, r in enumerate(data.records) if r.width > r.height)
    dataset = DetectionDataset(data, eval_transform(KEEP_ASPECT))
    return data, Collate(KEEP_ASPECT.size_divisible)([dataset[portrait], dataset[landscape]])


def test_normalised_padding_is_exactly_zero(coco128):
    """Normalised uint8 zeros would be -mean/std (about -2.1); the image itself is normalised as before."""
    _, batch = _mixed_batch(coco128)
    images = normalize(batch.images, KEEP_ASPECT, batch.image_sizes)
    _assert_zero_padded(images, batch.image_sizes)
    plain = normalize(batch.images, KEEP_ASPECT)
    assert plain[0, 0, -1, -1] < -2.0  # what the padding was
    for image, reference, (height, width) in zip(images, plain, batch.image_sizes):
        assert torch.equal(image[:, :height, :width], reference[:, :height, :width])


def test_training_evaluation_and_prediction_feed_zero_padding(coco128, tmp_path):
    data, batch = _mixed_batch(coco128)
    evaluated = Recorder(KEEP_ASPECT)
    TorchBackend(evaluated)(batch)  # evaluation and the Predictor run through this backend
    predictor = Recorder(KEEP_ASPECT)
    Predictor(TorchBackend(predictor), data.class_names).predict_images([batch.images[0]])
    trained = Recorder(KEEP_ASPECT)
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    trainer = Trainer(load_config(None), trained, trained, None, None, optimizer, scheduler, torch.device("cpu"),
                      tmp_path, data.class_names)
    trainer.train_step(batch)
    for recorder in (evaluated, predictor, trained):
        (images, sizes), = recorder.seen
        _assert_zero_padded(images, sizes)


def test_keep_aspect_batches_hold_one_padded_size_and_results_come_in_dataset_order(coco128):
    """coco128 mixes portrait and landscape images of many sizes: every batch holds one padded size (so no
    image is padded beyond what it gets alone), each process's results come in dataset order, and the
    gathered ones are every image once, in order."""
    data = read_dataset(DatasetSpec(path=str(coco128)))
    data.records = data.records[:40]
    loader = inference_loader(data, KEEP_ASPECT, batch_size=4)
    sizes_seen = set()
    for batch in loader:
        padded = {(padded_side(h, 32), padded_side(w, 32)) for h, w in batch.image_sizes}
        assert len(padded) == 1 and tuple(batch.images.shape[-2:]) in padded
        sizes_seen |= padded
    assert len(sizes_seen) > 2 and len(loader) > len(data) // 4  # mixed sizes, grouped
    backend = TorchBackend(Recorder(KEEP_ASPECT))
    whole = collect_detections(backend, data, batch_size=4, workers=0)
    assert [d.image_id for d in whole] == [r.image_id for r in data.records]
    for rank in range(3):
        part = local_detections(backend, data, batch_size=4, workers=0, dist=DistInfo(rank, 3))
        assert [d.image_id for d in part] == [r.image_id for r in data.records[rank::3]]
    stretched = inference_loader(data, Preprocess((64, 64)), batch_size=4)
    assert [len(b) for b in stretched] == [4] * 10  # one size: consecutive batches as before
