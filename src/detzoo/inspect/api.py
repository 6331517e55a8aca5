"""Inspect a dataset: read it as training would (every bad sample kept as a message instead of stopping at the
first), read and decode every image once, count, optionally measure a model's anchor coverage, and write
``inspect.json`` and ``inspect.png``.

The annotation checks are the readers' own (``read_dataset(..., skip_bad=True)`` collects each message) and
the image checks the loader's own (``read_image``), so the inspector names exactly what training would stop
on. The counts are over the samples the readers accept.
"""

from __future__ import annotations

from pathlib import Path

from ..common.config import DatasetSpec
from ..common.files import write_json
from ..data.formats import read_dataset
from ..engine.pictures import spread_indices
from ..models import create_model
from .anchors import anchor_coverage
from .figure import draw_inspection
from .images import check_images
from .stats import dataset_statistics

JSON_NAME, PNG_NAME = "inspect.json", "inspect.png"


def inspect_dataset(spec: DatasetSpec, class_names: list[str] | None = None, model_name: str | None = None,
                    out: Path = Path("inspect_out"), workers: int = 4, samples: int = 8) -> dict:
    """The report (also written to ``out/inspect.json``; the picture to ``out/inspect.png``)."""
    data = read_dataset(spec, class_names, skip_bad=True)
    model = create_model(model_name, num_classes=len(data.class_names)).eval() if model_name else None
    keep = set(spread_indices(data, samples))
    images = check_images(data, keep, workers)
    report = {"source": data.source, "format": data.format, "classes": data.class_names,
              "statistics": dataset_statistics(data),
              "problems": data.problems + images.problems,
              "repaired": images.repairs,
              "duplicates": images.duplicates}
    if model is not None:  # built before the long pass over the images, so a wrong name fails at once
        report["anchor_coverage"] = anchor_coverage(data, model, model_name)
    out = Path(out)
    write_json(report, out / JSON_NAME)
    draw_inspection(data, report, images.samples, out / PNG_NAME)
    return report
