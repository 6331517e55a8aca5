"""Configuration: a dataclass schema, YAML recipes (with one optional ``base:``) and dotted overrides.

``load_config("configs/ssd300_mobilenetv2.yaml", ["train.epochs=3", "data.train=path/to/data"])`` returns a
validated :class:`Config`. Unknown keys are rejected with a close-match suggestion; values are type-checked
against the schema. YAML is read with ``yaml.safe_load`` only, and override values are parsed the same way
(``3`` is an int, ``[a, b]`` a list, ``null`` is None) - never with ``eval``.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

# The zoo recipes ship inside the package (so a pip-installed detzoo has them); the checkout's `configs/` is a
# link to this folder. A `./configs` folder in the working directory is looked in first.
CONFIG_DIR = Path(str(importlib.resources.files("detzoo") / "configs"))


def choice(default: Any, *choices: Any) -> Any:
    """A dataclass field whose value must be one of ``choices``."""
    return field(default=default, metadata={"choices": choices})


@dataclass
class DatasetSpec:
    """One dataset on disk. ``format: auto`` guesses from the path (see ``detzoo.data.formats``)."""

    path: str = ""  # a COCO JSON file, a VOC folder, a TXT list file or a YOLO folder (docs/data.md)
    format: str = choice("auto", "auto", "coco", "voc", "txt", "yolo")  # auto: detected from the path
    images: str | None = None  # image root for COCO JSON, TXT and VOC XML files (guessed when empty)
    split: str | None = None  # VOCdevkit ImageSets/Main/<split>.txt, or the YOLO split folder


@dataclass
class AugmentConfig:
    """Training augmentation of the SSD paper (probabilities; 0 turns a step off)."""

    photometric: float = 0.5  # brightness, contrast, saturation, hue
    zoom_out: float = 0.5  # the image placed on a larger mean-filled canvas
    zoom_out_max: float = 4.0  # the largest canvas, as a multiple of the image side
    iou_crop: bool = True  # a crop whose IoU with an object reaches a drawn minimum (the SSD paper's rule)
    flip: float = 0.5  # horizontal flip


@dataclass
class DataConfig:
    train: list[DatasetSpec] = field(default_factory=list)  # a path, a list of them, or mappings (below); concatenated
    val: list[DatasetSpec] = field(default_factory=list)  # evaluated during training; empty: no evaluation
    classes: list[str] | None = None  # class names (order = label index); None = read from the data
    skip_bad: bool = False  # skip unreadable samples (and report how many) instead of stopping
    workers: int | None = None  # DataLoader workers per process; None: this process's CPUs less one
    decode: str = choice("cpu", "cpu", "cuda")  # cuda: JPEGs decoded and augmented on the GPU (data/device_decode.py)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # the training augmentation (data.augment, below)


@dataclass
class ModelConfig:
    """Which zoo model to build; every ``None`` field keeps the model's recipe default."""

    name: str = "ssd300_mobilenetv2"  # a zoo entry (detzoo models)
    num_classes: int | None = None  # None = the number of classes in the data
    input_size: int | None = None  # input side in pixels (Faster R-CNN: the short-side limit)
    backbone_weights: str | None = None  # local ImageNet weights file (torchvision or pytorch-ssd layout)
    weights: str | None = None  # detzoo checkpoint to start from (transfer learning: head layers re-made)
    loss: str | None = choice(None, None, "focal", "softmax")  # SSD: sigmoid focal loss, or softmax with hard negatives
    focal_alpha: float | None = None  # focal loss weight of the positives
    focal_gamma: float | None = None  # focal loss exponent
    neg_pos_ratio: float | None = None  # softmax loss: hard negatives per positive
    score_thresh: float | None = None  # the model's own least score (exports, serve); mAP: eval.score_thresh
    nms_thresh: float | None = None  # NMS IoU
    pre_nms_top_k: int | None = None  # SSD: candidates kept per class before NMS (the best-scoring)
    detections_per_img: int | None = None  # detections kept per image after NMS
    roi_batch_size: int | None = None  # two-stage models: RoIs sampled per image to train the box head

    def model_kwargs(self) -> dict[str, Any]:
        """Options passed on to ``create_model`` (the ones the user set)."""
        skip = {"name", "num_classes", "backbone_weights", "weights"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip and v is not None}


@dataclass
class TrainConfig:
    epochs: int = 1  # passes over the training data
    batch_size: int = 8  # per process
    optimizer: str = choice("sgd", "sgd", "adamw")  # SGD with momentum, or AdamW
    lr: float = 0.05  # learning rate at `reference_batch` images per step; scaled with the real global batch
    reference_batch: int = 256  # the global batch `lr` is given for
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 1.5e-4  # on weights only, never on biases or norm parameters
    schedule: str = choice("cosine", "cosine", "step", "constant")  # after the warm-up
    warmup_epochs: float = 2.0  # linear warm-up from warmup_factor x lr to lr
    warmup_steps: int | None = None  # overrides warmup_epochs when set
    warmup_factor: float = 0.0  # learning rate at step 0, as a fraction of lr
    lr_end: float = 0.001  # final learning rate of the cosine, as a fraction of lr
    milestones: list[float] = field(default_factory=lambda: [8 / 12, 11 / 12])  # step schedule, fractions
    gamma: float = 0.1  # step schedule: the factor at each milestone
    grad_clip: float | None = None  # global gradient norm
    amp: str = choice("none", "none", "fp16", "bf16")  # fp16: CUDA only (gradient scaler); bf16: CPU and CUDA
    device: str = "auto"  # auto (CUDA when there is one), cpu, cuda, cuda:1; torchrun: LOCAL_RANK's GPU
    seed: int = 0  # seeds every random draw of the run (weights, sampling, augmentation)
    freeze: str = choice("none", "none", "backbone")  # backbone: its weights and BatchNorm statistics stay
    freeze_bn: bool = False  # BatchNorm uses and keeps its running statistics (scale/shift still train)
    output: str = "runs"  # the folder run folders are made in
    name: str | None = None  # run folder name (default: model name + time)
    resume: str | None = None  # a checkpoint or run folder to continue exactly
    checkpoint_every: int = 0  # also keep epoch_N.pt every N epochs (0 = only last.pt)
    keep_checkpoints: int = 3  # how many epoch_N.pt to keep
    save_every_steps: int = 0  # also write last.pt every K steps (a SIGKILL then loses at most K steps)
    eval_every: int = 1  # evaluate every N epochs (0 = never during training)
    eval_start: int = 1  # first epoch that is evaluated
    early_stop: int = 0  # stop after this many evaluations without improvement (0 = off)
    precise_bn: int = 0  # before each evaluation, re-estimate BatchNorm statistics over this many batches
    ema: bool = False  # keep an EMA of the weights; it is what is evaluated and what load_model uses
    ema_decay: float = 0.9998  # the EMA's weight of its past value at each update
    ema_warmup: int = 2000  # decay ramps up as ema_decay * (1 - exp(-updates / ema_warmup)); 0 = constant
    max_nonfinite: int = 5  # abort after this many non-finite losses in a row
    sync_bn: bool = False  # SyncBatchNorm across DDP processes (CUDA only)
    channels_last: bool = False  # NHWC weights and batches: 1.2-1.7x faster SSD training on the CPU (bench_ssd.py)
    compile: bool = False  # torch.compile of the network + loss (engine/compiled.py); checkpoints unchanged
    max_steps: int | None = None  # stop after this many steps in total (smoke tests, profiling)
    log_every_steps: int = 10  # bring losses to the host (bar, TensorBoard, checks) every N steps: the step's one wait
    progress_every_s: float = 30.0  # without a progress bar (stderr not a terminal): a progress line every N s; 0 = off


@dataclass
class EvalConfig:
    metric: str = choice("coco", "coco", "voc07", "voc07_area")  # pycocotools, or VOC AP@iou (11-point or area)
    batch_size: int = 8  # images per evaluation batch
    iou_thresh: float = 0.5  # VOC metrics
    score_thresh: float | None = None  # score threshold of every mAP; null: 0.001 SSDs, 0.05 Faster R-CNN

    def __post_init__(self) -> None:
        if self.score_thresh is not None and not 0.0 <= self.score_thresh <= 1.0:
            raise ConfigError(f"eval.score_thresh must be in [0, 1], got {self.score_thresh}")


@dataclass
class TrackConfig:
    """The tracker of ``detzoo predict --track`` (ByteTrack's rule, ``tracking/bytetrack.py``): detections of
    at least ``high_score`` are associated first and may start tracks; those between ``low_score`` and it only
    keep existing tracks alive (an occluded object's score drops). Prediction selects boxes down to
    ``low_score`` when tracking."""

    high_score: float = 0.5  # first association; a track is started only from such a detection
    low_score: float = 0.1  # second association (tracks the first left unmatched); lower scores are ignored
    match_iou: float = 0.2  # least IoU (x score, with fuse_score) between a track's prediction and a detection
    low_match_iou: float = 0.5  # least IoU in the second association (low scores: stricter)
    fuse_score: bool = True  # first association's similarity = IoU x detection score (ByteTrack's MOT17 rule)
    min_hits: int = 2  # consecutive matched frames before a new track is reported (1: at once)
    max_lost: int = 30  # frames of the source a lost track is kept (and predicted) before it is dropped
    fill_gaps: int = 20  # offline results (detzoo eval): gaps of a track up to this many frames interpolated

    def __post_init__(self) -> None:
        for name in ("high_score", "low_score", "match_iou", "low_match_iou"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"track.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.low_score > self.high_score:
            raise ConfigError(f"track.low_score ({self.low_score}) must not exceed track.high_score "
                              f"({self.high_score})")
        if self.min_hits < 1 or self.max_lost < 0 or self.fill_gaps < 0:
            raise ConfigError(f"track.min_hits must be at least 1, track.max_lost and track.fill_gaps at least 0, "
                              f"got {self.min_hits}, {self.max_lost} and {self.fill_gaps}")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    track: TrackConfig = field(default_factory=TrackConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --------------------------------------------------------------------------- loading


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A path to a YAML file, or a zoo name such as ``ssd300_mobilenetv2``: ``./configs/<name>.yaml`` if there
    is one, else the recipe shipped with the package."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for folder in (Path.cwd() / "configs", CONFIG_DIR):
        candidate = folder / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) if CONFIG_DIR.is_dir() else []
    hint = _suggest(str(name_or_path), known)
    raise ConfigError(f"config '{name_or_path}' not found (not a file, not in ./configs/ or the zoo's recipes){hint}")


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def _load_with_base(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular 'base:' chain")
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = Path(base) if Path(base).is_absolute() else path.parent / base
    if not base_path.suffix:
        base_path = base_path.with_suffix(".yaml")
    if not base_path.is_file():
        raise ConfigError(f"{path}: base '{base}' not found at {base_path}")
    return deep_merge(_load_with_base(base_path, (*seen, path)), data)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.epochs=3"`` -> (["train", "epochs"], 3). Values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}': empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_override(data: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set ``data[k1][k2]...`` = value. A dataset list of one entry may be refined without its index
    (``data.train.images=...``); a dataset given as a bare path becomes ``{path: ...}`` when refined."""
    node: Any = data
    for i, key in enumerate(keys[:-1]):
        where = ".".join(keys[: i + 1])
        if isinstance(node, list):
            index = _index(node, key, where)
            node[index] = _as_mapping(node[index])
            node = node[index]
        else:
            child = node.get(key)
            node[key] = child = [] if child is None and keys[i + 1].isdigit() else _as_mapping(child)
            node = child
        if isinstance(node, list) and not keys[i + 1].isdigit():
            if len(node) != 1:
                raise ConfigError(f"{where} holds {len(node)} entries; name one, e.g. {where}.0.{keys[i + 1]}=...")
            node[0] = _as_mapping(node[0])
            node = node[0]
    if isinstance(node, list):
        node[_index(node, keys[-1], ".".join(keys))] = value
    else:
        node[keys[-1]] = value


def _as_mapping(value: Any) -> Any:
    if value is None:
        return {}
    if isinstance(value, str):  # a dataset given as a bare path
        return {"path": value}
    return value


def _index(items: list, key: str, where: str) -> int:
    if not key.isdigit() or int(key) >= len(items):
        raise ConfigError(f"{where}: no entry {key} (there are {len(items)})")
    return int(key)


Override = str | tuple[list[str], Any]  # "key.sub=value" as typed, or (["key", "sub"], value) from Python


def load_config(source: str | Path | dict | None = None, overrides: list[Override] | tuple[Override, ...] = ()
                ) -> Config:
    """Build a validated Config from a YAML file / zoo name / dict, then apply the overrides: ``key=value``
    strings (values parsed as YAML), or (keys, value) pairs whose value is used as it is."""
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, dict):
        data = dict(source)
        data.pop("base", None)
    else:
        data = _load_with_base(resolve_config_path(source))
    for override in overrides:
        keys, value = parse_override(override) if isinstance(override, str) else override
        apply_override(data, list(keys), value)
    return build(Config, data, "")


# --------------------------------------------------------------------------- validation


def _suggest(name: str, options: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    return f"; did you mean '{prefix}{close[0]}'?" if close else ""


def build(cls: type, data: Any, where: str) -> Any:
    """Make dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            prefix = f"{where}." if where else ""
            raise ConfigError(f"unknown key '{path}'{_suggest(str(key), list(fields), prefix)}")
        kwargs[key] = _coerce(hints[key], value, path, fields[key].metadata.get("choices"))
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, path: str, choices: tuple | None = None) -> Any:
    if choices is not None and value not in choices:
        shown = ", ".join(repr(c) if c is None else str(c) for c in choices)
        raise ConfigError(f"{path}: '{value}' is not one of {shown}{_suggest(str(value), [str(c) for c in choices])}")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{path}: must not be null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if dataclasses.is_dataclass(item_type) and isinstance(value, (str, dict)):
            value = [value]  # a single dataset is a list of one
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_coerce(item_type, v, f"{path}.{i}") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if tp is DatasetSpec and isinstance(value, str):
            value = {"path": value}
        return build(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    if tp is Any:
        return value
    raise ConfigError(f"{path}: unsupported type {tp}")  # pragma: no cover - schema bug


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config stored in a checkpoint or run folder."""
    return build(Config, data, "")


def track_settings(pairs: list[str] | tuple[str, ...] = (), base: TrackConfig | None = None) -> TrackConfig:
    """``base`` (default: ``TrackConfig()``) with ``key=value`` pairs applied (``--tracker max_lost=60``), checked
    like a recipe's ``track:`` section (unknown keys get a suggestion)."""
    data = dataclasses.asdict(base or TrackConfig())
    for text in pairs:
        keys, value = parse_override(text.removeprefix("track."))
        if len(keys) != 1:
            raise ConfigError(f"--tracker {text}: expected KEY=VALUE with one of {', '.join(data)}")
        apply_override(data, keys, value)
    return build(TrackConfig, data, "track")
