"""A ``POST /v1/detect`` body -> the uploaded images (as bytes) and the raw options, in the three forms the
service takes: a multipart form (files + option fields), a raw ``image/*`` body, or JSON with base64 images
(``{"image": B64}`` or ``{"images": [B64, ...]}``, options as keys). Options may also be query parameters.
No URL input and no pickled input: only image bytes are accepted. The body's size is limited by
``middleware.BodyLimit`` while it arrives. Every form is held in memory, multipart uploads too (Starlette
would put a file over 1 MB on disk: one more open file per upload, which the connection cap's open-file
budget, ``connections.FILES_PER_CONNECTION``, does not allow)."""

from __future__ import annotations

import base64
import binascii
import json
from contextlib import aclosing

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from .errors import RequestError
from .images import Upload
from .options import OPTION_NAMES, merge_options
from .settings import ServeSettings

RAW_TYPES = ("application/octet-stream",)  # besides image/*
OPTION_FIELD_BYTES = 64 * 1024  # a multipart option field (a class list is the longest)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def query_options(request: Request) -> dict:
    items = request.query_params.multi_items()
    names = [name for name, _ in items]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise RequestError(400, f"option(s) {', '.join(twice)} given more than once in the query string")
    return dict(items)


def check_count(count: int, settings: ServeSettings) -> None:
    if count == 0:
        raise RequestError(400, "no image in the request (send a multipart file, an image/* body, or JSON "
                                "with 'image' or 'images' in base64)")
    if count > settings.max_images:
        raise RequestError(413, f"too many images: {count}, at most {settings.max_images} per request")


async def read_multipart(request: Request, settings: ServeSettings) -> tuple[list[Upload], dict]:
    try:
        async with aclosing(request.stream()) as stream:
            parser = MultiPartParser(request.headers, stream, max_files=settings.max_images,
                                     max_fields=len(OPTION_NAMES), max_part_size=OPTION_FIELD_BYTES)
            parser.spool_max_size = settings.max_body_bytes  # in memory: the body limit bounds it
            form = await parser.parse()
    except MultiPartException as exc:
        if exc.message.startswith("Too many files"):
            raise RequestError(413, f"too many images: at most {settings.max_images} per request") from None
        raise RequestError(400, f"bad multipart body: {exc.message}") from None
    uploads, fields = [], {}
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                uploads.append(Upload(value.filename or f"image {len(uploads)}", await value.read()))
            elif name in fields:
                raise RequestError(400, f"option '{name}' is given twice in the form")
            else:
                fields[name] = value
    finally:
        await form.close()
    return uploads, fields


def parse_json(body: bytes, settings: ServeSettings) -> tuple[list[Upload], dict]:
    """The JSON form (runs in a worker thread: parsing and base64-decoding megabytes is CPU work)."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"body is not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise RequestError(400, "JSON body must be an object with 'image' or 'images'")
    if "image" in document and "images" in document:
        raise RequestError(400, "give either 'image' or 'images', not both")
    images = [document.pop("image")] if "image" in document else document.pop("images", [])
    if not isinstance(images, list):
        raise RequestError(400, "'images' must be a list of base64 strings")
    check_count(len(images), settings)
    uploads = []
    for index, encoded in enumerate(images):
        name = f"image {index}"
        if not isinstance(encoded, str):
            raise RequestError(400, f"{name}: must be a base64 string, got {type(encoded).__name__}")
        if encoded.startswith("data:"):  # a data URL, as browsers make them
            encoded = encoded.partition(",")[2]
        try:
            uploads.append(Upload(name, base64.b64decode(encoded, validate=True)))
        except (binascii.Error, ValueError):
            raise RequestError(400, f"{name}: not valid base64") from None
    return uploads, document


async def read_images(request: Request, settings: ServeSettings, run_sync) -> tuple[list[Upload], dict]:
    """(uploads, raw options merged from the query string and the body). ``run_sync(fn, *args)`` runs CPU
    work off the event loop."""
    query = query_options(request)
    kind = media_type(request)
    if kind == "multipart/form-data":
        uploads, body_options = await read_multipart(request, settings)
    elif kind.startswith("image/") or kind in RAW_TYPES:
        uploads, body_options = [Upload("image 0", await request.body())], {}
    elif kind == "application/json":
        uploads, body_options = await run_sync(parse_json, await request.body(), settings)
    else:
        raise RequestError(415, f"unsupported Content-Type '{kind or '(none)'}': send multipart/form-data, "
                                "an image/* body or application/json with base64 images")
    check_count(len(uploads), settings)
    return uploads, merge_options(query, body_options)
