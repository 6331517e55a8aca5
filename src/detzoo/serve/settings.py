"""What an operator sets when starting the service: batching, queue, timeouts, request limits, connection
limits and deadlines (``connections``, ``protocol``), access. ``benchmarks/bench_serve.py`` measured the batching
defaults, ``benchmarks/bench_hostile_clients.py`` the deadlines and the connection cap (docs/design.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..common.errors import ConfigError

# Decoded with Pillow, nothing else (MPO is how Pillow names the JPEG files of many phone cameras).
IMAGE_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "BMP")
API_KEY_ENV = "DETZOO_API_KEY"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeSettings:
    max_batch: int = 8  # images per model call
    max_batch_delay_ms: float = 5.0  # how long the worker waits for more images after the first
    queue_size: int = 32  # requests waiting for the model; one more is answered 503 at once
    timeout_s: float = 30.0  # a request still unanswered after this gets 504
    max_body_bytes: int = 20 * 1024 * 1024
    max_images: int = 8  # per request
    max_pixels: int = 40_000_000  # per image, read from the header before decoding
    decode_threads: int = 2  # images decoded at once (bounds the memory of decoded images too)
    header_timeout_s: float = 10.0  # a request's line and headers must arrive within this (408, then closed)
    body_timeout_s: float = 30.0  # longest pause in a request body, or in reading the answer (408 / closed)
    keep_alive_s: float = 5.0  # an idle connection between requests is closed after this
    max_connections: int | None = None  # open connections served; None: sized from the open-file limit
    max_header_bytes: int = 16 * 1024  # request line + headers (431 above; 414 for the line alone)
    max_headers: int = 100  # header fields per request (431 above)
    api_key: str | None = None
    cors_origins: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        positive = {"max_batch": self.max_batch, "queue_size": self.queue_size, "timeout_s": self.timeout_s,
                    "max_body_bytes": self.max_body_bytes, "max_images": self.max_images,
                    "max_pixels": self.max_pixels, "decode_threads": self.decode_threads,
                    "header_timeout_s": self.header_timeout_s, "body_timeout_s": self.body_timeout_s,
                    "keep_alive_s": self.keep_alive_s, "max_header_bytes": self.max_header_bytes,
                    "max_headers": self.max_headers}
        if self.max_connections is not None:
            positive["max_connections"] = self.max_connections
        bad = [f"{name}={value}" for name, value in positive.items() if value <= 0]
        if self.max_batch_delay_ms < 0:
            bad.append(f"max_batch_delay_ms={self.max_batch_delay_ms}")
        if bad:
            raise ConfigError(f"serve settings must be positive (delay: >= 0): {', '.join(bad)}")
        if self.api_key == "":
            raise ConfigError(f"the API key is empty (--api-key or ${API_KEY_ENV}); give a key or none")

    def limits(self) -> dict:
        """The limits in force, as ``GET /v1/models`` shows them (never the key itself)."""
        shown = asdict(self)
        shown.pop("api_key")
        shown.pop("cors_origins")
        return {**shown, "image_formats": list(IMAGE_FORMATS), "api_key_required": self.api_key is not None,
                "cors_origins": list(self.cors_origins)}
