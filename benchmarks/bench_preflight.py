"""What the pre-flight image check costs (``data.preflight``, issue 21), side by side with the reference it
competes with, on one dataset (default: coco128), and what that makes for COCO train2017 (118 287 images).

Rows, every one over every image of the dataset:
- the check without its cache (a fresh cache folder each time), the files in the OS page cache;
- the same with the files evicted from the page cache first (``posix_fadvise(DONTNEED)``: a cold local disk);
- the check again with its cache (what a rerun or a resume pays: a stat per file and one JSON per folder);
- the reference: Ultralytics' image verification as its label cache runs it before training (``Image.open``,
  ``verify()``, the EXIF size, the JPEG end-of-image check), written out here from its steps (the package is not
  a dependency), in a thread pool of min(8, CPUs) threads as Ultralytics uses;
- a full decode of every image (what ``detzoo inspect`` does, and what finds every damage), same pool.

Wall time is the best of ``--repeats`` passes (the least disturbed by other work on the machine), CPU time
this process's (all its threads), the median of the passes; on a shared machine wall times of a few
milliseconds are noise, CPU times much less. The train2017 column multiplies the time per image
(train2017's JPEGs are of coco128's kind: val2017 photos of the same sizes).

A second table measures the check at train2017's size instead of extrapolating it: ``--scale`` (default
118 287) symbolic links in one folder, as train2017 is one folder, to the dataset's files, each listed as an
image; the files themselves stay in the page cache (the CPU cost of the check; a cold disk adds the evicted
row's difference per image).

    python benchmarks/bench_preflight.py [--data ../shared/data/coco128] [--repeats 9] [--scale 118287]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, shown  # noqa: E402

from detzoo.common.config import DatasetSpec  # noqa: E402
from detzoo.common.device import available_cpus  # noqa: E402
from detzoo.data.formats import read_dataset  # noqa: E402
from detzoo.data.image_files import decode_rgb  # noqa: E402
from detzoo.data.preflight import check_splits, default_threads  # noqa: E402

TRAIN2017_IMAGES = 118_287


def evict(paths: list[Path]) -> None:
    """Drop the files' pages from the OS page cache (clean pages only; no root needed)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def ultralytics_verify(path: Path) -> tuple[int, int]:
    """The image half of Ultralytics' ``verify_image_label``: open, verify, EXIF-corrected size, JPEG end check."""
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:  # verify() leaves the image unusable: reopened, as Ultralytics does
        size = image.size
        if image.getexif().get(0x0112, 1) in (6, 8):
            size = size[::-1]
        if image.format.lower() in ("jpg", "jpeg"):
            with open(path, "rb") as handle:
                handle.seek(-2, 2)
                handle.read()
    return size


def timed(run, repeats: int, before=None) -> tuple[float, float]:
    """(best wall seconds, median CPU seconds) of ``run()``; ``before()`` runs untimed before each pass."""
    walls, cpus = [], []
    for _ in range(repeats):
        if before is not None:
            before()
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "coco128"))
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--scale", type=int, default=TRAIN2017_IMAGES, help="images of the second table (0: none)")
    args = parser.parse_args()
    data = read_dataset(DatasetSpec(args.data))
    paths = [record.path for record in data.records]
    count = len(paths)
    print(machine())
    threads = min(8, available_cpus())
    print(f"{count} images of {shown(data.source)}, {sum(p.stat().st_size for p in paths) / 2**20:.1f} MiB; pre-flight "
          f"threads {default_threads()}, reference and decode threads {threads}")

    with tempfile.TemporaryDirectory() as scratch:
        fresh = iter(range(10**6))

        def check_without_cache():
            findings = check_splits({"training": data}, cache_root=Path(scratch) / f"cold{next(fresh)}")
            assert not findings.problems["training"], findings.problems

        cached_root = Path(scratch) / "warm"
        check_splits({"training": data}, cache_root=cached_root)  # fills the cache

        def check_with_cache():
            assert check_splits({"training": data}, cache_root=cached_root).cached == count

        def reference():
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(ultralytics_verify, paths))

        def decode_all():
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(decode_rgb, paths))

        rows = [("pre-flight check, no cache (files in the OS page cache)", check_without_cache, None),
                ("pre-flight check, no cache, files evicted from the page cache", check_without_cache,
                 lambda: evict(paths)),
                ("pre-flight check, cached (a rerun or a resume)", check_with_cache, None),
                ("reference: Ultralytics' image verification (open, verify, EXIF, JPEG end)", reference, None),
                ("full decode of every image (detzoo inspect)", decode_all, None)]
        timings = {name: timed(run, args.repeats, before) for name, run, before in rows}
    reference_wall = timings[rows[3][0]][0]
    table = []
    for name, (wall, cpu) in timings.items():
        table.append([name, f"{wall:.3f}", f"{cpu:.3f}", f"{1000 * wall / count:.2f}", f"{wall / reference_wall:.2f}",
                      f"{wall / count * TRAIN2017_IMAGES:.0f}"])
    print_table(f"Pre-flight image check on {count} images ({args.repeats} passes): best wall, median CPU seconds",
                ["what", "wall s", "CPU s", "ms/image", "x reference", "train2017 s (extrapolated)"], table)
    if args.scale:
        at_scale(data, args.scale)


def at_scale(data, images: int) -> None:
    """The check over ``images`` symbolic links (one folder) to the dataset's files: no cache, then cached."""
    import copy

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "images"
        folder.mkdir()
        big = copy.copy(data)
        big.records = []
        for index in range(images):
            source = data.records[index % len(data.records)]
            link = folder / f"{index:012d}{source.path.suffix}"
            link.symlink_to(source.path)
            big.records.append(copy.copy(source))
            big.records[-1].path = link
        cache = Path(scratch) / "cache"
        cold = timed(lambda: check_splits({"training": big}, cache_root=cache), 1)
        warm = timed(lambda: check_splits({"training": big}, cache_root=cache), 3)  # best of 3
        size = sum(p.stat().st_size for p in (cache / "image-checks").iterdir()) / 2**20
    rows = [[what, f"{wall:.2f}", f"{cpu:.2f}", f"{1000 * wall / images:.3f}"]
            for what, (wall, cpu) in (("no cache (files in the page cache)", cold), ("cached", warm))]
    print_table(f"The check over {images} images in one folder (links to those files); its cache: {size:.1f} MiB",
                ["what", "wall s", "CPU s", "ms/image"], rows)


if __name__ == "__main__":
    main()
