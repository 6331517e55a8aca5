"""Prediction on videos (issue 11): clips written by the test from coco128 photos (each held for a few frames)
with PyAV, a tiny untrained checkpoint, and ``detzoo predict`` on them - frame counts, per-frame detections
equal to the image Predictor's on the same decoded frames, a browser-playable output, --vid-stride, bad and
truncated files, Ctrl-C / SIGTERM mid-video, and the live path (freshest frame, drops, reconnect) without a
camera."""

from __future__ import annotations

import json
import signal
import time

import pytest

from detzoo.cli import main
from detzoo.common.errors import DataError
from detzoo.models.selection import SelectOptions
from detzoo.predict import Predictor
from detzoo.predict.frames import QUEUE_FRAMES, FrameReader
from detzoo.predict.sources import VideoSource
from detzoo.predict.video_io import VideoInput
from fast_training import start_cli, wait_for
from predict_helpers import CLASSES, SCORE, decode_all, photos, tiny_checkpoint, write_clip

FPS = 10
PREDICT = ["--score", SCORE, "--max-det", "5", "--batch-size", "4", "--workers", "0"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


@pytest.fixture(scope="module")
def clip(tmp_path_factory, coco128):
    """8 photos x 3 frames = 24 frames, 160 x 120, 10 fps."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    assert write_clip(path, photos(coco128, 8), hold=3, fps=FPS) == 24
    return path


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _source(path, live=False, reconnect=False) -> VideoSource:
    return VideoSource(str(path), path.stem, live=live, reconnect=reconnect)


def test_video_run_matches_the_image_predictor_and_plays(checkpoint, clip, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(clip), "--out", str(out), *PREDICT]) == 0
    summary = capsys.readouterr().out
    assert "clip: 24 frame(s) of 24 decoded" in summary and "decode" in summary and "encode" in summary

    records = _lines(out / "clip.jsonl")
    assert [r["frame"] for r in records] == list(range(24))  # frame count out == frame count in
    assert [r["timestamp"] for r in records] == pytest.approx([i / FPS for i in range(24)])
    assert any(r["detections"] for r in records)

    # each frame's detections == the image Predictor's on the same decoded frame, batched alike (4 per batch)
    source_frames, _, _ = decode_all(clip)
    predictor = Predictor.from_file(checkpoint, device="cpu")
    options = SelectOptions(score_threshold=float(SCORE), max_detections=5)
    import torch

    tensors = [torch.from_numpy(f).permute(2, 0, 1) for f in source_frames]
    expected = [det.to_dict()["detections"] for i in range(0, 24, 4)
                for det in predictor.predict_images(tensors[i: i + 4], options)]
    assert [r["detections"] for r in records] == expected
    assert set(records[0]) == {"image", "image_id", "detections", "frame", "timestamp"}

    # the output plays: H.264, yuv420p, the source's size, frame count and rate, index before the data
    frames, times, info = decode_all(out / "clip.mp4")
    assert len(frames) == 24 and frames[0].shape == (120, 160, 3)
    assert info == {"codec": "h264", "width": 160, "height": 120, "pix_fmt": "yuv420p", "fps": FPS}
    assert times == pytest.approx([i / FPS for i in range(24)])
    data = (out / "clip.mp4").read_bytes()
    assert 0 <= data.find(b"moov") < data.find(b"mdat")  # +faststart


def test_vid_stride_and_frame_range(checkpoint, clip, tmp_path):
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(clip), "--out", str(out), "--vid-stride", "3", *PREDICT]) == 0
    assert [r["frame"] for r in _lines(out / "clip.jsonl")] == list(range(0, 24, 3))
    frames, times, _ = decode_all(out / "clip.mp4")
    assert len(frames) == 8 and times == pytest.approx([i / FPS for i in range(0, 24, 3)])  # the source's timing

    assert main(["predict", str(checkpoint), str(clip), "--out", str(out), "--vid-stride", "2", "--frames", "5:12",
                 *PREDICT]) == 0
    assert [r["frame"] for r in _lines(out / "clip.jsonl")] == [5, 7, 9, 11]


@pytest.mark.parametrize("frames, message", [("100:", "has 24 frames"), ("7", "expected START:END"),
                                             ("9:3", "expected START:END")])
def test_bad_frame_range_is_one_line(checkpoint, clip, tmp_path, capsys, frames, message):
    assert main(["predict", str(checkpoint), str(clip), "--out", str(tmp_path), "--frames", frames, *PREDICT]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def test_generator_api_keeps_memory_flat(checkpoint, clip):
    """The decoder waits for the consumer: after one result it has decoded at most a queue and a batch ahead."""
    predictor = Predictor.from_file(checkpoint, device="cpu", batch_size=2)
    long_clip = clip.parent / "long.mp4"
    write_clip(long_clip, decode_all(clip)[0][:20], hold=4, fps=FPS)  # 80 frames
    run = predictor.predict_video(str(long_clip))
    results = iter(run)
    first = next(results)
    assert (first.index, first.timestamp, first.image.shape) == (0, 0.0, (120, 160, 3))
    deadline = time.monotonic() + 30
    while run.reader.queued < QUEUE_FRAMES and time.monotonic() < deadline:
        time.sleep(0.01)
    # queue full + one frame the decoder holds + the batch taken + the frame that waits in put()
    assert run.stats.decoded <= QUEUE_FRAMES + 2 + 2 < 80
    assert [r.index for r in results] == list(range(1, 80))
    assert not run.reader.reading


@pytest.mark.parametrize("content, codec_threads", [("not a video", 1), ("truncated", 1), ("truncated", 3)])
def test_bad_video_file_is_one_line(checkpoint, clip, tmp_path, capsys, monkeypatch, content, codec_threads):
    """A truncated file: FFmpeg's decoder raises where the data stops, or with frame threads ends quietly there
    (then the header's frame count tells)."""
    monkeypatch.setattr("detzoo.predict.video_io.codec_threads", lambda: codec_threads)
    bad = tmp_path / "bad.mp4"
    data = clip.read_bytes()
    bad.write_bytes(b"this is text, not a video\n" * 50 if content == "not a video" else data[: len(data) * 2 // 3])
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(bad), "--out", str(out), *PREDICT]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(bad) in err
    if content == "not a video":
        assert "cannot open as a video" in err and not out.exists()
    else:  # what was read before the end is written and named
        assert "truncated" in err and str(out / "bad.jsonl") in err
        lines = _lines(out / "bad.jsonl")
        assert 0 < len(lines) < 24 and len(decode_all(out / "bad.mp4")[0]) == len(lines)


def test_live_only_options_and_show_without_display_are_one_line(checkpoint, clip, tmp_path, capsys, monkeypatch):
    assert main(["predict", str(checkpoint), str(clip), "--live", "--vid-stride", "2", *PREDICT]) == 2
    assert "a live source gives its freshest frame" in capsys.readouterr().err
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["predict", str(checkpoint), str(clip), "--show", "--out", str(tmp_path), *PREDICT]) == 2
    assert "--show needs a display" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_signal_mid_video_leaves_a_playable_video_and_complete_lines(checkpoint, coco128, tmp_path, stop):
    long_clip = tmp_path / "long.mp4"
    total = write_clip(long_clip, photos(coco128, 40), hold=15, fps=25)  # 600 frames, 24 s
    out = tmp_path / "out"
    process = start_cli(["predict", str(checkpoint), str(long_clip), "--out", str(out), "--score", SCORE,
                         "--batch-size", "1"])
    wait_for(lambda: any(p.stat().st_size > 2000 for p in out.glob(".long.jsonl.tmp-*")), process,
             "the first frames")
    process.send_signal(stop)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + stop, stderr
    assert f"stopped by {stop.name}" in stdout
    lines = _lines(out / "long.jsonl")  # every line complete JSON
    assert 0 < len(lines) < total and [r["frame"] for r in lines] == list(range(len(lines)))
    frames, _, info = decode_all(out / "long.mp4")
    assert len(frames) == len(lines) and (info["width"], info["height"]) == (160, 120)
    assert not list(out.glob(".*tmp-*"))


def _wait(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)


def test_live_reader_gives_the_freshest_frame_and_counts_drops(coco128, tmp_path):
    """A file read as a stream (paced at its 100 fps) and a slow consumer that lets 4 more frames arrive before
    taking the next: it gets the newest frame each time, and the frames in between are counted as dropped."""
    path = tmp_path / "fast.mp4"
    total = write_clip(path, photos(coco128, 10), hold=4, fps=100)  # 40 frames
    in_order, _, _ = decode_all(path)
    reader = FrameReader(_source(path, live=True))
    taken = []
    for frame in reader:
        assert (frame.rgb == in_order[frame.index]).all()  # the pixels of the frame its index says
        taken.append(frame.index)
        _wait(lambda i=frame.index: reader.stats.decoded >= i + 5 or not reader.reading)
    assert taken == sorted(set(taken)) and taken[-1] == total - 1  # newest first, and the last frame is seen
    gaps = [b - a for a, b in zip(taken, taken[1:])]
    assert all(gap >= 4 for gap in gaps[:-1])  # at least 4 newer frames had arrived each time
    assert reader.stats.decoded == total and reader.stats.dropped == total - len(taken) > 0


def test_live_reader_reconnects_with_bounded_backoff(clip):
    """A stream that ends, fails to reopen twice, comes back, ends again and stays away: one reconnect, delays
    doubling up to the cap, then the error after max_retries tries."""
    plan = iter(["open", "fail", "fail", "open"])
    calls = []

    def opener(source):
        calls.append(step := next(plan, "fail"))
        if step == "fail":
            raise DataError(f"{source.url}: cannot open as a video (Connection refused)")
        return VideoInput(source)

    messages = []
    reader = FrameReader(_source(clip, live=True, reconnect=True), max_retries=3, backoff=(0.01, 0.02),
                         notify=messages.append, opener=opener)
    taken = []
    with pytest.raises(DataError, match="lost and not reopened after 3 tries"):
        for frame in reader:
            taken.append(frame.index)
    assert calls == ["open", "fail", "fail", "open", "fail", "fail", "fail"]
    assert reader.stats.reconnects == 1 and reader.stats.decoded == 48  # 24 frames before, 24 after
    assert taken == sorted(set(taken)) and taken[-1] == 47  # indices go on across the reconnect
    assert reader.stats.dropped == 48 - len(taken)
    delays = [m.split("reconnecting in ")[1].split(" s")[0] for m in messages]
    assert delays == ["0.01", "0.02", "0.02"] * 2 and "(try 3/3)" in messages[2]
    assert "the stream ended" in messages[0] and "Connection refused" in messages[1]


def test_video_source_names_classes_in_jsonl(checkpoint, clip, tmp_path):
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(clip), "--out", str(out), "--no-draw", "--classes", "dog",
                 *PREDICT]) == 0
    assert not (out / "clip.mp4").exists()
    names = {d["class_name"] for r in _lines(out / "clip.jsonl") for d in r["detections"]}
    assert names == {"dog"} and set(CLASSES) > names
