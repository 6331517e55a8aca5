"""torch.hub entry points: one per zoo model (every name ``detzoo models`` lists).

    model = torch.hub.load("path/to/detzoo", "ssd300_mobilenetv2", source="local", weights="runs/x/best.pt")
    model = torch.hub.load("<owner>/detzoo", "ssd300_mobilenetv2", num_classes=4, input_size=320)

``weights`` is a detzoo checkpoint, read with ``torch.load(weights_only=True)``; its class count and options
are used. Without it the model is freshly initialised with ``num_classes`` and any option of the zoo builder.
Nothing is downloaded. What comes back is the handle ``detzoo.load`` returns (``detzoo.Model``, a
``torch.nn.Module``) in eval mode: ``model.predict("photos/")`` and the other verbs, and - unchanged for torch.hub
users - ``model(images)`` (the raw network), ``model.detect(images)`` on images normalised as
``model.preprocess`` says, ``class_names`` from the checkpoint (else None), and the detector's own
``state_dict``. ``precision="bf16"`` makes ``detect`` (and ``predict``) run in NHWC layout under bfloat16
autocast (refused where the CPU or GPU has no bfloat16); INT8 is an ONNX Runtime file (``detzoo quantize``), not
a hub model.
"""

import os as _os
import sys as _sys

dependencies = ["torch", "torchvision"]

# only entry points may be public names here: torch.hub lists every public callable
_SOURCE = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "src")
if _SOURCE not in _sys.path:
    _sys.path.insert(0, _SOURCE)

from detzoo.models import create_model as _create_model  # noqa: E402
from detzoo.models import list_models as _list_models  # noqa: E402


def _entry(name: str):
    def entry(weights: str | None = None, num_classes: int = 80, precision: str = "fp32", **options):
        from detzoo.api.model import Model
        from detzoo.engine.inference import set_detect_precision

        if weights is None:
            model = Model(_create_model(name, num_classes=num_classes, **options), None, precision=precision)
        else:
            if options:
                raise TypeError(f"{name}: options {sorted(options)} come from the checkpoint when weights are given")
            model = Model.from_checkpoint(weights, precision=precision)
            if model.config.model.name != name:
                raise ValueError(f"{weights}: a '{model.config.model.name}' checkpoint, not '{name}'")
        set_detect_precision(model.model, precision)
        return model.eval()

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (f"detzoo '{name}': weights=CHECKPOINT loads a trained model; otherwise num_classes and the "
                     f"zoo options build a fresh one; precision='bf16' runs detect in bfloat16.")
    return entry


for _name in _list_models():
    globals()[_name] = _entry(_name)
