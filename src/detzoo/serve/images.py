"""From uploaded bytes to a decoded image, refusing what could hurt the service before it is decoded: only
whitelisted formats (Pillow identifies them from the header), and a pixel count read from the header (a
48 KB PNG can declare 20000 x 20000 pixels). The decoding itself is ``data.image_files.decode_image`` (Pillow,
EXIF orientation applied, the truncated-JPEG rule), the same as everywhere else in detzoo; a repaired upload is
answered as any other and logged."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import torch
from PIL import Image, UnidentifiedImageError

from ..common.errors import DataError
from ..data.image_files import decode_image
from .errors import RequestError
from .settings import IMAGE_FORMATS

OPENED_AS = [f for f in IMAGE_FORMATS if f != "MPO"]
log = logging.getLogger("detzoo.serve")  # Pillow's JPEG plugin itself returns MPO files


@dataclass
class Upload:
    """One image as it arrived: its name (the multipart file name, else ``image N``) and its bytes."""

    name: str
    data: bytes


class _NamedBytes(io.BytesIO):
    """Bytes that print as the upload's name, so decode_rgb's errors name the image the client sent."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.upload_name = name

    def __str__(self) -> str:
        return self.upload_name


def check_header(upload: Upload, max_pixels: int) -> tuple[int, int]:
    """(width, height) from the header; 415 for anything but a whitelisted image format, 413 for too many
    pixels. Nothing is decoded here (``Image.open`` reads only the header)."""
    if not upload.data:
        raise RequestError(400, f"{upload.name}: empty image")
    try:
        with Image.open(io.BytesIO(upload.data), formats=OPENED_AS) as image:
            width, height = image.size
            kind = image.format
    except Image.DecompressionBombError as exc:  # Pillow's own refusal, above 2 x Image.MAX_IMAGE_PIXELS
        raise RequestError(413, f"{upload.name}: more pixels than the limit of {max_pixels}, refused from its "
                                f"header ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise RequestError(415, f"{upload.name}: not an image in a supported format "
                                f"({', '.join(OPENED_AS)})") from None
    if kind not in IMAGE_FORMATS:  # pragma: no cover - Pillow only opens what `formats` allows
        raise RequestError(415, f"{upload.name}: image format {kind} is not accepted")
    if width * height > max_pixels:
        raise RequestError(413, f"{upload.name}: {width} x {height} = {width * height} pixels, more than the "
                                f"limit of {max_pixels}, refused from its header")
    return width, height


def decode_upload(upload: Upload, max_pixels: int) -> torch.Tensor:
    """uint8 RGB [3,H,W] with EXIF orientation applied; RequestError 413/415 from the header, 400 for a
    truncated or corrupt image."""
    check_header(upload, max_pixels)
    try:
        decoded = decode_image(_NamedBytes(upload.data, upload.name))  # EXIF orientation applied
    except DataError as exc:
        raise RequestError(400, str(exc)) from None
    if decoded.repair:
        log.warning("%s", decoded.repair)
    return decoded.pixels
