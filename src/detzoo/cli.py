"""The ``detzoo`` command line: argument parsing only; each subcommand calls library code."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common.config import DatasetSpec
from .common.errors import ConfigError
from .common.precision import PRECISIONS


def _dataset_spec(args) -> DatasetSpec:
    return DatasetSpec(path=args.data, format=args.format, images=args.images, split=args.split)


def _add_dataset_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--data", required=required, help="dataset: COCO json/folder, VOC folder, TXT file or "
                                                          "YOLO folder")
    parser.add_argument("--format", default="auto", choices=["auto", "coco", "voc", "txt", "yolo"])
    parser.add_argument("--images", help="image root (COCO json, TXT, VOC XML); guessed when left out")
    parser.add_argument("--split", help="VOCdevkit ImageSets/Main split, COCO instances_<split>, YOLO split")
    parser.add_argument("--classes", help="comma-separated class names (VOC, TXT, YOLO)")


def _add_compile_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compile", action="store_true",
                        help="PyTorch checkpoints: compile the network (torch.compile; CUDA graphs on a GPU). The "
                             "first call of each batch size compiles (tens of seconds), later calls are faster")


def _classes(args) -> list[str] | None:
    return [c.strip() for c in args.classes.split(",")] if getattr(args, "classes", None) else None


# --------------------------------------------------------------------------- commands


def cmd_train(args) -> int:
    from .engine.train import run_training

    if args.resume:
        overrides = list(args.overrides)
        if args.config:  # `train --resume RUN key=value ...`: argparse hands the first override to `config`
            if "=" not in args.config:
                raise ConfigError(f"detzoo train --resume continues the run's own config; drop '{args.config}' "
                                  "(key=value overrides are allowed)")
            overrides.insert(0, args.config)
        run_training(None, overrides, resume=args.resume)
        return 0
    if not args.config:
        raise ConfigError("detzoo train needs a config (a YAML file or a zoo name) or --resume RUN")
    run_training(args.config, args.overrides)
    return 0


def cmd_eval(args) -> int:
    if args.source is not None or args.gt is not None:
        return cmd_eval_tracking(args)
    if not args.data:
        raise ConfigError("detzoo eval needs --data DATA (detection metrics) or a video / image folder and --gt "
                          "gt.txt (tracking metrics)")
    from .common.device import data_workers
    from .predict import Predictor
    from .predict.evaluate import evaluate_dataset

    predictor = Predictor.from_file(args.model, device=args.device, precision=args.precision, compile=args.compile,
                                    batch_size=args.batch_size, workers=data_workers(args.workers))
    evaluation = evaluate_dataset(predictor, _dataset_spec(args), args.out, _classes(args), args.metric, args.iou,
                                  args.skip_bad, args.score)
    print(evaluation.report)
    print(f"detections: {evaluation.detections_file}")
    print(f"metrics, both thresholds and the F1-optimal score per class: {evaluation.metrics_file}")
    print(f"pictures: {', '.join(str(p) for p in evaluation.pictures)}")
    return 0


def cmd_eval_tracking(args) -> int:
    from .predict.track_eval import evaluate_tracking

    if args.source is None:
        raise ConfigError("detzoo eval --gt needs the video, image folder or MOTChallenge sequence folder to track: "
                          "detzoo eval MODEL SOURCE --gt gt.txt")
    evaluate_tracking(args.model, args.source, args.gt, Path(args.out), args.tracker, args.device, args.precision,
                      args.batch_size, args.score)
    return 0


def cmd_predict(args) -> int:
    from .common.device import data_workers
    from .predict.run import PredictSettings, predict_command

    tracking = args.track or args.tracker or args.line or args.zone
    score = {"score": None} if tracking else {}  # tracking: the tracker's low_score
    score = score if args.score is None else {"score": args.score}
    settings = PredictSettings(Path(args.out), iou=args.iou, max_det=args.max_det, classes=_classes(args),
                               draw=not args.no_draw, save_txt=args.save_txt, recursive=args.recursive,
                               live=args.live, vid_stride=args.vid_stride, frames=args.frames, show=args.show,
                               track=(args.tracker or []) if tracking else None, lines=args.line or [],
                               zones=args.zone or [], **score)
    return predict_command(args.model, args.source, settings, args.device, args.batch_size,
                           data_workers(args.workers), args.precision, args.compile)


def cmd_export(args) -> int:
    from .export.api import export_checkpoint

    path, result = export_checkpoint(args.checkpoint, args.out, args.nms, args.check_images, args.check_count,
                                     args.tolerance, args.opset)
    print(result.summary())
    print(f"exported -> {path}")
    return 0


def _eval_spec(args) -> DatasetSpec:
    """`detzoo quantize`'s evaluation data: --eval-data (with --eval-split, --eval-images), else --data."""
    if args.eval_data:
        return DatasetSpec(path=args.eval_data, split=args.eval_split, images=args.eval_images)
    return _dataset_spec(args)


def cmd_quantize(args) -> int:
    from .export.api import quantize_onnx

    report = quantize_onnx(args.model, _dataset_spec(args), _eval_spec(args), _classes(args),
                           args.calibration_images, args.metric, args.batch_size, args.skip_bad, args.out)
    print(f"evaluated on {report.evaluation}")
    print(report.table)
    return 0


def cmd_convert(args) -> int:
    from .data.formats import read_dataset
    from .data.writers import write_coco, write_txt

    data = read_dataset(_dataset_spec(args), _classes(args), args.skip_bad)
    out = Path(args.out)
    root = write_coco(data, out) if args.to == "coco" else write_txt(data, out)
    print(f"{len(data)} images, {sum(r.num_objects for r in data.records)} objects, classes "
          f"{', '.join(data.class_names)} -> {out} (image paths relative to {root})")
    return 0


def cmd_inspect(args) -> int:
    from .inspect import inspect_dataset
    from .inspect.api import JSON_NAME, PNG_NAME
    from .inspect.report import format_report

    out = Path(args.out)
    report = inspect_dataset(_dataset_spec(args), _classes(args), args.model, out, args.workers, args.samples)
    print(format_report(report))
    print(f"\nreport: {out / JSON_NAME}, picture: {out / PNG_NAME}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), quick=args.quick, overrides=args.overrides)
    return 0


def cmd_serve(args) -> int:
    import os

    try:
        from .serve.server import serve
    except ModuleNotFoundError as exc:
        raise ConfigError(f"detzoo serve needs the serve extra ({exc.name} is missing): "
                          "pip install 'detzoo[serve]'") from None
    from .serve.settings import API_KEY_ENV, ServeSettings

    settings = ServeSettings(max_batch=args.max_batch, max_batch_delay_ms=args.max_batch_delay_ms,
                             queue_size=args.queue_size, timeout_s=args.timeout,
                             max_body_bytes=int(args.max_body_mb * 2**20), max_images=args.max_images,
                             max_pixels=args.max_pixels, decode_threads=args.decode_threads,
                             header_timeout_s=args.header_timeout, body_timeout_s=args.body_timeout,
                             keep_alive_s=args.keep_alive, max_connections=args.max_connections,
                             max_header_bytes=int(args.max_header_kb * 1024), max_headers=args.max_headers,
                             api_key=args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV),
                             cors_origins=args.cors_origin or [])
    return serve(args.model, args.host, args.port, args.device, settings, args.access_log, args.precision,
                 args.compile)


def cmd_models(args) -> int:
    from .models.summary import format_json, format_markdown, format_table, zoo_summaries

    rows = zoo_summaries()
    print(format_json(rows) if args.json else format_markdown(rows) if args.markdown else format_table(rows))
    return 0


def cmd_data(args) -> int:
    from .data.catalog import cache_root, dataset_names, find_dataset, get_dataset, manifest

    if args.action == "list":
        for name in dataset_names():
            spec, found = manifest(name), find_dataset(name)
            where = found or f"not here (detzoo data get {name}: {spec.download_bytes / 1e6:.0f} MB into {cache_root()})"
            print(f"{name}: {spec.description}\n  licence: {spec.license}\n  source: {spec.source}\n  {where}")
        return 0
    for name in args.names or dataset_names():
        get_dataset(name, args.root, args.mirror)
    return 0


# --------------------------------------------------------------------------- parser


def _add_predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="an image, a folder (--recursive), a glob ('photos/**/*.jpg'), a video file, a "
                                  "camera index (0) or a stream URL (rtsp://, http(s)://, ...)")
    p.add_argument("--out", default="predictions", help="folder for the JSON files, drawn images and videos")
    p.add_argument("--score", type=float, help="score threshold of the model's selection (default 0.3; the "
                                               "model's own is meant for evaluation)")
    p.add_argument("--iou", type=float, help="NMS IoU threshold (default: the model's)")
    p.add_argument("--max-det", type=int, help="detections per image at most (default: the model's)")
    p.add_argument("--classes", help="comma-separated class names to keep (default: all)")
    p.add_argument("--recursive", action="store_true", help="a folder: also the images in its subfolders")
    p.add_argument("--no-draw", action="store_true", help="write no drawn images or annotated video")
    p.add_argument("--save-txt", action="store_true", help="images: also YOLO labels in OUT/labels/")
    p.add_argument("--vid-stride", type=int, default=1, help="video files: predict every N-th frame")
    p.add_argument("--frames", help="video files: the frame range START:END (END exclusive)")
    p.add_argument("--live", action=argparse.BooleanOptionalAction, default=None,
                   help="the freshest frame only, older ones dropped (default: streams and cameras yes, files no)")
    p.add_argument("--show", action="store_true", help="videos: show the annotated frames in a window")
    p.add_argument("--track", action="store_true",
                   help="follow objects across frames (ByteTrack): track ids in the JSON Lines and the video, "
                        "OUT/<name>.tracks.json; an image folder is read as a sequence")
    p.add_argument("--tracker", action="append", metavar="KEY=VALUE",
                   help="a tracker setting over the model's config (repeatable), e.g. max_lost=60; implies --track")
    p.add_argument("--line", action="append", metavar="X1,Y1,X2,Y2",
                   help="count tracks crossing this line, in / out per class (repeatable; pixels of the source, "
                        "or fractions of the frame when all are within [0, 1]); implies --track")
    p.add_argument("--zone", action="append", metavar="X1,Y1,X2,Y2,X3,Y3,...",
                   help="count tracks inside this polygon, with each track's dwell time (repeatable; pixels or "
                        "fractions); implies --track")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detzoo", description="PyTorch object-detection model zoo")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a recipe (several GPUs/nodes: run it under torchrun)")
    p.add_argument("config", nargs="?", help="YAML recipe or zoo name (configs/<name>.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=3 data.train=PATH")
    p.add_argument("--resume", help="continue a run exactly (its folder or a checkpoint)")
    p.set_defaults(func=cmd_train)

    for name, func, text in (("eval", cmd_eval, "evaluate a checkpoint on a dataset"),
                             ("predict", cmd_predict, "detect objects in images")):
        p = sub.add_parser(name, help=text)
        p.add_argument("model", help="checkpoint (.pt) or exported model (.onnx)")
        if name == "eval":
            p.add_argument("source", nargs="?", help="tracking metrics: a video, an image folder or a "
                                                     "MOTChallenge sequence folder (img1/, gt/gt.txt) to track")
            _add_dataset_args(p, required=False)
            p.add_argument("--gt", help="tracking metrics (HOTA, MOTA, IDF1 by TrackEval): MOTChallenge "
                                        "ground truth of SOURCE (gt.txt)")
            p.add_argument("--tracker", action="append", metavar="KEY=VALUE",
                           help="tracking: a tracker setting over the model's config (repeatable)")
            p.add_argument("--score", type=float, help="detection metrics: the evaluation score threshold (default: "
                                                       "the model's, 0.001 SSD, 0.05 Faster R-CNN; at most 100 "
                                                       "per image); tracking: the selection's score threshold "
                                                       "(default: the tracker's low_score)")
            p.add_argument("--metric", default="coco", choices=["coco", "voc07", "voc07_area"])
            p.add_argument("--iou", type=float, default=0.5, help="IoU threshold of the VOC metrics")
            p.add_argument("--skip-bad", action="store_true", help="skip unreadable samples, report the count")
            p.add_argument("--out", default="eval_out", help="folder for detections.json and the pictures (PR "
                                                             "curves, AP per class, confusion matrix, samples); "
                                                             "tracking: <name>.txt and <name>.metrics.json")
        else:
            _add_predict_args(p)
        p.add_argument("--device", default="auto")
        p.add_argument("--precision", choices=PRECISIONS,
                       help="fp32 (a checkpoint's default), bf16 (PyTorch: NHWC + bfloat16 autocast, where the "
                            "CPU or GPU has bfloat16) or int8 (ONNX Runtime: MODEL.int8.onnx from `detzoo "
                            "quantize`); default: an .onnx file as it is")
        p.add_argument("--batch-size", type=int, default=8)
        p.add_argument("--workers", type=int, help="image-loading processes (default: the CPUs less one)")
        _add_compile_arg(p)
        p.set_defaults(func=func)

    p = sub.add_parser("export", help="write an ONNX model of a checkpoint and check it against PyTorch")
    p.add_argument("checkpoint", help="checkpoint (.pt) or run folder")
    p.add_argument("--out", help="ONNX file (default: the checkpoint's path with .onnx)")
    p.add_argument("--nms", action="store_true", help="SSD models: end the graph with ONNX NonMaxSuppression "
                                                      "(final detections); two-stage models always include it")
    p.add_argument("--check-images", help="an image or a folder of images to check the export on (default: "
                                          "the checkpoint's validation data)")
    p.add_argument("--check-count", type=int, default=8, help="how many images the check runs")
    p.add_argument("--tolerance", type=float,
                   help="relative error budget of the raw outputs (default: derived from float32 arithmetic on "
                        "the model's layers; scores may differ by tolerance x logit scale / 2, boxes by "
                        "2 x tolerance x box scale)")
    p.add_argument("--opset", type=int, help="ONNX opset (default 19, the first with DeformConv)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("quantize", help="INT8 ONNX model (static, QDQ), then FP32 vs INT8 accuracy and speed")
    p.add_argument("model", help="an ONNX file from `detzoo export`")
    _add_dataset_args(p)  # --data: the calibration images
    p.add_argument("--calibration-images", type=int, default=100, help="how many images calibrate")
    p.add_argument("--eval-data", help="dataset to compare FP32 and INT8 on (default: --data)")
    p.add_argument("--eval-split", help="split of --eval-data")
    p.add_argument("--eval-images", help="image root of --eval-data (COCO json, TXT, VOC XML); guessed when left out")
    p.add_argument("--metric", default="coco", choices=["coco", "voc07", "voc07_area"])
    p.add_argument("--batch-size", type=int, default=8, help="evaluation batch size")
    p.add_argument("--skip-bad", action="store_true")
    p.add_argument("--out", help="INT8 file (default: MODEL.int8.onnx)")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("convert", help="write a dataset as COCO JSON or the TXT format")
    _add_dataset_args(p)
    p.add_argument("--to", required=True, choices=["coco", "txt"])
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--skip-bad", action="store_true")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("inspect", help="what a dataset holds and every problem in it (tables, JSON, one PNG)")
    _add_dataset_args(p)
    p.add_argument("--model", help="also measure how well this zoo model's anchors cover the boxes after its "
                                   "resize")
    p.add_argument("--out", default="inspect_out", help="folder for inspect.json and inspect.png")
    p.add_argument("--samples", type=int, default=8, help="sample images drawn with their boxes")
    p.add_argument("--workers", type=int, default=4, help="threads that read and decode the images")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("demo", help="train, evaluate and predict on a generated dataset (CPU, minutes)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quick", action="store_true", help="a tiny run that only checks the pipeline")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the demo recipe")
    p.set_defaults(func=cmd_demo)

    from .serve.settings import ServeSettings

    defaults = ServeSettings()
    p = sub.add_parser("serve", help="HTTP detection service with a web page (the serve extra)")
    p.add_argument("model", nargs="?", help="checkpoint, run folder or .onnx (default: the demo's, runs/demo/run)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="fp32, bf16 (PyTorch, where the CPU or GPU has bfloat16) or int8 (MODEL.int8.onnx from "
                        "`detzoo quantize`); default: fp32, or an .onnx file as it is")
    _add_compile_arg(p)
    p.add_argument("--max-batch", type=int, default=defaults.max_batch, help="images per model call")
    p.add_argument("--max-batch-delay-ms", type=float, default=defaults.max_batch_delay_ms,
                   help="how long a batch waits for more images after its first")
    p.add_argument("--queue-size", type=int, default=defaults.queue_size,
                   help="requests waiting for the model; one more is answered 503")
    p.add_argument("--timeout", type=float, default=defaults.timeout_s,
                   help="seconds before an unanswered request gets 504")
    p.add_argument("--max-body-mb", type=float, default=defaults.max_body_bytes / 2**20,
                   help="largest request body (413 above)")
    p.add_argument("--max-images", type=int, default=defaults.max_images, help="images per request")
    p.add_argument("--max-pixels", type=int, default=defaults.max_pixels,
                   help="pixels per image, read from its header before decoding")
    p.add_argument("--decode-threads", type=int, default=defaults.decode_threads, help="images decoded at once")
    p.add_argument("--header-timeout", type=float, default=defaults.header_timeout_s,
                   help="seconds for a request's line and headers to arrive (408 and closed after)")
    p.add_argument("--body-timeout", type=float, default=defaults.body_timeout_s,
                   help="longest pause in a request body (408) or in reading the answer (closed), seconds")
    p.add_argument("--keep-alive", type=float, default=defaults.keep_alive_s,
                   help="seconds an idle connection is kept between requests")
    p.add_argument("--max-connections", type=int, default=defaults.max_connections,
                   help="connections served at once (above: the client silent longest is closed to make room, "
                        "else 503); default: what the open-file limit allows")
    p.add_argument("--max-header-kb", type=float, default=defaults.max_header_bytes / 1024,
                   help="largest request line + headers (431 above)")
    p.add_argument("--max-headers", type=int, default=defaults.max_headers, help="header fields per request "
                                                                                "(431 above)")
    p.add_argument("--api-key", help="require this key (Authorization: Bearer KEY or X-API-Key); default "
                                     "$DETZOO_API_KEY, which other users cannot read in the process list")
    p.add_argument("--cors-origin", action="append", help="allow this browser origin (repeatable; CORS is off "
                                                          "by default)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=cmd_serve)


    p = sub.add_parser("models", help="the zoo: input, anchors, parameters, GFLOPs (counted), dataset, reference "
                                      "accuracy, target")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print JSON")
    form.add_argument("--markdown", action="store_true", help="print a Markdown table (the README's)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("data", help="the real datasets of the test suite (coco128, microcontroller): list, or "
                                    "download, verify (SHA-256) and unpack into the cache")
    p.add_argument("action", choices=["get", "list"])
    p.add_argument("names", nargs="*", help="datasets to get (default: all)")
    p.add_argument("--root", help="download into this folder (default: $DETZOO_DATA, else the platform's cache "
                                  "folder, e.g. ~/.cache/detzoo/data); a dataset already there is reused")
    p.add_argument("--mirror", help="fetch every file from MIRROR/<host>/<path> instead of its public URL")
    p.set_defaults(func=cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .common.distributed import launched_by_torchrun, process_rank
    from .common.errors import DetzooError
    from .engine.trainer import TrainingInterrupted

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TrainingInterrupted as exc:  # the trainer has already said where the state is and how to resume
        return exc.exit_code
    except (DetzooError, FileNotFoundError) as exc:
        where = f" (rank {process_rank()})" if launched_by_torchrun() else ""
        print(f"error{where}: {exc}", file=sys.stderr)
        for note in getattr(exc, "__notes__", ()):  # e.g. the trainer's: where the state is, how to resume
            print(note, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
