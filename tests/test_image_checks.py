"""Issue 21: one rule for truncated JPEGs (repaired when only their last bytes are missing, refused otherwise),
applied by training, evaluation, inspect, prediction and the service; the pre-flight check that names every
image problem before any work (parallel, cached by size and mtime, duplicates across splits); and a bad image
met in a DataLoader worker reported in the main process's own words, with no worker left behind."""

from __future__ import annotations

import io
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from detzoo.common.config import AugmentConfig
from detzoo.common.errors import DataError
from detzoo.data import preflight
from detzoo.data.image_files import decode_image, file_digest, read_image
from detzoo.data.loader import DetectionDataset, inference_loader
from detzoo.data.preflight import apply_findings, check_files, check_splits
from detzoo.data.records import DetectionData, ImageRecord
from detzoo.data.transforms import Preprocess, train_transform

WIDTH, HEIGHT = 96, 64
BLOCK_ROW = 16  # Pillow saves JPEGs with 4:2:0 chroma: blocks of 16 x 16 pixels


def jpeg_bytes(seed: int = 0, progressive: bool = False, size=(WIDTH, HEIGHT)) -> bytes:
    """Noise, so that every row of blocks holds a share of the data (a cut near the end costs the last row)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90, progressive=progressive)
    return buffer.getvalue()


def corrupt_png(size=(WIDTH, HEIGHT)) -> bytes:
    """A PNG whose header and end are whole but whose image data is damaged: only decoding it shows it."""
    buffer = io.BytesIO()
    pixels = np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"IDAT") + 40
    data[start: start + 20] = bytes(b ^ 0x55 for b in data[start: start + 20])
    return bytes(data)


def record(path: Path, index: int = 0, size=(WIDTH, HEIGHT)) -> ImageRecord:
    return ImageRecord(path, size[0], size[1], np.array([[4, 4, 40, 30]], np.float32), np.zeros(1, np.int64),
                       np.zeros(1, bool), np.zeros(1, bool), image_id=index, origin=f"list.txt:{index + 1}")


def dataset(records: list[ImageRecord]) -> DetectionData:
    return DetectionData(records, ["thing"], "list.txt", "txt")


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    """whole.jpg; no_end.jpg (only the end-of-image marker missing); last_bytes.jpg (40 bytes of data missing,
    inside the last row of blocks); half.jpg (cut in half); headers.jpg (cut before the image data);
    half.png (a PNG cut in half); corrupt.png (damaged inside, whole at both ends); text.jpg (not an image)."""
    whole = jpeg_bytes()
    png = io.BytesIO()
    Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).save(png, "PNG")
    contents = {"whole.jpg": whole, "no_end.jpg": whole[:-2], "last_bytes.jpg": whole[:-42],
                "half.jpg": whole[: len(whole) // 2], "headers.jpg": whole[:300],
                "half.png": png.getvalue()[: len(png.getvalue()) // 2], "corrupt.png": corrupt_png(),
                "text.jpg": b"not an image at all"}
    paths = {}
    for name, content in contents.items():
        paths[name] = tmp_path / name
        paths[name].write_bytes(content)
    return paths


# ------------------------------------------------------------------ the rule


@pytest.mark.parametrize("progressive", [False, True])
def test_a_jpeg_missing_only_its_end_marker_is_repaired_to_its_complete_pixels(tmp_path, progressive):
    whole = jpeg_bytes(progressive=progressive)
    (tmp_path / "whole.jpg").write_bytes(whole)
    (tmp_path / "cut.jpg").write_bytes(whole[:-2])
    complete, repaired = decode_image(tmp_path / "whole.jpg"), decode_image(tmp_path / "cut.jpg")
    assert complete.repair is None
    assert repaired.repair.startswith(f"{tmp_path / 'cut.jpg'}: truncated JPEG repaired")
    assert torch.equal(repaired.pixels, complete.pixels)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # applied to this file only, not to the process


def test_a_jpeg_whose_data_stops_in_its_last_row_of_blocks_is_repaired_as_pillow_would(files, monkeypatch):
    complete, repaired = decode_image(files["whole.jpg"]), decode_image(files["last_bytes.jpg"])
    assert repaired.repair is not None
    # only the last row of blocks differs, and the pixel row above it, whose colour libjpeg's chroma upsampling
    # interpolates with the first chroma row of the block row below
    above = HEIGHT - BLOCK_ROW - 1
    assert torch.equal(repaired.pixels[:, :above], complete.pixels[:, :above])
    assert not torch.equal(repaired.pixels, complete.pixels)  # (so data was missing there)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # what the process-wide flag would give
    with Image.open(files["last_bytes.jpg"]) as image:
        assert torch.equal(repaired.pixels, torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1))


@pytest.mark.parametrize("name, message", [
    ("half.jpg", rf"truncated JPEG: its data ends \d+ of {HEIGHT} pixel rows before the bottom"),
    ("headers.jpg", "cannot decode image"), ("half.png", "cannot decode image"),
    ("corrupt.png", "cannot decode image"), ("text.jpg", "cannot decode image")])
def test_what_cannot_be_decoded_whole_is_refused_naming_the_file(files, name, message):
    with pytest.raises(DataError, match=message) as error:
        decode_image(files[name])
    assert str(error.value).startswith(f"{files[name]}: cannot decode image (corrupt or truncated?)")


def _training(path: Path):
    data = dataset([record(path)])
    return DetectionDataset(data, train_transform(Preprocess((64, 64)), AugmentConfig()))[(0, 1)][0]


def _evaluation(path: Path):
    return next(iter(inference_loader(dataset([record(path)]), Preprocess((64, 64)), 1))).images


def _inspect(path: Path):
    from detzoo.inspect.images import check_images

    found = check_images(dataset([record(path)]), workers=1)
    if found.problems:
        raise DataError(found.problems[0])
    return found.repairs


def _prediction(path: Path):  # what `detzoo predict` checks before it predicts (its reading is evaluation's)
    apply_findings(check_files([path]), skip_bad=False, hint="leave them out", log=lambda line: None)
    return check_files([path]).repairs


def _service(path: Path):
    from detzoo.serve.errors import RequestError
    from detzoo.serve.images import Upload, decode_upload

    try:
        return decode_upload(Upload(str(path), path.read_bytes()), max_pixels=10**6)
    except RequestError as exc:
        assert exc.status == 400
        raise DataError(str(exc)) from None


@pytest.mark.parametrize("reader", [_training, _evaluation, _inspect, _prediction, _service])
def test_training_evaluation_inspect_prediction_and_the_service_apply_the_same_rule(files, reader):
    reader(files["no_end.jpg"])  # repaired: read
    reader(files["last_bytes.jpg"])
    with pytest.raises(DataError) as refused:
        reader(files["half.jpg"])
    with pytest.raises(DataError) as expected:
        read_image(record(files["half.jpg"]))
    assert str(expected.value) in str(refused.value)  # the same words everywhere


# ------------------------------------------------------------------ the pre-flight check


def test_the_check_names_every_problem_in_the_loaders_words_before_any_work(files, tmp_path):
    train = dataset([record(files["whole.jpg"], 0), record(files["half.jpg"], 1), record(files["no_end.jpg"], 2),
                     record(files["whole.jpg"], 3, size=(100, 100)), record(tmp_path / "missing.jpg", 4)])
    val = dataset([record(files["text.jpg"], 0), record(files["half.png"], 1), record(files["last_bytes.jpg"], 2)])
    findings = check_splits({"training": train, "validation": val}, cache_root=tmp_path / "cache")
    assert [i for i, _ in findings.problems["training"]] == [1, 3, 4]
    assert [i for i, _ in findings.problems["validation"]] == [0, 1]
    for split, data in (("training", train), ("validation", val)):
        for index, message in findings.problems[split]:
            with pytest.raises(DataError) as loader_error:
                read_image(data.records[index])
            assert message == str(loader_error.value)  # what training would stop on, in its words
    assert [r.split(":")[0] for r in findings.repairs] == [str(files["no_end.jpg"]), str(files["last_bytes.jpg"])]
    with pytest.raises(DataError) as error:
        apply_findings(findings, False, "data.skip_bad=true leaves them out", log=lambda line: None)
    lines = str(error.value).splitlines()
    assert lines[0].startswith("5 image(s) cannot be used (3 of 5 training, 2 of 3 validation); data.skip_bad=true "
                               "leaves them out; `detzoo inspect --data list.txt` lists every problem")
    assert lines[1:] == ["  " + m for found in findings.problems.values() for _, m in found]  # one line each


def test_skip_bad_leaves_them_out_and_says_how_many(files, tmp_path):
    train = dataset([record(files["whole.jpg"], 0), record(files["half.jpg"], 1), record(files["no_end.jpg"], 2)])
    splits = {"training": train}
    printed = []
    apply_findings(check_splits(splits, cache_root=tmp_path / "cache"), True, "unused", splits, printed.append)
    assert [r.path.name for r in train.records] == ["whole.jpg", "no_end.jpg"] and train.skipped == 1
    assert printed[0].startswith("checked 3 image file(s) (header, EXIF orientation, end of file) in ")
    assert printed[1].startswith("warning: repaired 1 truncated JPEG(s)") and "no_end.jpg" in printed[1]
    assert printed[2].startswith("warning: left out 1 image(s) that cannot be used (1 of 3 training):\n  ")
    assert "half.jpg: cannot decode image" in printed[2]


def test_a_second_check_reads_only_file_metadata_until_a_file_changes(files, tmp_path, monkeypatch):
    data = dataset([record(path, i) for i, path in enumerate(files.values())])
    first = check_splits({"training": data}, cache_root=tmp_path / "cache")
    assert first.cached == 0 and first.files == len(files)
    examined = []
    real = preflight.examine
    monkeypatch.setattr(preflight, "examine", lambda path, stat: examined.append(path.name) or real(path, stat))
    again = check_splits({"training": data}, cache_root=tmp_path / "cache")
    assert examined == [] and again.cached == len(files)
    assert again.problems == first.problems and again.repairs == first.repairs
    files["half.jpg"].write_bytes(jpeg_bytes(seed=5))  # repaired on disk: a new size and mtime
    after = check_splits({"training": data}, cache_root=tmp_path / "cache")
    assert examined == ["half.jpg"] and after.cached == len(files) - 1
    assert "half.jpg" not in " ".join(m for _, m in after.problems["training"])


def test_an_unwritable_cache_costs_only_the_next_runs_time(files, tmp_path):
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    data = dataset([record(files["whole.jpg"]), record(files["half.jpg"], 1)])
    findings = check_splits({"training": data}, cache_root=blocked)
    assert "is not writable" in findings.cache_error and [i for i, _ in findings.problems["training"]] == [1]
    printed = []
    with pytest.raises(DataError):
        apply_findings(findings, False, "hint", log=printed.append)
    assert printed[1].startswith(f"warning: the image-check cache {blocked / 'image-checks'} is not writable")


def test_validation_images_identical_to_training_images_are_named_hashing_only_equal_sizes(tmp_path, monkeypatch):
    def bmp(name: str, seed: int, side: int = 16) -> Path:  # BMPs of one size have one byte size
        path = tmp_path / name
        Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
        return path

    a, big, other = bmp("a.bmp", 0), bmp("big.bmp", 1, side=32), bmp("other.bmp", 2)
    copy = tmp_path / "copy_of_a.bmp"
    copy.write_bytes(a.read_bytes())
    hashed = []
    monkeypatch.setattr(preflight, "file_digest", lambda path: hashed.append(Path(path).name) or file_digest(path))
    train = dataset([record(a, 0, (16, 16)), record(big, 1, (32, 32))])
    val = dataset([record(copy, 0, (16, 16)), record(other, 1, (16, 16)), record(big, 2, (32, 32))])
    findings = check_splits({"training": train, "validation": val}, cache_root=tmp_path / "cache",
                            duplicates_of=("validation", "training"))
    assert findings.duplicates == [(str(copy), str(a)), (str(big), str(big))]
    assert sorted(hashed) == ["a.bmp", "copy_of_a.bmp", "other.bmp"]  # big.bmp's size is unique but for itself
    printed = []
    apply_findings(findings, False, "hint", log=printed.append)
    assert printed[1] == (f"warning: 2 of 3 validation image(s) are also training images (the same file or the same "
                          f"bytes): a leak that inflates the validation metric:\n  {copy} = {a}\n  {big} (listed in "
                          "both)")


# ------------------------------------------------------------------ DataLoader workers


def test_a_bad_image_met_in_a_worker_is_the_main_process_error_and_no_worker_is_left(files):
    data = dataset([record(files["whole.jpg"], 0), record(files["corrupt.png"], 1)])
    assert not check_splits({"training": data}).problems["training"]  # whole at both ends: the check passes it
    with pytest.raises(DataError) as in_main:
        list(inference_loader(data, Preprocess((64, 64)), 1, workers=0))
    with pytest.raises(DataError) as in_worker:
        list(inference_loader(data, Preprocess((64, 64)), 1, workers=1))
    assert str(in_worker.value) == str(in_main.value)
    assert str(in_main.value).startswith(f"{files['corrupt.png']}: cannot decode image")
    assert not multiprocessing.active_children()  # stopped at the error, not at exit
