"""Which video library detzoo reads and writes videos with: decode and H.264 encode speed at 640 x 480 for
PyAV, OpenCV and torchcodec (the candidates named in issue 11), each as detzoo would use it: decoding to RGB
uint8 frames, encoding RGB frames to a browser-playable MP4 (H.264, yuv420p). A library that cannot do a step
says why instead of a figure (torchcodec needs FFmpeg's shared libraries installed on the system, e.g.
`apt-get install ffmpeg`; its wheel has none). The last PyAV row is detzoo's own writer (ultrafast, colour
conversion by OpenCV). Prints one table; docs/design.md quotes it.

    python benchmarks/bench_video_io.py [--frames 150] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import machine, print_table, time_call

WIDTH, HEIGHT, FPS = 640, 480, 25
DATA = Path(os.environ.get("DETZOO_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "coco128" / "val2017"


def clip_frames(count: int) -> np.ndarray:
    """Real photos (coco128, resized to 640 x 480), each held for 5 frames with a small pan, so the encoder
    sees both motion and still content; random noise when the data is not there."""
    from PIL import Image

    paths = sorted(DATA.glob("*.jpg"))[: count // 5 + 1]
    frames = []
    for i in range(count):
        if paths:
            with Image.open(paths[i // 5]) as image:
                photo = np.asarray(image.convert("RGB").resize((WIDTH + 20, HEIGHT)))
            frames.append(photo[:, (i % 5) * 4: (i % 5) * 4 + WIDTH])
        else:
            frames.append(np.random.default_rng(i).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))
    return np.stack(frames)


def pyav_encode(frames: np.ndarray, path: Path, preset: str) -> None:
    import av

    with av.open(str(path), "w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=FPS, options={"preset": preset, "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def detzoo_encode(frames: np.ndarray, path: Path) -> None:
    """What ``detzoo predict`` writes with: PyAV + libx264 ultrafast, RGB -> I420 by OpenCV."""
    from fractions import Fraction

    from detzoo.predict.video_io import VideoWriter

    writer = VideoWriter(path, WIDTH, HEIGHT, Fraction(FPS))
    for i, rgb in enumerate(frames):
        writer.write(rgb, i / FPS)
    writer.close()


def pyav_decode(path: Path) -> int:
    import av

    count = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frame.to_ndarray(format="rgb24")
            count += 1
    return count


def opencv_decode(path: Path) -> int:
    import cv2

    capture, count = cv2.VideoCapture(str(path)), 0
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        count += 1
    capture.release()
    return count


def opencv_encode(frames: np.ndarray, path: Path, fourcc: str) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError(f"no {fourcc} encoder in this OpenCV build")
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()


def torchcodec_decode(path: Path) -> int:
    from torchcodec.decoders import VideoDecoder

    count = 0
    for _ in VideoDecoder(str(path)):
        count += 1
    return count


def torchcodec_encode(frames: np.ndarray, path: Path, preset: str) -> None:
    from torchcodec.encoders import Encoder

    encoder = Encoder()
    video = encoder.add_video(height=HEIGHT, width=WIDTH, frame_rate=FPS, device="cpu", codec="libx264",
                              pixel_format="yuv420p", crf=23, preset=preset)
    with encoder.open_file(str(path)):
        for rgb in frames:  # frame by frame, as a video run would feed it
            video.add_frames(torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous())


def version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception as exc:  # not installed, or its native libraries cannot load
        return f"unavailable ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})"


def measure(step, frames: int, repeats: int) -> str:
    try:
        seconds = time_call(step, warmup=1, repeats=repeats)
    except Exception as exc:  # a library that cannot do this step: say why in the table
        return f"n/a: {str(exc).splitlines()[0][:60]}"
    return f"{seconds / frames * 1000:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    frames = clip_frames(args.frames)
    folder = Path(tempfile.mkdtemp(prefix="bench_video_io_"))
    source = folder / "source.mp4"
    pyav_encode(frames, source, "medium")  # the input every decoder reads: H.264, like most camera files
    print(f"machine: {machine()}; PyAV {version('av')}, OpenCV {version('cv2')}, torchcodec {version('torchcodec')}")
    rows = []
    for library, decode, encodes in (
            ("PyAV", lambda: pyav_decode(source),
             {**{p: (lambda p=p: pyav_encode(frames, folder / f"pyav_{p}.mp4", p)) for p in ("ultrafast", "veryfast")},
              "detzoo VideoWriter": lambda: detzoo_encode(frames, folder / "detzoo.mp4")}),
            ("OpenCV", lambda: opencv_decode(source),
             {"avc1": lambda: opencv_encode(frames, folder / "cv_avc1.mp4", "avc1"),
              "mp4v (not H.264)": lambda: opencv_encode(frames, folder / "cv_mp4v.mp4", "mp4v")}),
            ("torchcodec", lambda: torchcodec_decode(source),
             {p: (lambda p=p: torchcodec_encode(frames, folder / f"tc_{p}.mp4", p)) for p in ("ultrafast", "veryfast")}),
    ):
        decode_ms = measure(decode, len(frames), args.repeats)
        for setting, encode in encodes.items():
            rows.append([library, decode_ms, setting, measure(encode, len(frames), args.repeats)])
    print_table(f"Video I/O at {WIDTH}x{HEIGHT}, {len(frames)} frames, ms per frame (decode to RGB; encode RGB to "
                "MP4, H.264 yuv420p unless said)", ["library", "decode ms", "encoder setting", "encode ms"], rows)


if __name__ == "__main__":
    main()
