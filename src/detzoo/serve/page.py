"""The web page (``index.html``, package data): one self-contained file, no CDN, that draws detections on a
canvas in its own JavaScript. The drawing rules are ``visualize.STYLE_RULES`` (palette, line width and font size
as fractions of the image, the label format), injected here when the page is served, and its font is the
DejaVu Sans file ``visualize`` draws with (``/assets/DejaVuSans.ttf``), so the page and the drawn images and
videos of ``detzoo predict`` look the same."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib.resources import files

from ..visualize import STYLE_RULES

PLACEHOLDER = "/*DETZOO_PAGE_CONFIG*/{}"


@lru_cache(maxsize=1)
def page_html() -> str:
    template = files("detzoo.serve").joinpath("index.html").read_text(encoding="utf-8")
    config = json.dumps({"palette": list(STYLE_RULES["palette"]), "style": STYLE_RULES}).replace("</", "<\\/")
    if PLACEHOLDER not in template:  # pragma: no cover - a packaging mistake, caught by the page test
        raise RuntimeError("index.html lacks its config placeholder")
    return template.replace(PLACEHOLDER, config)
