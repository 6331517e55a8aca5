"""``train(config)``: build everything a run needs from the config, then ``Trainer.fit``.

Data -> records -> Dataset + transforms -> DataLoader; model from the registry (+ backbone / transfer
weights, freezing, SyncBN); optimiser and schedule scaled to the global batch; run folder; resume;
feedback callbacks (plots, TensorBoard). Under ``torchrun`` every process runs ``train`` (see docs/training.md).
"""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path

import numpy as np
import torch

from ..common.checkpoints import load_checkpoint
from ..common.config import Config, config_from_dict, load_config
from ..common.device import data_workers, resolve_device
from ..common.distributed import DistInfo, barrier, cleanup, init_distributed, launched_by_torchrun
from ..common.errors import ConfigError
from ..common.files import remove_stale_temp_files
from ..common.memory import retain_freed_memory
from ..data.device_decode import EncodedTrainAugment
from ..data.formats import read_datasets
from ..data.loader import DetectionDataset, TrainBatchSampler, close_loader, train_loader
from ..data.preflight import apply_findings, check_splits
from ..data.records import DetectionData
from ..data.transforms import train_transform
from ..models.weights import build_model, load_backbone_weights, load_transfer_weights
from .callbacks import EvalPictures, PlotCurves, TensorBoardLogger, tensorboard_available
from .ema import build_ema
from .optim import build_optimizer, build_scheduler, scaled_lr
from .run_folder import new_run_dir
from .trainer import StepModule, Trainer


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resume_config(resume: str, overrides_config: Config | None = None) -> tuple[Config, dict, Path]:
    """The config stored in a checkpoint / run folder, plus the checkpoint itself and its run folder."""
    path = Path(resume)
    checkpoint_path = path / "last.pt" if path.is_dir() else path
    state = load_checkpoint(checkpoint_path)
    return config_from_dict(state["config"]), state, checkpoint_path.parent


def run_training(source: str | Path | dict | None, overrides: list[str] | tuple[str, ...] = (),
                 resume: str | Path | None = None) -> Path:
    """What ``detzoo train`` and ``Model.train`` do: train a recipe (a YAML file, a zoo name or a config dict)
    with ``key=value`` overrides, or continue a run exactly (``resume``, or ``train.resume`` in the config: the
    run's own config, the overrides applied on top). Returns the run folder."""
    if resume is None:
        config = load_config(source, overrides)
        if not config.train.resume:
            return train(config)
        resume = config.train.resume
    resumed, state, run_dir = resume_config(str(resume))
    return train(load_config(resumed.to_dict(), overrides), state, run_dir)


def prepare_model(config: Config, num_classes: int, log) -> torch.nn.Module:
    model = build_model(config, num_classes)
    if config.model.backbone_weights:
        load_backbone_weights(model, config.model.backbone_weights)
        log(f"backbone weights: {config.model.backbone_weights}")
    if config.model.weights:
        dropped = load_transfer_weights(model, config.model.weights)
        log(f"weights: {config.model.weights}" + (f" (re-initialised, class count differs: {', '.join(dropped)})"
                                                   if dropped else ""))
    if config.train.freeze == "backbone":
        model.backbone.requires_grad_(False)
        log("backbone frozen")
    return model


def check_precision_and_bn(config: Config, device: torch.device, dist: DistInfo) -> None:
    """Refuse settings that cannot work on this device before any time is spent."""
    cfg = config.train
    if cfg.log_every_steps < 1:
        raise ConfigError(f"train.log_every_steps must be at least 1, got {cfg.log_every_steps}")
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ConfigError(f"train.amp=fp16 needs a CUDA device (it trains with a gradient scaler there); on "
                          f"{device.type} use train.amp=bf16")
    if cfg.amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"train.amp=bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support; use "
                          "train.amp=fp16")
    if cfg.sync_bn and cfg.freeze_bn:
        raise ConfigError("train.sync_bn and train.freeze_bn exclude each other (frozen BatchNorm layers "
                          "have nothing to synchronise)")
    if cfg.sync_bn and dist.enabled and device.type != "cuda":
        raise ConfigError("train.sync_bn needs CUDA (torch's SyncBatchNorm has no CPU kernels); on the CPU "
                          "leave it off, or set train.freeze_bn=true so BatchNorm does not depend on the "
                          "per-process batch")


def check_decode(config: Config, device: torch.device) -> None:
    """``data.decode=cuda`` needs the training device to be a GPU that decodes JPEGs (nvJPEG)."""
    if config.data.decode != "cuda":
        return
    if device.type != "cuda":
        raise ConfigError(f"data.decode=cuda decodes on the training GPU, but training runs on {device.type}; "
                          "use data.decode=cpu")
    from ..data.device_decode import probe_device_decoding

    problem = probe_device_decoding(device)
    if problem:
        raise ConfigError(f"data.decode=cuda: torchvision cannot decode JPEGs on {device} ({problem}); use "
                          "data.decode=cpu")


def feedback_callbacks(run_dir: Path, dist: DistInfo) -> list:
    """Plots and evaluation pictures always, TensorBoard when installed; rank 0 only."""
    if not dist.is_main:
        return []
    callbacks = [PlotCurves(), EvalPictures()]
    if tensorboard_available():
        callbacks.append(TensorBoardLogger(run_dir / "tensorboard"))
    return callbacks


def train(config: Config, state: dict | None = None, run_dir: Path | None = None) -> Path:
    """Train from a config (or continue from ``state`` in ``run_dir``); returns the run folder.

    Under ``torchrun`` every process runs this; the process group is joined here and left at the end."""
    joins_group = launched_by_torchrun() and not torch.distributed.is_initialized()
    dist, device = init_distributed(resolve_device(config.train.device))
    try:
        with _quiet_unless_main(dist), _flush_denormals():
            return _train(config, state, run_dir, dist, device)
    finally:
        if joins_group:
            cleanup()


@contextlib.contextmanager
def _flush_denormals():
    """Weights drifting into denormal floats made CPU matrix products up to 50x slower (seen on Faster
    R-CNN), so training flushes them to zero; the flag is process-wide (it changes Python float arithmetic
    too), so it is switched back off afterwards."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@contextlib.contextmanager
def _quiet_unless_main(dist: DistInfo):
    """Rank 0 alone prints: the other processes' standard output goes nowhere (errors and warnings, on
    standard error, still show, since they may be one process's own)."""
    if dist.is_main:
        yield
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


def _train(config: Config, state: dict | None, run_dir: Path | None, dist: DistInfo,
           device: torch.device) -> Path:
    log = print if dist.is_main else (lambda *a, **k: None)
    trainer = build_trainer(config, state, run_dir, dist, device)
    try:
        trainer.fit()
    finally:
        close_loader(trainer.train_loader)  # its workers persist across epochs
    barrier()
    if trainer.last_eval is not None:
        log(trainer.last_eval.report)
    log(f"done: {trainer.run_dir}")
    return trainer.run_dir


def build_trainer(config: Config, state: dict | None, run_dir: Path | None, dist: DistInfo,
                  device: torch.device) -> Trainer:
    """Everything a run needs, ready to ``fit`` (``benchmarks/bench_train.py`` times its steps): the checks,
    data, model, DDP, loader, optimiser, schedule, run folder, EMA, callbacks, and the state to continue from."""
    cfg = config.train
    log = print if dist.is_main else (lambda *a, **k: None)
    check_precision_and_bn(config, device, dist)
    check_decode(config, device)
    retain_freed_memory()  # ssd300_mobilenetv2, 300 px, batch 8: 58 000 page faults per step otherwise
    seed_everything(cfg.seed + dist.rank)

    train_data = read_datasets(config.data.train, config.data.classes, config.data.skip_bad)
    class_names = train_data.class_names
    val_data = (read_datasets(config.data.val, class_names, config.data.skip_bad)
                if config.data.val and cfg.eval_every > 0 else None)  # not read when never evaluated
    check_images(train_data, val_data, config.data.skip_bad, dist, log)
    model = prepare_model(config, config.model.num_classes or len(class_names), log)
    if cfg.sync_bn and dist.enabled:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        log("BatchNorm synchronised across processes (SyncBatchNorm)")
    model.to(device, memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)

    step_module: torch.nn.Module = StepModule(model, compile=cfg.compile)
    if dist.enabled:
        step_module = torch.nn.parallel.DistributedDataParallel(
            step_module, device_ids=[device.index] if device.type == "cuda" else None)

    pre = model.preprocess
    transform = train_transform(pre, config.data.augment)
    decode_on_device = config.data.decode == "cuda"
    if decode_on_device:
        transform = EncodedTrainAugment(transform)
    dataset = DetectionDataset(train_data, transform, config.data.skip_bad)
    sampler = TrainBatchSampler(train_data, cfg.batch_size, seed=cfg.seed, rank=dist.rank,
                                world_size=dist.world_size, group_aspect=pre.resize == "keep_aspect")
    if len(sampler) == 0:
        raise ConfigError(f"{len(train_data)} training images make no full batch of {cfg.batch_size} per process "
                          f"on {dist.world_size} process(es); lower train.batch_size")
    loader = train_loader(dataset, sampler, pre.size_divisible, data_workers(config.data.workers), device,
                          decode_on_device)
    global_batch = cfg.batch_size * dist.world_size
    optimizer = build_optimizer(model, cfg, global_batch)
    scheduler = build_scheduler(optimizer, cfg, len(sampler))

    if run_dir is None:
        run_dir = new_run_dir(cfg.output, cfg.name, config.model.name) if dist.is_main else None
        run_dir = Path(_broadcast(str(run_dir) if run_dir else "", dist))
    if dist.is_main:
        (run_dir / "config.yaml").write_text(config.to_yaml())
        for stale in remove_stale_temp_files(run_dir):
            log(f"removed {stale.name} (a checkpoint write cut short by a crash)")
    ema = build_ema(model, cfg.ema_decay, cfg.ema_warmup) if cfg.ema else None
    trainer = Trainer(config, model, step_module, loader, sampler, optimizer, scheduler, device, run_dir,
                      class_names, val_data, dist, callbacks=feedback_callbacks(run_dir, dist), ema=ema)
    if state is not None:
        trainer.load_state_dict(state)
        log(f"resumed from {run_dir / 'last.pt'} at epoch {trainer.epoch + 1}, step {trainer.step}")
    precision = {"none": "fp32", "fp16": "fp16 autocast + gradient scaler", "bf16": "bf16 autocast"}[cfg.amp]
    log(f"training {config.model.name} on {len(train_data)} images ({len(class_names)} classes), "
        f"{dist.world_size} process(es) x batch {cfg.batch_size}, lr {scaled_lr(cfg, global_batch):.4g}, "
        f"device {device}, {precision}, run folder {run_dir}")
    return trainer


def check_images(train_data: DetectionData, val_data: DetectionData | None, skip_bad: bool, dist: DistInfo,
                 log) -> None:
    """The pre-flight check of every training and validation image (``data.preflight``) before the model is
    built: problems stop the run in one line each, or with ``skip_bad`` leave those images out; repairs and
    validation images identical to training images are warned about. Rank 0 checks, every process acts on
    its findings (the same records everywhere)."""
    splits = {"training": train_data, **({"validation": val_data} if val_data is not None else {})}
    findings = None
    if dist.is_main:
        findings = check_splits(splits, duplicates_of=("validation", "training") if val_data is not None else None)
    if dist.enabled:
        holder = [findings]
        torch.distributed.broadcast_object_list(holder, src=0)
        findings = holder[0]
    apply_findings(findings, skip_bad, "data.skip_bad=true leaves them out", splits, log)


def _broadcast(text: str, dist: DistInfo) -> str:
    if not dist.enabled:
        return text
    holder = [text]
    torch.distributed.broadcast_object_list(holder, src=0)
    return holder[0]
