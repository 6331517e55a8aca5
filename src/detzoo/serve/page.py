"""The web page (``index.html``, package data): one self-contained file, no CDN, that draws detections on a
canvas in its own JavaScript. Its colours are ``visualize.PALETTE``, injected here when the page is served,
so that the page and the drawn images of ``detzoo predict`` share one palette."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib.resources import files

from ..visualize import PALETTE

PLACEHOLDER = "/*DETZOO_PAGE_CONFIG*/{}"


@lru_cache(maxsize=1)
def page_html() -> str:
    template = files("detzoo.serve").joinpath("index.html").read_text(encoding="utf-8")
    config = json.dumps({"palette": list(PALETTE)}).replace("</", "<\\/")
    if PLACEHOLDER not in template:  # pragma: no cover - a packaging mistake, caught by the page test
        raise RuntimeError("index.html lacks its config placeholder")
    return template.replace(PLACEHOLDER, config)
