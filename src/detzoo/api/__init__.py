"""The Python API: one object for every verb.

    import detzoo

    model = detzoo.load("runs/demo/run/best.pt")        # a checkpoint, a run folder or an exported .onnx
    results = model.predict("photos/")                   # what `detzoo predict` takes, or images in memory
    results[0].plot(); results[0].save("predictions/")   # the drawing of `detzoo predict`
    model.val(data="coco/annotations/instances_val2017.json")   # the metrics object; pictures written
    model.export(); model.quantize(data="calibration/")

    model = detzoo.load("ssd300_mobilenetv2")           # a zoo recipe: an untrained model ...
    model.train(data="data/train.json", data__val="data/val.json", train__epochs=3)   # ... trained

``load`` is cheap to reach (``import detzoo`` imports neither torch nor this package's heavy parts); calling it
imports torch. The verbs call the library functions the ``detzoo`` command calls (``engine.train.run_training``,
``predict.evaluate.evaluate_dataset``, ``predict.results.predict_results``, ``export.api``), so the CLI and
the API cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .model import Model


def load(source: str | Path, *, device: str = "auto", precision: str | None = None, batch_size: int = 8,
         workers: int | None = None) -> Model:
    """A model handle (``detzoo.Model``) for ``source``:

    - a detzoo checkpoint (``best.pt``) or a run folder (its ``last.pt``): the trained model, ready to predict,
      evaluate, export, or train further (its weights start the new run);
    - an exported ``.onnx`` file (``detzoo export``): prediction, evaluation and quantization on ONNX Runtime;
    - a zoo name (``ssd300_mobilenetv2``, see ``detzoo models``) or a recipe YAML: an untrained model of that
      recipe, to ``train``.

    ``device`` (auto, cpu, cuda, cuda:1), ``precision`` (fp32, bf16 or int8, as ``detzoo predict
    --precision``), ``batch_size`` and ``workers`` (image-loading processes; default: the CPUs less one) are
    what prediction and evaluation run with.
    """
    from .model import Model

    return Model.load(source, device=device, precision=precision, batch_size=batch_size, workers=workers)


__all__ = ["load"]
