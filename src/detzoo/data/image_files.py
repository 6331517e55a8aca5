"""Reading an image file: the one rule that training, evaluation, ``detzoo inspect``, prediction and the service
apply (``decode_image``; ``decode_rgb`` and ``read_image`` are its shorthands).

- Pillow decodes the whole file (so a file cut short is noticed), EXIF orientation applied, as viewers and
  labelling tools show it and as detectron2 and MMDetection read it. With the (width, height) an annotation
  gives: the stored pixels instead when only they have that size (an annotation made by a tool that ignored
  EXIF); a DataError when neither has it (``size_problem``, which the pre-flight check also applies).
- **Truncated JPEGs.** A JPEG whose bytes stop before its end-of-image marker (FF D9) is decoded as Pillow decodes
  it with ``ImageFile.LOAD_TRUNCATED_IMAGES``: libjpeg takes what the data holds and leaves every block it never
  received at mid-grey (128, 128, 128). It is done locally - the marker is appended to the bytes in memory, which
  gives the flag's pixels exactly - so the process-wide flag stays off and no other read (another thread's, the
  service's) becomes tolerant behind its back. Such a file is **repaired** (used; the commands that check files
  first name it) when it is missing only its last bytes, defined as: no pixel row at the bottom of the stored
  frame is left entirely mid-grey, i.e. the data reaches the last row of 8- or 16-pixel blocks and at most part
  of that block row is invented (a file that lacks only the marker decodes to exactly its complete pixels; a
  progressive file cut in a refinement scan keeps every row at a lower quality). It is **refused** (DataError)
  when whole rows at the bottom would be invented (the labels there would sit on grey), or when it ends before
  its image data starts. Other formats are not repaired: a truncated PNG, WebP, ... is refused. (A JPEG cut
  short whose last bytes happen to be a marker cannot be told from a whole one without decoding it; libjpeg
  decodes it with the same grey fill.)

Written by hand: Pillow offers only the process-wide flag, and no library measures what a truncated JPEG lost.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .records import DataError, ImageRecord, upright_size

JPEG_END = b"\xff\xd9"  # the end-of-image marker
JPEG_FORMATS = ("JPEG", "MPO")  # Pillow opens multi-picture JPEGs (phones) as MPO
MID_GREY = 128  # what libjpeg leaves in blocks it received no data for


@dataclass
class DecodedImage:
    pixels: torch.Tensor  # uint8 RGB [3,H,W], EXIF orientation applied (or as stored, see decode_image)
    repair: str | None = None  # what was repaired (a truncated JPEG), one line naming the file; None: nothing


def read_image(record: ImageRecord) -> torch.Tensor:
    """Decode to uint8 RGB [3,H,W] in the pixels the annotation's size describes (see ``decode_image``)."""
    return decode_rgb(record.path, origin=record.origin, size=(record.width, record.height))


def decode_rgb(source, *, origin: str | None = None, size: tuple[int, int] | None = None) -> torch.Tensor:
    """An image file (path or binary file object) -> uint8 RGB [3,H,W]: ``decode_image``'s pixels."""
    return decode_image(source, origin=origin, size=size).pixels


def decode_image(source, *, origin: str | None = None, size: tuple[int, int] | None = None) -> DecodedImage:
    """Decode an image file (a path, or a binary file object whose ``str`` names it) by the rules of this module;
    a DataError naming the file when it cannot be used."""
    try:
        with Image.open(source) as image:
            try:
                return _decoded(source, image, origin, size)
            except DataError:
                raise
            except (OSError, SyntaxError, ValueError):
                if image.format not in JPEG_FORMATS or read_tail(source, len(JPEG_END)) == JPEG_END:
                    raise
        with Image.open(io.BytesIO(_all_bytes(source) + JPEG_END)) as whole:  # a JPEG that stops early
            return _decoded(source, whole, origin, size, ended_early=True)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(not_found(source, origin)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{source}: cannot decode image (corrupt or truncated?): {exc}") from None


def _decoded(source, image: Image.Image, origin: str | None, size: tuple[int, int] | None,
             ended_early: bool = False) -> DecodedImage:
    stored, upright = image.size, upright_size(image)
    problem = size_problem(source, stored, upright, size, origin)
    if problem:
        raise DataError(problem)
    repair = _check_repair(source, image) if ended_early else None
    if size is None or tuple(size) == upright:
        image = ImageOps.exif_transpose(image)
    pixels = np.array(image.convert("RGB"))
    return DecodedImage(torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), repair)


def not_found(path, origin: str | None) -> str:
    return f"{path}: image file not found" + (f" (listed in {origin})" if origin else "")


def size_problem(path, stored: tuple[int, int], upright: tuple[int, int], size: tuple[int, int] | None,
                 origin: str | None) -> str | None:
    """Why an image of these stored and upright (EXIF) sizes does not fit the annotation's ``size``; None if it
    does (either one equals it) or there is no annotated size."""
    if size is None or tuple(size) in (tuple(upright), tuple(stored)):
        return None
    turned = f" (stored {stored[0]}x{stored[1]}, EXIF-rotated)" if tuple(stored) != tuple(upright) else ""
    return f"{path}: image is {upright[0]}x{upright[1]}{turned} but {origin} says {size[0]}x{size[1]}"


def _check_repair(source, image: Image.Image) -> str:
    """A JPEG decoded from bytes that stopped early: the repair note, or a DataError if rows were invented."""
    stored = np.asarray(image.convert("RGB"))  # decodes; the grey fill is in the stored orientation
    missing = invented_rows(stored)
    width, height = image.size
    if missing:
        raise DataError(f"{source}: cannot decode image (corrupt or truncated?): truncated JPEG: its data ends "
                        f"{missing} of {height} pixel rows before the bottom of the stored {width}x{height} frame "
                        "(those rows would be invented grey)")
    return (f"{source}: truncated JPEG repaired: the file stops before its end-of-image marker; decoded from the "
            "data it holds, which reaches the last row of blocks")


def invented_rows(pixels: np.ndarray) -> int:
    """How many whole rows at the bottom of an [H,W,3] uint8 image are mid-grey: what libjpeg fills in where the
    data of a truncated JPEG ended."""
    grey_rows = (pixels == MID_GREY).all(axis=(1, 2))
    not_grey = np.flatnonzero(~grey_rows)
    return len(grey_rows) if not len(not_grey) else len(grey_rows) - 1 - int(not_grey[-1])


def read_tail(source, count: int) -> bytes:
    """The last ``count`` bytes of a file (path or seekable binary file object; its position is kept)."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
            return _tail_of(handle, count)
    position = source.tell()
    try:
        return _tail_of(source, count)
    finally:
        source.seek(position)


def _tail_of(handle, count: int) -> bytes:
    end = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, end - count))
    return handle.read(count)


def _all_bytes(source) -> bytes:
    if isinstance(source, (str, os.PathLike)):
        return Path(source).read_bytes()
    position = source.tell()
    try:
        source.seek(0)
        return source.read()
    finally:
        source.seek(position)


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (exact duplicates: ``detzoo inspect`` and the pre-flight check)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
