"""Training JPEGs decoded on the training device (``data.decode=cuda``), for when the CPUs cannot keep a GPU fed.

The DataLoader workers stop short of the pixels: each reads a JPEG's bytes, draws the sample's augmentation
from its seed with ``TrainAugment``'s own rules (``TrainAugment.sample``) and maps its boxes with the same
``PixelMap`` at full scale. This process then decodes the whole batch in one call (nvJPEG through
``torchvision.io.decode_jpeg(list, device=...)``) and renders each image on the device as ``TrainAugment``
renders it: the photometric distortion (``Photometric.apply_tensor``: torchvision's functional steps, on the
whole image as torchvision's pipeline orders them; the CPU path applies OpenCV's equivalent after resizing),
the crop's part of the image resized (bilinear, antialiased) into its place on a canvas of the mean colour,
the flip. The batch is padded on the device; ``Batch.images`` arrive there already.

Only plain JPEGs stored as annotated take this path (RGB or grey, EXIF orientation 1, the annotated size);
any other image (PNG, an EXIF-rotated or CMYK JPEG, a JPEG cut short, a file that does not open) is augmented in its worker as
always, with the reader's error messages. A JPEG that nvJPEG refuses is decoded on the CPU; one that nothing
decodes is a DataError naming the file, or, with ``data.skip_bad``, dropped and counted.

Hand-written glue only: decoding is torchvision's, resizing torch's, the photometric steps torchvision's.
torchvision deprecates its decoders in 0.29 in favour of TorchCodec (``torchcodec.decoders.decode_jpeg``
takes the same arguments); the GPU images at hand have torchvision < 0.29 and no TorchCodec, so this uses
torchvision's and silences the notice.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .augment import Draw, PixelMap, TrainAugment
from .image_files import JPEG_END
from .loader import Batch, Collate, padded_side
from .records import EXIF_ORIENTATION_TAG, DataError, ImageRecord
from .workers import BadSample

DECODE_CHOICES = ("cpu", "cuda")
NO_PIXELS = torch.zeros(3, 0, 0, dtype=torch.uint8)  # what the collate pads in place of an undecoded image


@dataclass
class EncodedSample:
    """A JPEG's bytes with the augmentation drawn for it: what a worker hands on instead of pixels."""

    data: torch.Tensor  # uint8 [bytes], the whole file
    path: str
    draw: Draw
    pixel_map: PixelMap | None  # None: no pixel of the image shows (a canvas of the fill colour)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The rendered image's shape, [3, H, W]."""
        return (3, *self.draw.geometry.output)


def plain_jpeg(data: bytes, record: ImageRecord) -> bool:
    """A JPEG whose stored pixels are what the annotation describes, and that nvJPEG decodes to RGB: RGB or grey,
    no EXIF turn, the annotated size (the header alone is read), ending with its end-of-image marker (a file
    cut short takes the reader's path, whose rule repairs or refuses it: ``image_files.decode_image``)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return (image.format == "JPEG" and image.mode in ("RGB", "L") and data.endswith(JPEG_END)
                    and image.size == (record.width, record.height)
                    and image.getexif().get(EXIF_ORIENTATION_TAG, 1) == 1)
    except Exception:  # noqa: BLE001 - anything unusual goes through the reader, which names the problem
        return False


class EncodedTrainAugment:
    """The worker's half of ``data.decode=cuda``: a plain JPEG -> (``EncodedSample``, its augmented target);
    any other image -> ``augment``'s pixels and target, as with ``data.decode=cpu``."""

    reads_images = True

    def __init__(self, augment: TrainAugment):
        self.augment = augment

    def __call__(self, record: ImageRecord, target: dict, seed: int | None):
        try:
            data = record.path.read_bytes()
        except OSError:
            data = b""
        if not plain_jpeg(data, record):
            return self.augment(record, target, seed)
        boxes = target["boxes"].numpy().reshape(-1, 4)
        draw = self.augment.sample(record.width, record.height, boxes, self.augment._rng(seed))
        pixel_map = draw.geometry.pixel_map(1, (record.width, record.height))
        encoded = EncodedSample(torch.frombuffer(bytearray(data), dtype=torch.uint8), str(record.path), draw,
                                pixel_map)
        return encoded, self.augment.targets(target, draw, pixel_map)


class EncodedCollate(Collate):
    """``Collate``'s batch (targets and all) with the images left out: each sample's ``EncodedSample`` or
    worker-rendered pixels travel in ``extra["samples"]`` and ``DeviceDecoder`` makes ``images``."""

    def __call__(self, samples: list) -> Batch:
        bad = next((s for s in samples if isinstance(s, BadSample)), None)
        if bad is not None:  # the loader raises it in the main process (``workers.CheckedLoader``)
            return super().__call__([bad])
        good = [s for s in samples if s is not None]
        batch = super().__call__([(NO_PIXELS, target) for _, target in good])
        batch.skipped = len(samples) - len(good)
        batch.image_sizes = [tuple(image.shape[-2:]) for image, _ in good]
        batch.extra["samples"] = [image for image, _ in good]
        return batch


def decode_jpegs(datas: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """uint8 RGB [3, H, W] on ``device`` for each JPEG, all in one call; when that call fails, one by one, on
    the CPU where the device refuses one; None where nothing decodes it."""
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision >= 0.29 (see the module docstring)
        try:
            return list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)) if datas else []
        except RuntimeError:
            pass
        images: list[torch.Tensor | None] = []
        for data in datas:
            image = None
            for where in dict.fromkeys([device, torch.device("cpu")]):
                try:
                    image = decode_jpeg(data, mode=ImageReadMode.RGB, device=where).to(device)
                    break
                except RuntimeError:
                    continue
            images.append(image)
        return images


def resize_uint8(region: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 [3, h, w] -> uint8 [3, H, W], bilinear with antialiasing (``TrainAugment.render``'s kernel). torch
    has a uint8 kernel on the CPU only; elsewhere in float32, rounded back."""
    batch = region.unsqueeze(0)
    if region.device.type == "cpu":
        return torch.nn.functional.interpolate(batch, size=size, mode="bilinear", antialias=True)[0]
    out = torch.nn.functional.interpolate(batch.float(), size=size, mode="bilinear", antialias=True)[0]
    return out.round_().clamp_(0, 255).to(torch.uint8)


def render(pixels: torch.Tensor, sample: EncodedSample, fill: list[int]) -> torch.Tensor:
    """The augmented image, uint8 [3, H, W] on ``pixels``' device, from the decoded JPEG (uint8 [3, h, w])."""
    draw, pixel_map = sample.draw, sample.pixel_map
    height, width = draw.geometry.output
    canvas = torch.tensor(fill, dtype=torch.uint8, device=pixels.device).view(3, 1, 1).expand(3, height, width)
    canvas = canvas.contiguous()
    if pixel_map is not None:
        if draw.photometric is not None:
            pixels = draw.photometric.apply_tensor(pixels)
        (sx0, sy0, sx1, sy1), (dx0, dy0, dx1, dy1) = pixel_map.source, pixel_map.dest
        canvas[:, dy0:dy1, dx0:dx1] = resize_uint8(pixels[:, sy0:sy1, sx0:sx1], (dy1 - dy0, dx1 - dx0))
    return canvas.flip(2) if draw.geometry.flip else canvas


class DeviceDecoder:
    """This process's half: a batch from ``EncodedCollate`` -> the batch with its images decoded, augmented and
    padded on ``device`` (see the module docstring)."""

    def __init__(self, device: torch.device | str, fill: list[int], collate: EncodedCollate,
                 skip_bad: bool = False):
        self.device = torch.device(device)
        self.fill = fill
        self.collate = collate
        self.skip_bad = skip_bad

    def __call__(self, batch: Batch) -> Batch:
        samples = batch.extra.pop("samples", None)
        if samples is None:  # an empty batch (every sample skipped in its worker)
            return batch
        encoded = [i for i, s in enumerate(samples) if isinstance(s, EncodedSample)]
        decoded = dict(zip(encoded, decode_jpegs([samples[i].data for i in encoded], self.device)))
        images = []
        for i, sample in enumerate(samples):
            if i not in decoded:
                images.append(sample.to(self.device, non_blocking=True))  # rendered in its worker
            elif decoded[i] is not None:
                images.append(render(decoded[i], sample, self.fill))
            elif self.skip_bad:
                images.append(None)
            else:
                raise DataError(f"{sample.path}: cannot decode image (corrupt or truncated JPEG?)")
        if any(image is None for image in images):
            batch = self._without(batch, [i for i, image in enumerate(images) if image is None])
            images = [image for image in images if image is not None]
        return self._padded(batch, images)

    def _without(self, batch: Batch, dropped: list[int]) -> Batch:
        """The batch rebuilt by the collate without the samples that did not decode (counted as skipped)."""
        kept = [i for i in range(len(batch.targets)) if i not in dropped]
        rebuilt = self.collate([(NO_PIXELS, batch.targets[i]) for i in kept])
        rebuilt.skipped = batch.skipped + len(dropped)
        rebuilt.image_sizes = [batch.image_sizes[i] for i in kept]
        rebuilt.extra.pop("samples")
        return rebuilt

    def _padded(self, batch: Batch, images: list[torch.Tensor]) -> Batch:
        if not images:
            batch.images = torch.zeros(0, 3, 1, 1, dtype=torch.uint8, device=self.device)
            return batch
        divisible = self.collate.size_divisible
        height = padded_side(max(image.shape[-2] for image in images), divisible)
        width = padded_side(max(image.shape[-1] for image in images), divisible)
        out = torch.zeros(len(images), 3, height, width, dtype=torch.uint8, device=self.device)
        for i, image in enumerate(images):
            out[i, :, : image.shape[-2], : image.shape[-1]] = image
        batch.images = out
        return batch


class DeviceDecodingLoader:
    """A training DataLoader whose batches are finished by a ``DeviceDecoder`` in this process; otherwise the
    loader it wraps (``dataset``, ``batch_sampler``, ``len``)."""

    def __init__(self, loader, decoder: DeviceDecoder):
        self.loader = loader
        self.decoder = decoder

    @property
    def dataset(self):
        return self.loader.dataset

    @property
    def batch_sampler(self):
        return self.loader.batch_sampler

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            yield self.decoder(batch)


def probe_device_decoding(device: torch.device) -> str | None:
    """Why ``device`` cannot decode JPEGs (one line), or None when a small JPEG decodes there."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(buffer, format="JPEG")
    from torchvision.io import ImageReadMode, decode_jpeg

    data = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            decode_jpeg([data], mode=ImageReadMode.RGB, device=device)
    except RuntimeError as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None
