"""``detzoo.Model``: the handle ``detzoo.load`` and the torch.hub entries return - a detector and what it
knows (class names, recipe, checkpoint or ONNX file) with one method per ``detzoo`` verb.

It is a ``torch.nn.Module`` wrapping the detector (``model.model``): ``model(images)`` is the raw network as
torch.hub users call it, attributes it does not have (``detect``, ``preprocess``, ``num_classes``, ...) are
the detector's, and ``state_dict`` / ``load_state_dict`` are the detector's own, so its weights stay
interchangeable with checkpoints. ``train()`` / ``train(False)`` / ``eval()`` switch the mode as on any
module; ``train(data=...)`` trains.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..common.config import Config, DatasetSpec, load_config
from ..common.device import data_workers
from ..common.errors import ConfigError
from ..export.api import QuantizeReport
from ..models.summary import ModelSummary
from ..predict import Predictor
from ..predict.evaluate import Evaluation
from ..predict.results import Result

CHECKPOINT_SUFFIXES = (".pt", ".pth")
RECIPE_SUFFIXES = (".yaml", ".yml")


class Model(torch.nn.Module):
    """A detzoo model and its verbs: ``predict``, ``train``, ``val``, ``export``, ``quantize``, ``info``.

    Made by ``detzoo.load`` (or torch.hub); ``checkpoint`` is the file the weights came from, ``onnx`` an
    exported file being run instead (then there is no PyTorch ``model``), ``config`` the recipe, ``class_names``
    None until the model is trained."""

    def __init__(self, model: torch.nn.Module | None, class_names: list[str] | None, config: Config | None = None,
                 checkpoint: str | Path | None = None, onnx: str | Path | None = None, *, device: str = "auto",
                 precision: str | None = None, batch_size: int = 8, workers: int | None = None):
        super().__init__()
        self.model = model
        self.class_names = list(class_names) if class_names is not None else None
        if model is not None:
            model.class_names = self.class_names  # torch.hub users read it on the detector too
        self.config = config
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.onnx = Path(onnx) if onnx is not None else None
        self.device, self.precision, self.batch_size, self.workers = device, precision, batch_size, workers
        self.run_dir: Path | None = None  # the folder of the last ``train``
        self._predictor: Predictor | None = None

    # ------------------------------------------------------------------ making one

    @classmethod
    def load(cls, source: str | Path, **settings: Any) -> Model:
        """See ``detzoo.load``."""
        path = Path(source)
        if path.suffix == ".onnx":
            from ..predict.onnx_backend import read_metadata

            return cls(None, read_metadata(path).class_names, onnx=path, **settings)
        if path.is_dir() or path.suffix in CHECKPOINT_SUFFIXES:
            return cls.from_checkpoint(path, **settings)
        if path.suffix not in RECIPE_SUFFIXES and path.is_file():
            raise ConfigError(f"{path}: not a checkpoint (.pt), run folder, ONNX file or recipe (.yaml)")
        return cls.from_recipe(load_config(str(source)), **settings)

    @classmethod
    def from_checkpoint(cls, path: str | Path, **settings: Any) -> Model:
        from ..models.weights import load_model

        loaded = load_model(path)
        file = Path(path) / "last.pt" if Path(path).is_dir() else Path(path)
        return cls(loaded.model, loaded.class_names, loaded.config, file, **settings).eval()

    @classmethod
    def from_recipe(cls, config: Config, **settings: Any) -> Model:
        """An untrained model of a recipe, with the class count the recipe's card names (``detzoo models``)."""
        from ..models.cards import model_card
        from ..models.weights import build_model

        num_classes = config.model.num_classes or model_card(config.model.name).num_classes
        return cls(build_model(config, num_classes), None, config, **settings).eval()

    # ------------------------------------------------------------------ torch.nn.Module behaviour

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The detector's raw forward pass (torch.hub's contract); ``predict`` is the verb for images."""
        return self._module()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("model")
            if inner is None or name.startswith("__"):
                raise
            return getattr(inner, name)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The detector's state dict (the keys of checkpoints, without a ``model.`` prefix)."""
        return self._module().state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        self._predictor = None
        return self._module().load_state_dict(state_dict, strict=strict, assign=assign)

    def _apply(self, fn: Any, recurse: bool = True) -> Model:
        self._predictor = None  # .to(), .cuda(), .half(), ...: the next prediction copies the weights again
        return super()._apply(fn, recurse)

    def _module(self) -> torch.nn.Module:
        if self.model is None:
            raise ConfigError(f"{self.onnx}: an ONNX model has no PyTorch module; load the checkpoint for that")
        return self.model

    # ------------------------------------------------------------------ verbs

    def predict(self, source: Any, *, channels: str | None = None, score: float | None = None,
                iou: float | None = None, max_det: int | None = None, classes: list[str] | None = None,
                recursive: bool = False, live: bool | None = None, vid_stride: int = 1, frames: str | None = None,
                stream: bool = False) -> list[Result] | Iterator[Result]:
        """Detect objects in ``source``: anything ``detzoo predict`` takes (an image, a folder, a glob, a
        video, a camera index, a stream URL) or images in memory - a Pillow image, a NumPy array [H,W,3]
        (``channels="rgb"`` or ``"bgr"``: required, the order cannot be guessed), a uint8 tensor [3,H,W]
        (RGB), a stack of them, or a list of any of these and paths.

        Selection as ``detzoo predict``: ``score`` (default 0.3), ``iou``, ``max_det``, ``classes`` (names);
        videos: ``vid_stride``, ``frames`` ("START:END"), ``live``. Returns a list of ``Result`` (one per image
        or frame, in order); ``stream=True`` yields them one at a time instead (cameras and streams, which
        never end, need it; so do long videos, whose frames a list keeps in memory)."""
        from ..models.selection import SelectOptions
        from ..predict.results import predict_results
        from ..predict.run import DEFAULT_SCORE

        predictor = self.predictor()
        options = SelectOptions.from_names(predictor.class_names, classes,
                                           score_threshold=DEFAULT_SCORE if score is None else score,
                                           iou_threshold=iou, max_detections=max_det)
        results = predict_results(predictor, source, options, channels=channels, recursive=recursive, live=live,
                                  vid_stride=vid_stride, frames=frames, endless=stream)
        return results if stream else list(results)

    def track(self, source: Any, *, score: float | None = None, iou: float | None = None,
              max_det: int | None = None, classes: list[str] | None = None, lines: Any = (), zones: Any = (),
              live: bool | None = None, vid_stride: int = 1, frames: str | None = None,
              stream: bool = False) -> list[Result] | Iterator[Result]:
        """Follow objects through ``source`` (what ``detzoo predict --track`` takes: a video, a camera index, a
        stream URL, an image folder read as a sequence) with ByteTrack (the model's ``track`` settings): one
        ``Result`` per frame whose ``track_ids`` say which box is which object; ``lines`` ("x1,y1,x2,y2") and
        ``zones`` ("x1,y1,x2,y2,x3,y3,...") are counted into each result's ``counts``. ``score`` defaults to
        the tracker's ``low_score`` (its second association needs the low scores); the rest as ``predict``."""
        from ..models.selection import SelectOptions
        from ..predict.results import track_results

        predictor = self.predictor()
        options = SelectOptions.from_names(predictor.class_names, classes, score_threshold=score,
                                           iou_threshold=iou, max_detections=max_det)
        results = track_results(predictor, source, options, lines=lines, zones=zones, live=live,
                                vid_stride=vid_stride, frames=frames, endless=stream)
        return results if stream else list(results)

    def train(self, data: str | Path | list[str | Path] | bool | None = None, **overrides: Any) -> Any:
        """Train this model's recipe on ``data`` (a dataset path as ``data.train=`` takes it, or a list) and
        return the run folder; afterwards this handle holds the trained model (``best.pt``, else ``last.pt``).

        Overrides are the recipe's keys with ``__`` for the dot of ``detzoo train``'s ``key=value``:
        ``train__epochs=3``, ``model__input_size=160``, ``data__val="val.json"`` (no validation set unless given:
        the recipe's own points at files you may not have). A model loaded from a checkpoint starts from its
        weights (``model.weights``, class-dependent layers re-made when the class count differs).

        ``train()`` with no data and no overrides, or ``train(False)``, only switch the training mode, as on any
        ``torch.nn.Module`` (and return the handle)."""
        if (data is None or isinstance(data, bool)) and not overrides:
            self._predictor = None
            return super().train(True if data is None else data)
        from ..engine.train import run_training

        if self.onnx is not None:
            raise ConfigError(f"{self.onnx}: an ONNX model cannot be trained; load its checkpoint")
        self.run_dir = run_training(self._recipe(), self._training_overrides(data, overrides))
        best = self.run_dir / "best.pt"
        trained = Model.from_checkpoint(best if best.is_file() else self.run_dir / "last.pt")
        self.model, self.class_names, self.config, self.checkpoint = (trained.model, trained.class_names,
                                                                      trained.config, trained.checkpoint)
        self._predictor = None
        self.eval()
        return self.run_dir

    def val(self, data: str | Path, *, format: str = "auto", images: str | Path | None = None,
            split: str | None = None, classes: list[str] | None = None, metric: str | None = None,
            iou: float = 0.5, skip_bad: bool = False, out: str | Path = "eval_out",
            score: float | None = None) -> Evaluation:
        """Evaluate on a dataset, as ``detzoo eval``: returns the ``Evaluation`` (``metrics``, ``per_class``,
        ``report``, ``score``, ``f1_thresholds``) and writes ``out/detections.json``, ``out/metrics.json`` and the
        pictures (PR curves, AP per class, confusion matrix, samples). ``metric``: coco, voc07 or voc07_area
        (default: the recipe's); ``score``: the evaluation threshold (default: the recipe's ``eval.score_thresh``,
        else the model's: 0.001 SSD, 0.05 Faster R-CNN), not ``predict``'s."""
        from ..predict.evaluate import evaluate_dataset

        spec = DatasetSpec(str(data), format, str(images) if images else None, split)
        metric = metric or (self.config.eval.metric if self.config is not None else "coco")
        if score is None and self.config is not None:
            score = self.config.eval.score_thresh
        return evaluate_dataset(self.predictor(), spec, out, classes, metric, iou, skip_bad, score)

    def export(self, out: str | Path | None = None, *, nms: bool = False, check_images: str | Path | None = None,
               check_count: int = 8, tolerance: float | None = None, opset: int | None = None) -> Path:
        """Export the checkpoint to ONNX (default: beside it, ``.onnx``) and check the file against PyTorch on
        real images, as ``detzoo export``; returns the file."""
        from ..export.api import export_checkpoint

        path, _ = export_checkpoint(self._checkpoint_file("export"), out, nms, check_images, check_count,
                                    tolerance, opset)
        return path

    def quantize(self, data: str | Path, *, eval_data: str | Path | None = None, classes: list[str] | None = None,
                 calibration_images: int = 100, metric: str = "coco", batch_size: int = 8, skip_bad: bool = False,
                 out: str | Path | None = None) -> QuantizeReport:
        """INT8 ONNX model calibrated on ``data``, then FP32 and INT8 evaluated on ``eval_data`` (default:
        ``data``), as ``detzoo quantize``. A checkpoint is exported first (``export()``'s defaults)."""
        from ..export.api import quantize_onnx

        onnx = self.onnx if self.onnx is not None else self.export()
        evaluation = DatasetSpec(str(eval_data)) if eval_data is not None else None
        return quantize_onnx(onnx, DatasetSpec(str(data)), evaluation, classes, calibration_images, metric,
                             batch_size, skip_bad, out)

    def info(self) -> ModelSummary:
        """The zoo entry's row of ``detzoo models``: input, anchors, parameters, GFLOPs, dataset, reference,
        target."""
        from ..models.summary import summarize

        if self.onnx is not None:
            from ..predict.onnx_backend import read_metadata

            return summarize(read_metadata(self.onnx).model)
        return summarize(self.config.model.name if self.config is not None else self._module().zoo_name)

    # ------------------------------------------------------------------ helpers

    def predictor(self) -> Predictor:
        """The Predictor that ``predict`` and ``val`` use (made once; again after the weights change)."""
        if self._predictor is None:
            if self.class_names is None:
                raise ConfigError("this model is untrained (a recipe): train(data=...) it, or load a checkpoint")
            settings = {"batch_size": self.batch_size, "workers": data_workers(self.workers)}
            if self.onnx is not None or self.precision == "int8":
                file = self.onnx if self.onnx is not None else self._checkpoint_file("int8 prediction")
                self._predictor = Predictor.from_file(file, self.device, self.precision, **settings)
            else:
                model = copy.deepcopy(self._module()).eval()
                model.__dict__.pop("detect", None)  # a torch.hub bf16 wrapper calls the original; the backend
                if self.config is not None:  # the checkpoint's tracker settings, as Predictor.from_file
                    settings["tracking"] = self.config.track
                self._predictor = Predictor.from_model(model, self.class_names, self.device,  # does precision
                                                       self.precision, **settings)
        return self._predictor

    def _checkpoint_file(self, what: str) -> Path:
        if self.checkpoint is None:
            raise ConfigError(f"{what} works on a checkpoint file: train(data=...) this model, or load one")
        return self.checkpoint

    def _recipe(self) -> dict:
        if self.config is not None:
            return self.config.to_dict()
        return load_config(self._module().zoo_name).to_dict()  # a torch.hub model built without a recipe

    def _training_overrides(self, data: Any, overrides: dict[str, Any]) -> list:
        """Keyword overrides -> load_config's (keys, value) pairs; a checkpoint's weights start the run."""
        pairs: list[tuple[list[str], Any]] = []
        if self.checkpoint is not None:  # fine-tuning: the checkpoint's weights, not its own starting point
            pairs += [(["model", "weights"], str(self.checkpoint)), (["model", "backbone_weights"], None),
                      (["train", "resume"], None)]
        if data is not None:
            paths = data if isinstance(data, (list, tuple)) else [data]
            pairs += [(["data", "train"], [str(p) for p in paths]), (["data", "val"], [])]
        for key, value in overrides.items():
            if "__" not in key:
                raise ConfigError(f"train({key}=...): recipe keys are nested, with __ for the dot of "
                                  f"`detzoo train` (e.g. train__epochs=3, model__input_size=160)")
            pairs.append((key.split("__"), str(value) if isinstance(value, Path) else value))
        return pairs
