"""Shared fixtures. Real data comes from ../shared/data (or $DETZOO_DATA); a missing folder fails the
tests that need it - it never skips them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DETZOO_DATA", ROOT.parent / "shared" / "data"))

# Two threads on the 2-core CI machine; OMP_NUM_THREADS (e.g. 1 when several test runs share the cores) wins.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", max(1, min(2, os.cpu_count() or 1)))))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test data not found: {path} (set DETZOO_DATA or provide ../shared/data)")
    return path


@pytest.fixture(scope="session")
def coco128() -> Path:
    """The COCO folder (annotations/instances_val2017.json + val2017/)."""
    return _require(DATA / "coco128")


@pytest.fixture(scope="session")
def coco128_json(coco128) -> Path:
    return _require(coco128 / "annotations" / "instances_val2017.json")


@pytest.fixture(scope="session")
def micro() -> Path:
    """The microcontroller folder (train/ and test/ of image + VOC XML pairs)."""
    return _require(DATA / "microcontroller")


@pytest.fixture(scope="session")
def shapes(tmp_path_factory) -> tuple[Path, Path]:
    """A small generated shapes dataset (COCO JSON): (train json, val json)."""
    from detzoo.data.synthetic import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), train=24, val=8, size=128)
