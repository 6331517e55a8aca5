"""What ``detzoo predict SOURCE`` was given: images (a file, a folder - ``recursive`` for its subfolders - or a
glob) or a video source (a video file, a camera index, or an rtsp/rtmp/http(s)/... stream URL). Suffixes are
matched case-insensitively. Anything that cannot be one of these is one line naming the source and the problem.
"""

from __future__ import annotations

import glob
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from ..common.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
                  ".wmv", ".flv", ".3gp", ".ogv", ".gif")
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt")
GLOB_CHARACTERS = "*?["


@dataclass(frozen=True)
class ImageSource:
    paths: list[Path]
    root: Path  # outputs keep each image's path relative to this folder


@dataclass(frozen=True)
class VideoSource:
    url: str  # what FFmpeg opens: a file path, a stream URL or a camera device
    name: str  # the outputs' base name: the file's stem, camera0, the stream's last path part
    live: bool  # the freshest frame, older ones dropped; else every frame in order
    reconnect: bool  # reopen after an error or the end (streams and cameras; a file's end is the end)
    input_format: str | None = None  # FFmpeg input format (cameras: v4l2, avfoundation)
    images: tuple[Path, ...] = ()  # an image folder read as a video (``image_sequence``), in this order
    fps: Fraction | None = None  # the images' frame rate (None: 25)

    @property
    def is_file(self) -> bool:
        return not self.reconnect


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def resolve_source(source: str, recursive: bool = False, live: bool | None = None) -> ImageSource | VideoSource:
    """``live`` forces (True) or refuses (False) freshest-frame reading; None: streams and cameras are live,
    files are not."""
    scheme = source.split("://", 1)[0].lower() if "://" in source else None
    if scheme is not None:
        if scheme not in STREAM_SCHEMES:
            raise DataError(f"{source}: unsupported stream scheme '{scheme}://' (supported: "
                            f"{', '.join(s + '://' for s in STREAM_SCHEMES)})")
        name = Path(source.split("://", 1)[1].split("?", 1)[0]).stem or "stream"
        return VideoSource(source, name, live=True if live is None else live, reconnect=True)
    if source.isdigit() and not Path(source).exists():
        return camera_source(int(source), live)
    path = Path(source)
    if path.is_dir():
        return ImageSource(folder_images(path, recursive), path)
    if path.is_file():
        if is_image(path):
            return ImageSource([path], path.parent)
        if is_video(path):
            return VideoSource(str(path), path.stem, live=bool(live), reconnect=False)
        raise DataError(f"{path}: not an image or video file by its suffix (images: {', '.join(IMAGE_SUFFIXES)}; "
                        f"videos: {', '.join(VIDEO_SUFFIXES)})")
    if any(c in source for c in GLOB_CHARACTERS):
        return glob_images(source)
    raise DataError(f"{source}: no such file or folder (and not a camera index, stream URL or glob)")


def folder_images(folder: Path, recursive: bool) -> list[Path]:
    found = sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir()) if p.is_file() and is_image(p))
    if found:
        return found
    videos = sorted(p.name for p in folder.iterdir() if p.is_file() and is_video(p))
    hint = ""
    if videos:
        hint = f"; it has video(s) - give one as the source: {folder / videos[0]}"
    elif not recursive and any(p.is_dir() for p in folder.iterdir()):
        hint = "; add --recursive to look in its subfolders"
    raise DataError(f"{folder}: no images in this folder (looked for {', '.join(IMAGE_SUFFIXES)}, any case){hint}")


def glob_images(pattern: str) -> ImageSource:
    """``photos/**/*.jpg`` (``**`` crosses folders); the outputs mirror paths below the pattern's fixed part."""
    matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
    images = [p for p in matches if p.is_file() and is_image(p)]
    if not images:
        what = f"{len(matches)} match(es), none an image" if matches else "nothing matches"
        raise DataError(f"{pattern}: {what} (images: {', '.join(IMAGE_SUFFIXES)}, any case)")
    fixed = []
    for part in Path(pattern).parts:
        if any(c in part for c in GLOB_CHARACTERS):
            break
        fixed.append(part)
    return ImageSource(images, Path(*fixed) if fixed else Path("."))


def camera_source(index: int, live: bool | None) -> VideoSource:
    """A camera by index, through FFmpeg's capture device of this platform."""
    if sys.platform.startswith("linux"):
        url, input_format = f"/dev/video{index}", "v4l2"
    elif sys.platform == "darwin":
        url, input_format = f"{index}:none", "avfoundation"
    else:
        raise DataError(f"camera {index}: camera indices work on Linux (v4l2) and macOS (avfoundation); on this "
                        "platform give the camera as a stream URL or an FFmpeg device name")
    return VideoSource(url, f"camera{index}", live=True if live is None else live, reconnect=True,
                       input_format=input_format)
