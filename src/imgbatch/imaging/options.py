"""What `compress` is asked for and what it answers: options, result, format vocabulary.

Pure definitions, apart from the pipeline (`compress`) so that module stays about the steps.
"""

from __future__ import annotations

from dataclasses import dataclass

from .autoquality import DEFAULT_TARGET
from .resizing import MAX_SIDE

FORMATS = ("jpeg", "png", "webp", "gif", "avif")
LOSSY = ("jpeg", "webp", "avif")  # the formats with a quality scale
AUTO = "auto"
TARGETS = ("keep", "jpeg", "webp", "png", "avif")
CONTENT_TYPES = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
    "avif": "image/avif",
}
EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp", "gif": "gif", "avif": "avif"}
# Largest side each encoder can write (AVIF: what libavif will decode again).
_MAX_SIDE = {"jpeg": 65_500, "png": 2**31 - 1, "webp": 16_383, "gif": 65_535, "avif": 32_768}


@dataclass(frozen=True)
class CompressOptions:
    """What to make of an image: quality 1..100 or "auto", an output format, a box to fit
    inside (either side optional), a pixel limit, and the score `quality="auto"` aims at."""

    quality: int | str = 50
    format: str = "keep"  # keep | jpeg | webp | png | avif
    max_width: int | None = None
    max_height: int | None = None
    max_pixels: int = 50_000_000
    auto_target: float = DEFAULT_TARGET
    jpeg_fast_path: bool = True  # JPEG -> JPEG through libjpeg-turbo directly (`turbo`)

    def __post_init__(self) -> None:
        if self.quality != AUTO and not (
            isinstance(self.quality, int) and 1 <= self.quality <= 100
        ):
            raise ValueError(f"quality must be 1..100 or auto, not {self.quality!r}")
        if self.format not in TARGETS:
            raise ValueError(f"format must be one of {', '.join(TARGETS)}, not {self.format!r}")
        for side in (self.max_width, self.max_height):
            if side is not None and not 1 <= side <= MAX_SIDE:
                raise ValueError(f"max_width and max_height must be 1..{MAX_SIDE}, not {side}")
        if self.max_pixels < 1:
            raise ValueError("max_pixels must be positive")
        if not 0 < self.auto_target < 1:
            raise ValueError(f"auto_target must be between 0 and 1, not {self.auto_target}")


@dataclass(frozen=True)
class CompressResult:
    """The bytes to store and the facts about them.

    `width`/`height` are the displayed dimensions (after EXIF orientation and any
    resizing), also when the original bytes are kept. `quality` is the quality the
    output was encoded with: None for PNG, GIF and kept originals.
    """

    data: bytes
    format: str
    content_type: str
    extension: str
    width: int
    height: int
    bytes_in: int
    bytes_out: int
    kept_original: bool
    quality: int | None = None
    resized: bool = False
