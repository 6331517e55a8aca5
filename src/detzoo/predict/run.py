"""``detzoo predict MODEL SOURCE``: one source argument (``sources.resolve_source``), images or video, the
selection settings of this run (score threshold, NMS IoU, detections cap, classes: ``SelectOptions``), and what
is written (``outputs`` for images, ``video_run`` for videos; with tracking, ``tracking.VideoTracking`` over a
video or an image folder read as a sequence). The CLI only parses arguments into ``PredictSettings``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..common.config import track_settings
from ..data.preflight import apply_findings, check_files
from ..engine.signals import StopRequest
from ..models.selection import SelectOptions
from ..tracking.counting import parse_line, parse_zone
from .image_sequence import image_sequence
from .outputs import RUN_RESULTS, ImageOutputs
from .predictor import Predictor, unlabelled_data
from .sources import ImageSource, VideoSource, resolve_source
from .video import VideoPrediction
from .video_run import run_video

DEFAULT_SCORE = 0.3  # what is worth drawing; the model's own threshold (0.01-0.05) is for evaluation


@dataclass
class PredictSettings:
    out: Path
    score: float | None = DEFAULT_SCORE  # None: the model's own (tracking: the tracker's low_score)
    iou: float | None = None
    max_det: int | None = None
    classes: list[str] | None = None  # names
    draw: bool = True
    save_txt: bool = False
    recursive: bool = False
    live: bool | None = None  # None: streams and cameras live, files in order
    vid_stride: int = 1
    frames: str | None = None  # START:END
    show: bool = False
    track: list[str] | None = None  # tracker settings KEY=VALUE over the model's (None: no tracking)
    lines: list[str] = field(default_factory=list)  # x1,y1,x2,y2 to count crossings of (tracking)
    zones: list[str] = field(default_factory=list)  # x1,y1,x2,y2,x3,y3,... to count presence in (tracking)

    @property
    def tracking(self) -> bool:
        return self.track is not None or bool(self.lines or self.zones)

    def options(self, class_names: list[str]) -> SelectOptions:
        return SelectOptions.from_names(class_names, self.classes, score_threshold=self.score,
                                        iou_threshold=self.iou, max_detections=self.max_det)


def predict_command(model: str, source: str, settings: PredictSettings, device: str = "auto", batch_size: int = 8,
                    workers: int = 0, precision: str = "fp32", compile: bool = False) -> int:
    """Resolve the source (a bad one fails before the model loads), load the model, run; the exit code."""
    resolved = resolve_source(source, settings.recursive, settings.live)
    regions = ([parse_line(text) for text in settings.lines], [parse_zone(text) for text in settings.zones])
    if settings.tracking and isinstance(resolved, ImageSource):
        resolved = image_sequence(resolved)
    predictor = Predictor.from_file(model, device=device, precision=precision, compile=compile,
                                    batch_size=batch_size, workers=workers)
    options = settings.options(predictor.class_names)
    if isinstance(resolved, VideoSource):
        video = {"vid_stride": settings.vid_stride, "frames": settings.frames, "notify": tqdm.write}
        if settings.tracking:
            from .tracking import track_source  # ByteTrack needs scipy: imported when tracking

            tracker = track_settings(settings.track or [], predictor.tracking)
            prediction = track_source(predictor, resolved, options, tracker, *regions, **video)
        else:
            prediction = VideoPrediction(predictor, resolved, options, **video)
        summary = run_video(prediction, settings.out, settings.draw, settings.show)
        print(summary.line())
        return 128 + summary.signum if summary.signum else 0
    return run_images(predictor, resolved, options, settings)


def run_images(predictor: Predictor, source: ImageSource, options: SelectOptions, settings: PredictSettings) -> int:
    # every image checked first (data.preflight): all that cannot be read named at once, repairs named
    apply_findings(check_files(source.paths), skip_bad=False, hint="leave them out of the source")
    outputs = ImageOutputs(settings.out, source.paths, source.root, predictor.class_names, settings.draw,
                           settings.save_txt)
    data = unlabelled_data(source.paths, predictor.class_names)
    action = "finishing the current batch, then writing the run's files"
    with StopRequest(action=action) as stop, tqdm(total=len(source.paths), unit="image", disable=None) as bar:
        for det in predictor.predict_data(data, options):
            record = data.records[det.image_id]
            outputs.add(det, (record.width, record.height))
            bar.update(1)
            if stop.signum is not None:
                break
    outputs.close()
    what = ["per-image JSON"] + (["drawn images"] if settings.draw else []) + [f"{RUN_RESULTS} (COCO results)"]
    what += ["labels/ (YOLO)"] if settings.save_txt else []
    stopped = " (stopped by a signal)" if stop.signum else ""
    print(f"{outputs.images} of {len(source.paths)} image(s){stopped}, {outputs.detections} detection(s) -> "
          f"{settings.out} ({', '.join(what)})")
    return 128 + stop.signum if stop.signum else 0
