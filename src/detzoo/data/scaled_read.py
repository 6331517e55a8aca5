"""Decode a training image no larger than the augmentation needs: a JPEG is decoded at the smallest of libjpeg's
DCT scales (1, 1/2, 1/4, 1/8; Pillow's ``Image.draft``) that still gives at least the requested number of
pixels, which is 2-8x cheaper than decoding it whole and resizing afterwards.

Only the common case takes this path: a JPEG (or any format Pillow opens, without the scaling) of the
annotated size without an EXIF turn. Anything else - an image with an EXIF orientation (also a 180-degree
one, whose size fits the annotation either way: ``read_image`` turns it upright then), a file Pillow cannot
read, a truncated file - goes through ``loader.read_image``, the one reader with the EXIF rule and the error
messages, at full size.
"""

from __future__ import annotations

from PIL import Image, UnidentifiedImageError

from .image_files import read_image
from .records import EXIF_ORIENTATION_TAG, ImageRecord


def read_image_at_least(record: ImageRecord, width: int, height: int) -> tuple[Image.Image, int]:
    """(RGB image, reduction): the image decoded with each side divided by ``reduction`` (1, 2, 4 or 8), at
    least ``width`` x ``height`` pixels where the file allows it. Errors are ``read_image``'s DataError."""
    try:
        with Image.open(record.path) as image:
            if (image.size == (record.width, record.height)
                    and image.getexif().get(EXIF_ORIENTATION_TAG, 1) == 1):
                if image.format == "JPEG":
                    image.draft("RGB", (max(1, width), max(1, height)))
                reduction = -(-record.width // image.size[0])  # ceil: the last block may be partial
                image.load()  # decodes the whole file: truncation raises here
                return (image if image.mode == "RGB" else image.convert("RGB")), reduction
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        pass
    pixels = read_image(record)  # raises DataError naming the file, or applies the EXIF rotation
    return Image.fromarray(pixels.permute(1, 2, 0).numpy()), 1
