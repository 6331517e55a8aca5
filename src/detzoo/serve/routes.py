"""The HTTP routes. ``POST /v1/detect`` reads the images (``inputs``), checks and decodes them off the event
loop (``images``), waits for the batch worker (``batching``) and answers in detzoo's JSON (``detzoo predict``'s
schema plus the image size and the time per stage) or in the reference's ``MxpiObject`` JSON
(``format=mxpi``). ``POST /v1/track?session=ID`` does the same for one video frame of a client and gives the
detections to that client's tracker (``tracking``): the answer's detections carry ``track_id``s. The KServe
V2 health and metadata routes are aliases of ours."""

from __future__ import annotations

import time

import anyio
import torch
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..common.structures import Detections
from ..visualize import font_path
from .batching import QueueFull
from .errors import RequestError
from .images import Upload, decode_upload
from .inputs import read_images
from .options import parse_options
from .page import page_html
from .service import Service


def _service(request: Request) -> Service:
    return request.app.state.service


def mxpi_objects(det: Detections) -> dict:
    """The reference service's answer for one image: classId is the label index (0..K-1)."""
    return {"MxpiObject": [
        {"classVec": [{"classId": label, "className": det.class_names[label], "confidence": round(score, 5),
                       "headerVec": []}],
         "x0": round(x0, 2), "y0": round(y0, 2), "x1": round(x1, 2), "y1": round(y1, 2)}
        for (x0, y0, x1, y1), score, label in zip(det.boxes.tolist(), det.scores.tolist(), det.labels.tolist())]}


def detzoo_answer(service: Service, uploads: list[Upload], images, detections: list[Detections],
                  timing_ms: dict) -> dict:
    entries = []
    for upload, image, det in zip(uploads, images, detections):
        entry = det.to_dict()
        entry.update(image=upload.name, width=int(image.shape[-1]), height=int(image.shape[-2]))
        entries.append(entry)
    return {"model": service.name, "images": entries, "timing_ms": timing_ms}


def _decode_all(uploads: list[Upload], max_pixels: int):
    return [decode_upload(upload, max_pixels) for upload in uploads]


async def _detect(request: Request, service: Service, adjust=None) -> tuple:
    """What /v1/detect and /v1/track share: refusals before the body is read, the images and options, decoding
    off the event loop, the batch queue. ``adjust(uploads, raw_options)`` may check and change the raw options.
    Returns (uploads, images, detections, job, timing_ms, answer format)."""
    started = time.perf_counter()
    if service.draining:
        raise RequestError(503, "server is shutting down; send the request to another replica",
                           {"Retry-After": "1"})
    if service.queue.full:  # refuse before reading the body: overload costs the server as little as possible
        raise QueueFull(service.settings.queue_size)

    async def run_sync(fn, *args):
        return await anyio.to_thread.run_sync(fn, *args, limiter=service.decode_limiter)

    uploads, raw_options = await read_images(request, service.settings, run_sync)
    if adjust is not None:
        raw_options = adjust(uploads, raw_options)
    options, answer_format = parse_options(raw_options, service.predictor.class_names)
    read_done = time.perf_counter()
    images = await run_sync(_decode_all, uploads, service.settings.max_pixels)
    decoded = time.perf_counter()
    detections, job = await service.queue.submit(images, options, service.settings.timeout_s)
    timing_ms = {"read": (read_done - started) * 1000, "decode": (decoded - read_done) * 1000,
                 "queue": job.queue_wait_s * 1000, "inference": job.inference_s * 1000,
                 "total": (time.perf_counter() - started) * 1000}
    timing_ms = {stage: round(ms, 2) for stage, ms in timing_ms.items()}
    return uploads, images, detections, job, timing_ms, answer_format


def _timing_headers(timing_ms: dict, job) -> dict:
    return {"Server-Timing": ", ".join(f"{stage};dur={ms}" for stage, ms in timing_ms.items()),
            "X-Batch-Images": str(job.batch_images)}


async def detect(request: Request) -> Response:
    service = _service(request)
    uploads, images, detections, job, timing_ms, answer_format = await _detect(request, service)
    headers = _timing_headers(timing_ms, job)
    if answer_format == "mxpi":
        answers = [mxpi_objects(det) for det in detections]
        return JSONResponse(answers[0] if len(answers) == 1 else answers, headers=headers)
    return JSONResponse(detzoo_answer(service, uploads, images, detections, {**timing_ms,
                                                                            "batch_images": job.batch_images}),
                        headers=headers)


async def track(request: Request) -> Response:
    """One frame of a client's video (``?session=ID``): detected like /v1/detect, then given to the session's
    ByteTrack tracker; the answer holds the tracked detections, each with its ``track_id``."""
    service = _service(request)
    sessions = service.track_sessions
    low_score = sessions.settings.low_score

    def adjust(uploads, raw: dict) -> dict:
        if len(uploads) != 1:
            raise RequestError(400, f"/v1/track takes one frame per request, got {len(uploads)} images")
        raw = {name: value for name, value in raw.items() if name != "session"}
        if raw.get("format", "detzoo") != "detzoo":
            raise RequestError(422, "/v1/track answers in detzoo's format only")
        raw.setdefault("score_threshold", low_score)  # the tracker's second association needs the low scores
        return raw

    session_id = request.query_params.get("session")
    session = sessions.begin(session_id)
    try:
        uploads, images, detections, job, timing_ms, _ = await _detect(request, service, adjust)
        det = detections[0]
        session.frame += 1
        ids = session.tracker.update(det.boxes.numpy(), det.scores.numpy(), session.frame)
    finally:
        sessions.end(session)
    keep = torch.from_numpy(ids >= 0)
    tracked = det.select(keep)
    tracked.track_ids = torch.from_numpy(ids)[keep]
    answer = detzoo_answer(service, uploads, images, [tracked], {**timing_ms, "batch_images": job.batch_images})
    answer.update(session=session_id, frame=session.frame)
    return JSONResponse(answer, headers=_timing_headers(timing_ms, job))


async def end_track(request: Request) -> Response:
    """``DELETE /v1/track?session=ID``: forget the session's tracker (the page does it when its webcam stops)."""
    session_id = request.query_params.get("session", "")
    if not _service(request).track_sessions.drop(session_id):
        raise RequestError(404, f"no tracking session '{session_id}'")
    return Response(status_code=204)


async def page(request: Request) -> Response:
    return HTMLResponse(page_html())


async def page_font(request: Request) -> Response:
    return FileResponse(font_path(), media_type="font/ttf", headers={"Cache-Control": "max-age=86400"})


async def models(request: Request) -> Response:
    return JSONResponse(_service(request).models_document())


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "alive"})


async def readyz(request: Request) -> Response:
    service = _service(request)
    if service.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    if not service.ready:
        return JSONResponse({"status": "loading"}, status_code=503)
    return JSONResponse({"status": "ready"})


async def metrics(request: Request) -> Response:
    service = _service(request)
    if service.queue is not None:
        service.metrics.queue_depth.set(service.queue.depth)
    return Response(service.metrics.render(), media_type=service.metrics.content_type)


# KServe V2 (Open Inference Protocol): health and metadata as aliases; inference stays on /v1/detect.


async def kserve_server(request: Request) -> Response:
    from .. import __version__

    return JSONResponse({"name": "detzoo", "version": __version__, "extensions": []})


def _kserve_model(request: Request) -> Service:
    service = _service(request)
    if request.path_params["name"] != service.name:
        raise RequestError(404, f"unknown model '{request.path_params['name']}'; this server serves "
                                f"'{service.name}'")
    return service


async def kserve_model(request: Request) -> Response:
    service = _kserve_model(request)
    info = service.info
    return JSONResponse({"name": info["name"], "versions": [], "platform": info["backend"],
                         "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1]}],
                         "outputs": [{"name": "detections", "datatype": "BYTES", "shape": [-1]}],
                         "parameters": {"class_names": info["class_names"], "precision": info["precision"],
                                        "detect_route": "/v1/detect"}})


async def kserve_model_ready(request: Request) -> Response:
    _kserve_model(request)
    return await readyz(request)


ROUTES = [
    Route("/", page, methods=["GET"]),
    Route("/assets/DejaVuSans.ttf", page_font, methods=["GET"]),
    Route("/v1/detect", detect, methods=["POST"]),
    Route("/v1/track", track, methods=["POST"]),
    Route("/v1/track", end_track, methods=["DELETE"]),
    Route("/v1/models", models, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/v2", kserve_server, methods=["GET"]),
    Route("/v2/health/live", healthz, methods=["GET"]),
    Route("/v2/health/ready", readyz, methods=["GET"]),
    Route("/v2/models/{name}", kserve_model, methods=["GET"]),
    Route("/v2/models/{name}/ready", kserve_model_ready, methods=["GET"]),
]
