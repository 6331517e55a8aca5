"""Small things that cost users an hour (issue 9, item 8): the demo deletes only its own run, TXT lists find
their image root, quantize takes the evaluation data's image root, and paths with spaces, annotation paths
outside the image root, an empty prediction folder and an unknown device are one clear line each."""

import json
import shutil

import pytest
from PIL import Image

from detzoo.cli import _eval_spec, build_parser, cmd_quantize, main
from detzoo.common.checkpoints import atomic_save, model_payload
from detzoo.common.config import DatasetSpec, load_config
from detzoo.data.formats import read_dataset
from detzoo.data.records import DataError
from detzoo.models.weights import build_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained ssd300_mobilenetv2 checkpoint with two classes (only loading matters here)."""
    config = load_config("ssd300_mobilenetv2", ["model.input_size=96"])
    path = tmp_path_factory.mktemp("model") / "model.pt"
    atomic_save(model_payload(build_model(config, 2), config.to_dict(), ["a", "b"]), path)
    return path


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_demo_refuses_a_run_folder_it_did_not_make(tmp_path, capsys):
    mine = tmp_path / "run"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own work")
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 2
    assert f"{mine} exists and was not made by detzoo demo" in _one_line_error(capsys)
    assert (mine / "notes.txt").read_text() == "my own work"
    assert not (tmp_path / "data").exists()  # refused before any work


def _images(folder, *names):
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48)).save(folder / name)


def test_txt_list_guesses_the_root_its_paths_exist_under(tmp_path):
    """DATASET/list.txt reading images/x.jpg: the root is DATASET (not DATASET/images, which also exists)."""
    _images(tmp_path, "images/x.jpg", "images/y.jpg")
    (tmp_path / "list.txt").write_text("images/x.jpg 1,2,30,40,1\nimages/y.jpg 5,5,20,20,2\n")
    data = read_dataset(DatasetSpec(path=str(tmp_path / "list.txt")))
    assert [r.path for r in data.records] == [tmp_path / "images/x.jpg", tmp_path / "images/y.jpg"]
    (tmp_path / "plain.txt").write_text("x.jpg 1,2,30,40,1\n")  # the other natural layout still works
    assert read_dataset(DatasetSpec(path=str(tmp_path / "plain.txt"))).records[0].path == tmp_path / "images/x.jpg"


def test_quantize_takes_the_eval_data_image_root(tmp_path):
    _images(tmp_path / "pictures", "x.jpg")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "val.txt").write_text("x.jpg 1,2,30,40,1\n")
    args = build_parser().parse_args(["quantize", "m.onnx", "--data", str(tmp_path / "calib"), "--eval-data",
                                      str(tmp_path / "lists" / "val.txt"), "--eval-images", str(tmp_path / "pictures")])
    assert args.func is cmd_quantize
    data = read_dataset(_eval_spec(args), ["a"])
    assert [r.path for r in data.records] == [tmp_path / "pictures" / "x.jpg"]


def test_txt_paths_with_spaces_are_one_line(tmp_path, capsys):
    _images(tmp_path, "my photo.jpg")
    (tmp_path / "list.txt").write_text("my photo.jpg 1,2,30,40,1\n")
    assert main(["convert", "--data", str(tmp_path / "list.txt"), "--to", "coco", "--out", str(tmp_path / "o.json")]) == 2
    assert "list.txt:1: 'my photo.jpg' - the TXT format separates fields with spaces" in _one_line_error(capsys)
    # and writing one: a VOC image with a space in its name cannot go into a TXT list
    voc = tmp_path / "voc"
    voc.mkdir()
    shutil.copy(tmp_path / "my photo.jpg", voc)
    (voc / "my photo.xml").write_text("<annotation><filename>my photo.jpg</filename><object><name>a</name><bndbox>"
                                      "<xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object>"
                                      "</annotation>")
    out = tmp_path / "out.txt"
    assert main(["convert", "--data", str(voc), "--to", "txt", "--out", str(out)]) == 2
    assert "my photo.jpg: the TXT format separates fields with spaces" in _one_line_error(capsys)
    assert not out.exists()  # nothing half-written


@pytest.mark.parametrize("bad_path", ["/etc/hostname", "../outside.jpg", "sub/../../outside.jpg", "C:\\data\\a.jpg"])
def test_annotation_paths_outside_the_image_root_are_refused(tmp_path, bad_path):
    _images(tmp_path, "a.jpg")
    message = rf"image path '{bad_path}' must be relative to the image root".replace("\\", "\\\\")
    (tmp_path / "list.txt").write_text(f"{bad_path} 1,2,30,40,1\n")
    with pytest.raises(DataError, match=rf"list.txt:1: {message}"):
        read_dataset(DatasetSpec(path=str(tmp_path / "list.txt"), images=str(tmp_path)))
    (tmp_path / "instances_a.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": bad_path, "width": 64, "height": 48}], "annotations": [],
        "categories": [{"id": 1, "name": "a"}]}))
    with pytest.raises(DataError, match=rf"image id 1 .*: {message}"):
        read_dataset(DatasetSpec(path=str(tmp_path / "instances_a.json"), images=str(tmp_path)))
    (tmp_path / "a.xml").write_text(f"<annotation><filename>{bad_path}</filename></annotation>")
    with pytest.raises(DataError, match=rf"a.xml: {message}"):
        read_dataset(DatasetSpec(path=str(tmp_path), format="voc"), ["a"])


def test_predict_on_an_empty_folder_is_one_line(tmp_path, checkpoint, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    assert main(["predict", str(checkpoint), str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert f"{tmp_path / 'empty'}: no images in this folder" in _one_line_error(capsys)


@pytest.mark.parametrize("device, message", [("gpu0", "unknown device 'gpu0'"),
                                             ("meta", "device 'meta' is not supported")])
def test_invalid_device_is_one_line(tmp_path, checkpoint, capsys, device, message):
    _images(tmp_path, "a.jpg")
    assert main(["predict", str(checkpoint), str(tmp_path / "a.jpg"), "--device", device]) == 2
    assert message in _one_line_error(capsys)
