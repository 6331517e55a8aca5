"""``detzoo predict`` on images (issue 11): one source argument (file, folder, --recursive, glob, any-case
suffixes incl. webp/tif/bmp; bad sources in one line), outputs that never overwrite each other, COCO results
for the run, YOLO labels, --no-draw, selection settings at predict time, and drawings sized to the image."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from detzoo.cli import main
from detzoo.common.config import DatasetSpec
from detzoo.common.structures import Detections
from detzoo.data.formats import read_dataset
from detzoo.models.selection import SelectOptions
from detzoo.predict import Predictor, list_images
from detzoo.predict.outputs import output_names
from detzoo.predict.sources import ImageSource, VideoSource, resolve_source
from detzoo.visualize import class_color, draw, drawing_style, font, text_color
from predict_helpers import CLASSES, SCORE, tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


@pytest.fixture(scope="module")
def photos_folder(tmp_path_factory, coco128):
    """a.jpg and a.PNG (the same stem), sub/b.WEBP, sub/deeper/c.TIF, d.bmp, and a text file."""
    root = tmp_path_factory.mktemp("photos")
    sources = sorted((coco128 / "val2017").glob("*.jpg"))[:4]
    (root / "sub" / "deeper").mkdir(parents=True)
    shutil.copy(sources[0], root / "a.jpg")
    Image.open(sources[1]).convert("RGB").save(root / "a.PNG")
    Image.open(sources[2]).convert("RGB").save(root / "sub" / "b.WEBP")
    Image.open(sources[3]).convert("RGB").save(root / "sub" / "deeper" / "c.TIF")
    Image.open(sources[3]).convert("RGB").resize((200, 150)).save(root / "d.bmp")
    (root / "notes.txt").write_text("not an image")
    return root


def test_source_argument_kinds(photos_folder, tmp_path):
    flat = resolve_source(str(photos_folder))
    assert isinstance(flat, ImageSource) and [p.name for p in flat.paths] == ["a.PNG", "a.jpg", "d.bmp"]
    assert list_images(photos_folder) == flat.paths  # the Python API lists folders the same way
    deep = resolve_source(str(photos_folder), recursive=True)
    assert sorted(p.name for p in deep.paths) == ["a.PNG", "a.jpg", "b.WEBP", "c.TIF", "d.bmp"]
    glob = resolve_source(str(photos_folder / "**" / "*.[wWtT]*"))
    assert [p.name for p in glob.paths] == ["b.WEBP", "c.TIF"] and glob.root == photos_folder
    assert resolve_source(str(photos_folder / "a.PNG")).paths == [photos_folder / "a.PNG"]
    video = tmp_path / "Clip.MOV"
    video.write_bytes(b"")
    assert resolve_source(str(video)) == VideoSource(str(video), "Clip", live=False, reconnect=False)
    camera = resolve_source("0")
    assert camera.name == "camera0" and camera.live and camera.reconnect
    stream = resolve_source("rtsp://127.0.0.1:8554/cam1")
    assert (stream.name, stream.live, stream.reconnect) == ("cam1", True, True)
    assert not resolve_source("https://example.invalid/a.mp4", live=False).live


@pytest.mark.parametrize("source, message", [
    ("missing/photo.jpg", "no such file or folder"),
    ("notes.txt", "not an image or video file by its suffix"),
    ("nested", "no images in this folder"),
    ("*.gif", "nothing matches"),
    ("ftp://host/x.mp4", "unsupported stream scheme"),
])
def test_bad_sources_are_one_line(checkpoint, coco128, tmp_path, capsys, monkeypatch, source, message):
    (tmp_path / "nested" / "inner").mkdir(parents=True)
    shutil.copy(sorted((coco128 / "val2017").glob("*.jpg"))[0], tmp_path / "nested" / "inner" / "e.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    monkeypatch.chdir(tmp_path)
    assert main(["predict", str(checkpoint), source, "--out", "never"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and source in err
    assert not (tmp_path / "never").exists()
    if source == "nested":
        assert "add --recursive" in err


def test_output_names_never_collide(tmp_path):
    paths = [tmp_path / n for n in ("a.jpg", "a.png", "b.jpg", "sub/a.jpg", "detections.jpg", "B.PNG")]
    names = {p.relative_to(tmp_path).as_posix(): n.as_posix() for p, n in output_names(paths, tmp_path).items()}
    assert names == {"a.jpg": "a.jpg", "a.png": "a.png", "b.jpg": "b.jpg", "B.PNG": "B.PNG", "sub/a.jpg": "sub/a",
                     "detections.jpg": "detections.jpg"}


def test_image_run_outputs(checkpoint, photos_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(photos_folder), "--recursive", "--out", str(out), "--save-txt",
                 "--score", SCORE, "--max-det", "4", "--workers", "0"]) == 0
    assert "5 of 5 image(s)" in capsys.readouterr().out
    per_image = {name: json.loads((out / name).read_text())
                 for name in ("a.jpg.json", "a.PNG.json", "sub/b.json", "sub/deeper/c.json", "d.json")}
    assert per_image["a.jpg.json"]["image"].endswith("a.jpg") and per_image["a.PNG.json"]["image"].endswith("a.PNG")
    assert per_image["a.jpg.json"]["detections"] != per_image["a.PNG.json"]["detections"]  # different photos
    for name in ("a.jpg", "a.PNG", "sub/b.WEBP", "sub/deeper/c.TIF", "d.bmp"):  # drawn, same name and format
        with Image.open(out / name) as drawn, Image.open(photos_folder / name) as source:
            assert drawn.size == source.size and drawn.format == source.format

    # one COCO results file for the run: image ids as in the per-image files, category = class index + 1
    coco = json.loads((out / "detections.json").read_text())
    by_image = {r["image_id"]: r for r in per_image.values()}
    assert len(coco) == sum(len(r["detections"]) for r in per_image.values()) > 0
    for entry in coco:
        assert entry["category_id"] - 1 in range(len(CLASSES)) and entry["image_id"] in by_image

    # YOLO labels that detzoo's own YOLO reader takes back: the same boxes (6 decimals of a normalised
    # coordinate are within 0.0005 px of these sizes; the JSON rounds boxes to 0.01 px)
    assert (out / "labels" / "classes.txt").read_text().split() == CLASSES
    yolo = tmp_path / "yolo"
    (yolo / "images").mkdir(parents=True)
    shutil.copy(photos_folder / "d.bmp", yolo / "images" / "d.bmp")
    (yolo / "labels").mkdir()
    shutil.copy(out / "labels" / "d.txt", yolo / "labels" / "d.txt")
    shutil.copy(out / "labels" / "classes.txt", yolo / "classes.txt")
    record = read_dataset(DatasetSpec(str(yolo), format="yolo")).records[0]
    expected = per_image["d.json"]["detections"]
    assert [CLASSES[i] for i in record.labels] == [d["class_name"] for d in expected]
    np.testing.assert_allclose(record.boxes, [d["box"] for d in expected], atol=0.01)


def test_no_draw_and_selection_settings_reach_the_model(checkpoint, photos_folder, tmp_path):
    out = tmp_path / "out"
    image = photos_folder / "a.jpg"
    assert main(["predict", str(checkpoint), str(image), "--out", str(out), "--no-draw", "--score", SCORE,
                 "--iou", "0.3", "--max-det", "3", "--classes", "dog,car", "--workers", "0"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "detections.json"]
    written = json.loads((out / "a.json").read_text())["detections"]
    predictor = Predictor.from_file(checkpoint, device="cpu")
    options = SelectOptions.from_names(CLASSES, ["dog", "car"], score_threshold=float(SCORE), iou_threshold=0.3,
                                       max_detections=3)
    (expected,) = predictor.predict_paths([image], options)
    assert written == expected.to_dict()["detections"] and len(written) == 3
    assert {d["class_name"] for d in written} <= {"dog", "car"}


def test_drawing_is_sized_to_the_image_and_coloured_per_class():
    small, large = drawing_style(320, 240), drawing_style(3840, 2160)
    assert small.line_width == 2 and large.line_width > small.line_width
    assert 11 <= small.font_size < large.font_size and large.font_size > 80  # legible on a 4K frame
    assert font(20).getname()[0] == "DejaVu Sans"  # TrueType, not the bitmap default
    assert text_color("#ffe119") == "#000000" and text_color("#000075") == "#ffffff"

    image = np.full((240, 320, 3), 128, np.uint8)
    det = Detections(torch.tensor([[0.0, 0.0, 100.0, 80.0], [200.0, 100.0, 319.0, 239.0]]), torch.tensor([0.9, 0.5]),
                     torch.tensor([0, 2]), CLASSES)
    drawn = draw(image, det)
    assert drawn is not image and (image == 128).all()  # the frame itself is left alone
    rgb = [tuple(int(class_color(label)[i: i + 2], 16) for i in (1, 3, 5)) for label in (0, 2)]
    assert tuple(drawn[120, 200]) == rgb[1]  # the left edge of the second box, in its class colour
    label_rows = drawn[:small.font_size, :40]
    assert (label_rows == rgb[0]).all(axis=-1).mean() > 0.3  # the top box's label background, inside the image
    empty = Detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), CLASSES)
    assert draw(image, empty) is image
