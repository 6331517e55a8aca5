"""Shared fixtures. Real data is found as ``detzoo data get`` finds it (``detzoo.data.catalog.find_dataset``:
$DETZOO_DATA, ../shared/data, the download cache); a missing dataset fails the tests that need it - it never
skips them (``make test`` fetches what is missing first: ``make data``)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from fast_training import TRAIN_IMAGES

ROOT = Path(__file__).resolve().parents[1]

# The image checks' cache (data.preflight) in a folder of this test session, never the user's ~/.cache; set before
# any test runs, so subprocesses inherit it.
os.environ["DETZOO_CACHE"] = tempfile.mkdtemp(prefix="detzoo-test-cache-")
atexit.register(shutil.rmtree, os.environ["DETZOO_CACHE"], True)

# Two threads on the 2-core CI machine; OMP_NUM_THREADS (e.g. 1 when several test runs share the cores) wins.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", max(1, min(2, os.cpu_count() or 1)))))


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are skipped, with the reason shown (``-ra``), on a machine without a CUDA GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run benchmarks/gpu_check.py on a machine with one)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test data not found: {path}")
    return path


def _dataset(name: str) -> Path:
    from detzoo.data.catalog import find_dataset, search_roots

    found = find_dataset(name)
    if found is None:
        pytest.fail(f"test data '{name}' not found in {', '.join(map(str, search_roots()))}: run `make data` "
                    f"(detzoo data get {name}) or set DETZOO_DATA")
    return found


@pytest.fixture(scope="session")
def coco128() -> Path:
    """The COCO folder (annotations/instances_val2017.json + val2017/)."""
    return _dataset("coco128")


@pytest.fixture(scope="session")
def coco128_json(coco128) -> Path:
    return _require(coco128 / "annotations" / "instances_val2017.json")


@pytest.fixture(scope="session")
def micro() -> Path:
    """The microcontroller folder (train/ and test/ of image + VOC XML pairs)."""
    return _dataset("microcontroller")


@pytest.fixture(scope="session")
def shapes(tmp_path_factory) -> tuple[Path, Path]:
    """A small generated shapes dataset (COCO JSON): (train json, val json)."""
    from detzoo.data.synthetic import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), train=24, val=8, size=128)


@pytest.fixture(scope="session")
def trained_ssd(tmp_path_factory, coco128):
    """ssd300_mobilenetv2 at 128 px after 25 steps on the first 8 coco128 images (no augmentation), with its
    BatchNorm statistics re-estimated on them: after so short a run the running averages lag the weights and
    the eval-mode mAP is noise (0.007 instead of ~0.8); realistic activations, unlike random weights. Returns
    (checkpoint path, the uint8 batch of those 8 images). Used by the deployment, precision and service tests."""
    from detzoo.common.checkpoints import model_payload
    from detzoo.common.config import DatasetSpec, load_config
    from detzoo.data.formats import read_dataset
    from detzoo.data.loader import Collate, DetectionDataset
    from detzoo.data.transforms import eval_transform, normalize
    from detzoo.engine.precise_bn import recompute_bn_statistics
    from detzoo.models.weights import build_model

    torch.manual_seed(0)
    config = load_config("ssd300_mobilenetv2", ["model.input_size=128", "model.score_thresh=0.01",
                                                f"data.train={coco128}", f"data.val={coco128}"])
    data = read_dataset(DatasetSpec(str(coco128)))
    model = build_model(config, len(data.class_names))
    dataset = DetectionDataset(data, eval_transform(model.preprocess))
    batch = Collate()([dataset[i] for i in range(TRAIN_IMAGES)])
    images = normalize(batch.images, model.preprocess)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(25):
        loss = sum(model.compute_loss(images, batch.targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    data.records = data.records[:TRAIN_IMAGES]
    recompute_bn_statistics(model, data, batches=1, batch_size=TRAIN_IMAGES, device=torch.device("cpu"))
    path = tmp_path_factory.mktemp("trained") / "model.pt"
    torch.save(model_payload(model.eval(), config.to_dict(), data.class_names), path)
    return path, batch


@pytest.fixture(scope="session")
def trained_checkpoint(trained_ssd) -> Path:
    return trained_ssd[0]


@pytest.fixture(scope="session")
def trained_subset(coco128_json, coco128, tmp_path_factory) -> tuple[Path, list[int]]:
    """The 8 coco128 images ``trained_ssd`` trains on as their own COCO dataset folder (annotations filtered,
    images linked, not copied): (folder, their image ids)."""
    import json

    from detzoo.common.config import DatasetSpec
    from detzoo.data.formats import read_dataset

    ids = [r.image_id for r in read_dataset(DatasetSpec(str(coco128))).records[:TRAIN_IMAGES]]
    full = json.loads(coco128_json.read_text())
    root = tmp_path_factory.mktemp("subset")
    (root / "annotations").mkdir()
    subset = {**full, "images": [i for i in full["images"] if i["id"] in ids],
              "annotations": [a for a in full["annotations"] if a["image_id"] in ids]}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(subset))
    (root / "val2017").symlink_to(coco128 / "val2017")
    return root, ids
