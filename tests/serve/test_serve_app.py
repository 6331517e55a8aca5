"""The service in-process (Starlette's TestClient): POST /v1/detect in its three input forms with options and
format=mxpi, the other routes, the command line, and every kind of model file. Refusals: test_serve_limits.py."""

from __future__ import annotations

import base64
import json

import pytest
from PIL import Image
from serve_helpers import (
    assert_same_detections,
    client_for,
    encoded,
    reference,
    wait_ready,
)
from starlette.testclient import TestClient

from detzoo.cli import main
from detzoo.models.selection import SelectOptions
from detzoo.predict import Predictor
from detzoo.serve import ServeSettings, create_app
from detzoo.serve.server import default_model, open_address_warning
from detzoo.visualize import PALETTE, STYLE_RULES, font_path

# --------------------------------------------------------------------------- POST /v1/detect


def test_the_three_input_forms_answer_what_the_predictor_says(client, predictor, images):
    data = images[0].read_bytes()
    expected = reference(predictor, images[0])
    assert expected, "the trained model detects something on its training image"
    answers = [client.post("/v1/detect", files={"image": (images[0].name, data, "image/jpeg")}),
               client.post("/v1/detect", content=data, headers={"Content-Type": "image/jpeg"}),
               client.post("/v1/detect", json={"image": base64.b64encode(data).decode()})]
    width, height = Image.open(images[0]).size
    for response in answers:
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == "ssd300_mobilenetv2" and len(body["images"]) == 1
        entry = body["images"][0]
        # sequential requests run alone, exactly as the reference call: the same numbers
        assert entry["detections"] == expected
        assert (entry["width"], entry["height"], entry["image_id"]) == (width, height, 0)
        assert set(body["timing_ms"]) == {"read", "decode", "queue", "inference", "total", "batch_images"}
        assert "inference;dur=" in response.headers["Server-Timing"]
    assert answers[0].json()["images"][0]["image"] == images[0].name


def test_several_images_in_one_request_in_every_form(client, predictor, images):
    # score >= 0.3: far from every score and far fewer detections than the cap, so float32 rounding cannot move
    # a detection across a boundary
    expected = [reference(predictor, path, SelectOptions(score_threshold=0.3)) for path in images]
    assert all(0 < len(detections) < 100 for detections in expected)
    files = [("images", (path.name, path.read_bytes(), "image/jpeg")) for path in images]
    multipart = client.post("/v1/detect", files=files, data={"score_threshold": "0.3"})
    as_json = client.post("/v1/detect", json={"images": [base64.b64encode(p.read_bytes()).decode() for p in images],
                                              "score_threshold": 0.3})
    for response in (multipart, as_json):
        assert response.status_code == 200, response.text
        entries = response.json()["images"]
        assert [e["image_id"] for e in entries] == [0, 1, 2]
        for entry, want in zip(entries, expected):
            # run as one batch of 3 where the reference ran each alone: equal within float32 rounding
            assert_same_detections(entry["detections"], want)
    assert [e["image"] for e in multipart.json()["images"]] == [p.name for p in images]


def test_options_are_the_predictors_selection_options(client, predictor, images):
    names = predictor.class_names
    found = reference(predictor, images[0])
    wanted = found[0]["class_name"]
    cases = [({"score_threshold": 0.2}, SelectOptions(score_threshold=0.2)),
             ({"max_detections": 2, "iou_threshold": 0.3}, SelectOptions(iou_threshold=0.3, max_detections=2)),
             ({"classes": wanted}, SelectOptions.from_names(names, [wanted]))]
    for params, options in cases:
        expected = reference(predictor, images[0], options)
        query = client.post("/v1/detect", params=params, content=images[0].read_bytes(),
                            headers={"Content-Type": "image/jpeg"})
        form = client.post("/v1/detect", data={k: str(v) for k, v in params.items()},
                           files={"image": ("a.jpg", images[0].read_bytes(), "image/jpeg")})
        body = {**params, "classes": [wanted]} if "classes" in params else params
        as_json = client.post("/v1/detect", json={"image": base64.b64encode(images[0].read_bytes()).decode(),
                                                  **body})
        for response in (query, form, as_json):
            assert response.status_code == 200, (params, response.text)
            assert response.json()["images"][0]["detections"] == expected, params
    assert all(d["class_name"] == wanted for d in expected)
    assert len(reference(predictor, images[0], SelectOptions(max_detections=2))) == 2


@pytest.mark.parametrize("params, status, message", [
    ({"score_threshold": "2"}, 422, "score_threshold must be in [0, 1]"),
    ({"score_threshold": "abc"}, 422, "score_threshold must be a number"),
    ({"iou_threshold": "0"}, 422, "iou_threshold must be in (0, 1]"),
    ({"max_detections": "0"}, 422, "max_detections must be at least 1"),
    ({"max_detections": "2.5"}, 422, "max_detections must be an integer"),
    ({"classes": "person,unicorn"}, 422, "unknown class name(s) unicorn"),
    ({"score": "0.5"}, 422, "unknown option(s) score"),
    ({"format": "xml"}, 422, "format must be one of detzoo, mxpi"),
])
def test_bad_option_values_are_refused_in_one_line(client, images, params, status, message):
    response = client.post("/v1/detect", params=params, content=images[0].read_bytes(),
                           headers={"Content-Type": "image/jpeg"})
    assert response.status_code == status and message in response.json()["error"], response.text
    assert "\n" not in response.json()["error"]


def test_an_option_given_twice_is_a_400(client, images):
    response = client.post("/v1/detect", params={"score_threshold": "0.3"},
                           json={"image": base64.b64encode(images[0].read_bytes()).decode(), "score_threshold": 0.4})
    assert response.status_code == 400 and "given twice" in response.json()["error"]
    response = client.post("/v1/detect?max_detections=1&max_detections=2", content=images[0].read_bytes(),
                           headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 400 and "more than once" in response.json()["error"]


def test_format_mxpi_is_the_reference_services_json(client, predictor, images):
    expected = reference(predictor, images[0], SelectOptions(score_threshold=0.1))
    response = client.post("/v1/detect?format=mxpi&score_threshold=0.1", content=images[0].read_bytes(),
                           headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200
    objects = response.json()["MxpiObject"]
    assert len(objects) == len(expected) > 0
    for obj, want in zip(objects, expected):
        assert set(obj) == {"classVec", "x0", "y0", "x1", "y1"}
        assert obj["classVec"] == [{"classId": want["label"], "className": want["class_name"],
                                    "confidence": want["score"], "headerVec": []}]
        assert [obj["x0"], obj["y0"], obj["x1"], obj["y1"]] == want["box"]
    two = client.post("/v1/detect", data={"format": "mxpi"},
                      files=[("images", (p.name, p.read_bytes(), "image/jpeg")) for p in images[:2]])
    assert [set(entry) for entry in two.json()] == [{"MxpiObject"}, {"MxpiObject"}]


def test_exif_orientation_is_applied(client):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 64 wide x 32 high, shown rotated by 90 degrees: 32 x 64
    data = encoded(Image.new("RGB", (64, 32), (200, 30, 30)), "JPEG", exif=exif)
    response = client.post("/v1/detect", content=data, headers={"Content-Type": "image/jpeg"})
    entry = response.json()["images"][0]
    assert (entry["width"], entry["height"]) == (32, 64)


# --------------------------------------------------------------------------- the other routes


def test_models_route_shows_the_model_and_the_limits(client, predictor):
    document = client.get("/v1/models").json()
    model = document["models"][0]
    assert model["name"] == "ssd300_mobilenetv2" and model["class_names"] == predictor.class_names
    assert model["preprocess"] == predictor.preprocess.to_dict()
    assert (model["backend"], model["precision"], model["device"]) == ("pytorch", "fp32", "cpu")
    assert model["selection_defaults"] == {"score_threshold": 0.01, "iou_threshold": 0.6, "max_detections": 100}
    limits = document["limits"]
    assert limits["max_body_bytes"] == 20 * 2**20 and limits["max_images"] == 8
    assert limits["max_pixels"] == 40_000_000 and limits["queue_size"] == 32
    assert limits["image_formats"] == ["JPEG", "MPO", "PNG", "WEBP", "BMP"] and not limits["api_key_required"]
    assert document["palette"] == PALETTE


def test_readiness_waits_for_the_warm_up_and_says_503_while_draining(gated, images):
    predictor, gate = gated
    gate.opened.clear()  # the warm-up's model call is held
    app = create_app(predictor, ServeSettings(), "model.pt")
    with TestClient(app) as client:
        assert gate.calls.acquire(timeout=60)
        assert client.get("/readyz").json() == {"status": "loading"}
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200  # alive all the same
        gate.opened.set()
        wait_ready(client)
        assert client.get("/v2/health/ready").status_code == 200
        app.state.service.draining = True  # what SIGTERM sets (server.DrainingServer.handle_exit)
        assert client.get("/readyz").status_code == 503 and client.get("/readyz").json()["status"] == "draining"
        response = client.post("/v1/detect", content=images[0].read_bytes(), headers={"Content-Type": "image/jpeg"})
        assert response.status_code == 503 and "shutting down" in response.json()["error"]


def test_metrics_count_requests_and_time_the_queue_and_the_model(client, images):
    post = dict(content=images[0].read_bytes(), headers={"Content-Type": "image/jpeg"})
    for _ in range(2):
        assert client.post("/v1/detect", **post).status_code == 200
    client.post("/v1/detect", content=b"nope", headers={"Content-Type": "image/jpeg"})
    client.get("/nowhere")
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'detzoo_requests_total{method="POST",route="/v1/detect",status="200"} 2.0' in text
    assert 'detzoo_requests_total{method="POST",route="/v1/detect",status="415"} 1.0' in text
    assert 'detzoo_requests_total{method="GET",route="(unmatched)",status="404"} 1.0' in text
    assert 'detzoo_request_seconds_count{route="/v1/detect"} 3.0' in text
    assert "detzoo_queue_wait_seconds_count 2.0" in text
    # warm-up calls are not counted: 2 model calls of 1 image
    assert "detzoo_inference_seconds_count 2.0" in text and "detzoo_images_total 2.0" in text
    assert 'detzoo_batch_images_bucket{le="1.0"} 2.0' in text and "detzoo_queue_depth 0.0" in text


def test_kserve_v2_aliases(client, predictor):
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2").json()["name"] == "detzoo"
    metadata = client.get("/v2/models/ssd300_mobilenetv2").json()
    assert metadata["name"] == "ssd300_mobilenetv2" and metadata["platform"] == "pytorch"
    assert metadata["parameters"]["class_names"] == predictor.class_names
    assert client.get("/v2/models/ssd300_mobilenetv2/ready").status_code == 200
    missing = client.get("/v2/models/other")
    assert missing.status_code == 404 and "serves 'ssd300_mobilenetv2'" in missing.json()["error"]


def test_unknown_routes_and_methods_are_json_4xx(client):
    assert client.get("/nowhere").status_code == 404 and "error" in client.get("/nowhere").json()
    assert client.get("/v1/detect").status_code == 405


def test_the_page_is_self_contained_and_uses_the_python_palette(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    config = json.loads(page.split("const CONFIG = ", 1)[1].split(";\n", 1)[0])
    assert config == {"palette": PALETTE, "style": json.loads(json.dumps(STYLE_RULES))}
    for outside in ("http://", "https://", "src=\"//", "@import"):
        assert outside not in page, outside  # no CDN: it works offline
    # the font the page draws labels with is the one visualize draws with, from this server
    assert 'url("/assets/DejaVuSans.ttf")' in page
    font = client.get("/assets/DejaVuSans.ttf")
    assert font.status_code == 200 and font.content == font_path().read_bytes()


# --------------------------------------------------------------------------- command line


def test_serve_without_a_model_says_how_to_get_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["serve"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "run `make demo`" in error
    run = tmp_path / "runs" / "demo" / "run"
    run.mkdir(parents=True)
    (run / "best.pt").write_bytes(b"")
    assert default_model() == run.relative_to(tmp_path) / "best.pt"
    assert main(["serve", "--max-batch", "0"]) == 2
    assert "serve settings must be positive (delay: >= 0): max_batch=0" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt: checkpoint not found" in capsys.readouterr().err


def test_an_open_address_without_a_key_is_warned_about():
    assert "without an API key" in open_address_warning("0.0.0.0", ServeSettings())
    assert open_address_warning("0.0.0.0", ServeSettings(api_key="k")) is None
    assert open_address_warning("127.0.0.1", ServeSettings()) is None


# --------------------------------------------------------------------------- every kind of model file


@pytest.fixture(scope="module")
def model_files(trained_checkpoint, coco128, tmp_path_factory):
    """The trained checkpoint as a run folder, an ONNX file, an ONNX file ending in NMS, and INT8."""
    from detzoo.common.config import DatasetSpec
    from detzoo.data.formats import read_dataset
    from detzoo.export.api import export_checkpoint
    from detzoo.export.quantize import quantize_model

    folder = tmp_path_factory.mktemp("served")
    run = folder / "run"
    run.mkdir()
    (run / "last.pt").symlink_to(trained_checkpoint)
    check = dict(check_images=coco128 / "val2017", check_count=2)
    onnx, _ = export_checkpoint(trained_checkpoint, folder / "model.onnx", **check)
    nms, _ = export_checkpoint(trained_checkpoint, folder / "nms.onnx", in_graph_nms=True, **check)
    int8 = quantize_model(onnx, folder / "model.int8.onnx", read_dataset(DatasetSpec(str(coco128))), 4)
    return {"run folder": run, "onnx": onnx, "onnx nms": nms, "int8": int8}


@pytest.mark.parametrize("kind, backend, precision", [("run folder", "pytorch", "fp32"),
                                                      ("onnx", "onnxruntime", "fp32"),
                                                      ("onnx nms", "onnxruntime", "fp32"),
                                                      ("int8", "onnxruntime", "int8")])
def test_every_model_file_is_served_with_its_backend(model_files, images, kind, backend, precision):
    predictor = Predictor.from_file(model_files[kind], device="cpu")
    with client_for(predictor) as client:
        model = client.get("/v1/models").json()["models"][0]
        assert (model["backend"], model["precision"], model["name"]) == (backend, precision, "ssd300_mobilenetv2")
        response = client.post("/v1/detect", content=images[0].read_bytes(), headers={"Content-Type": "image/jpeg"})
        assert response.json()["images"][0]["detections"] == reference(predictor, images[0])
        if kind == "onnx nms":  # NMS inside the graph: selection can only be made stricter, looser is a 422
            looser = client.post("/v1/detect?score_threshold=0.001", content=images[0].read_bytes(),
                                 headers={"Content-Type": "image/jpeg"})
            assert looser.status_code == 422 and "cannot be made looser" in looser.json()["error"]


def test_the_precision_is_the_served_models(model_files, images, tmp_path, capsys):
    """--precision reaches the Predictor: bf16 where this CPU has it (else the one-line refusal), int8 takes the
    quantized file beside the export, and int8 without one is refused before the server starts."""
    import torch

    from detzoo.common.errors import ConfigError
    from detzoo.common.precision import bf16_supported

    if bf16_supported(torch.device("cpu")):
        predictor = Predictor.from_file(model_files["run folder"], device="cpu", precision="bf16")
        with client_for(predictor) as client:
            assert client.get("/v1/models").json()["models"][0]["precision"] == "bf16"
            response = client.post("/v1/detect", content=images[0].read_bytes(), headers={"Content-Type": "image/jpeg"})
            assert response.status_code == 200
    else:
        with pytest.raises(ConfigError, match="bf16"):
            Predictor.from_file(model_files["run folder"], device="cpu", precision="bf16")
    int8 = Predictor.from_file(model_files["onnx"], device="cpu", precision="int8")
    with client_for(int8) as client:
        assert client.get("/v1/models").json()["models"][0]["precision"] == "int8"
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "last.pt").symlink_to(model_files["run folder"] / "last.pt")
    assert main(["serve", str(lonely), "--precision", "int8"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "int8" in error
