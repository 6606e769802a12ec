"""What a JPEG's header says, read without decoding: the facts the fast path's rule needs.

Pure, no I/O and no codec. `turbo` decides from these facts whether libjpeg-turbo may
re-encode a JPEG directly (coefficients or planes) or whether the general Pillow path
must, and splices the ICC profile segments found here into the fast path's output
unchanged. Anything this parser does not understand is reported as such, so the rule
can send the image down the general path, which has its own checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# Frame types: 0xC0 baseline, 0xC1 extended sequential, 0xC2 progressive (Huffman);
# the others are lossless, hierarchical or arithmetic-coded.
SOF_MARKERS = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
_ICC_TAG = b"ICC_PROFILE\x00"
_EXIF_TAG = b"Exif\x00\x00"
_ZIGZAG = (
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5,
    12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
    35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
    58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
)  # fmt: skip
UNREADABLE = -1  # orientation when an EXIF block is there but cannot be read


@dataclass(frozen=True)
class Component:
    ident: int
    h: int  # horizontal sampling factor
    v: int  # vertical sampling factor
    table: int  # quantization table slot


@dataclass(frozen=True)
class JpegFacts:
    """The header up to the first scan. `orientation` is None when no EXIF says one,
    `UNREADABLE` when EXIF is there but unreadable; `tables` are in natural order."""

    frame: int  # the SOF marker (0xC0...)
    precision: int
    width: int
    height: int
    components: tuple[Component, ...]
    adobe_transform: int | None = None  # APP14 "Adobe" colour transform flag
    jfif: bool = False
    orientation: int | None = None
    icc_segments: tuple[bytes, ...] = ()  # whole APP2 ICC_PROFILE segments, marker included
    tables: dict[int, tuple[int, ...]] = field(default_factory=dict)

    @property
    def icc_profile(self) -> bytes | None:
        """The profile reassembled from its chunks (in sequence order), else None."""
        if not self.icc_segments:
            return None
        chunks = sorted((seg[4 + 12], seg[4 + 14 :]) for seg in self.icc_segments)
        return b"".join(chunk for _, chunk in chunks)

    @property
    def icc_space(self) -> str | None:
        """The profile's data colour space ("RGB", "GRAY", "CMYK"…), else None."""
        icc = self.icc_profile
        return icc[16:20].decode("latin-1").strip().upper() if icc and len(icc) >= 20 else None


class NotParsed(ValueError):
    """The bytes are not a JPEG header this parser understands."""


def parse(data: bytes) -> JpegFacts:
    """Read the markers from SOI to the first SOS. Raises `NotParsed` on anything odd."""
    if not data.startswith(b"\xff\xd8"):
        raise NotParsed("no SOI marker")
    pos, frame = 2, None
    facts: dict[str, Any] = {"icc_segments": [], "tables": {}}
    while True:
        if pos + 4 > len(data) or data[pos] != 0xFF:
            raise NotParsed("header ends before a scan")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan
            break
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD9:
            raise NotParsed(f"marker 0x{marker:02X} in the header")
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        end = pos + 2 + length
        if length < 2 or end > len(data):
            raise NotParsed("a segment runs past the end")
        body = data[pos + 4 : end]
        if marker in SOF_MARKERS:
            if frame is not None:
                raise NotParsed("two frame headers")
            frame = _frame(marker, body)
        elif marker == 0xDB:
            facts["tables"].update(_tables(body))
        elif marker == 0xE0 and body.startswith(b"JFIF\x00"):
            facts["jfif"] = True
        elif marker == 0xE1 and body.startswith(_EXIF_TAG):
            orientation = _orientation(body[len(_EXIF_TAG) :])
            if orientation is not None and facts.get("orientation") is None:
                facts["orientation"] = orientation
            elif orientation is not None and orientation != facts["orientation"]:
                facts["orientation"] = UNREADABLE  # two EXIF blocks that disagree
        elif marker == 0xE2 and body.startswith(_ICC_TAG) and len(body) >= 14:
            facts["icc_segments"].append(data[pos:end])
        elif marker == 0xEE and body.startswith(b"Adobe") and len(body) >= 12:
            facts["adobe_transform"] = body[11]
        pos = end
    if frame is None:
        raise NotParsed("no frame header before the scan")
    marker, precision, height, width, components = frame
    return JpegFacts(
        frame=marker,
        precision=precision,
        width=width,
        height=height,
        components=components,
        adobe_transform=facts.get("adobe_transform"),
        jfif=facts.get("jfif", False),
        orientation=facts.get("orientation"),
        icc_segments=tuple(facts["icc_segments"]),
        tables=facts["tables"],
    )


def _frame(marker: int, body: bytes) -> tuple[int, int, int, int, tuple[Component, ...]]:
    if len(body) < 6:
        raise NotParsed("short frame header")
    count = body[5]
    if len(body) < 6 + 3 * count:
        raise NotParsed("short frame header")
    components = tuple(
        Component(body[i], body[i + 1] >> 4, body[i + 1] & 15, body[i + 2])
        for i in range(6, 6 + 3 * count, 3)
    )
    height, width = int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big")
    return marker, body[0], height, width, components


def _tables(body: bytes) -> dict[int, tuple[int, ...]]:
    """DQT: one or more tables, 8- or 16-bit, stored in zigzag order."""
    tables, pos = {}, 0
    while pos < len(body):
        wide, slot = body[pos] >> 4, body[pos] & 15
        size = 128 if wide else 64
        raw = body[pos + 1 : pos + 1 + size]
        if len(raw) != size or wide > 1 or slot > 3:
            raise NotParsed("bad quantization table")
        values = (
            [int.from_bytes(raw[i : i + 2], "big") for i in range(0, 128, 2)] if wide else list(raw)
        )
        natural = [0] * 64
        for index, value in zip(_ZIGZAG, values, strict=True):
            natural[index] = value
        tables[slot] = tuple(natural)
        pos += 1 + size
    return tables


_BYTE_ORDERS: dict[bytes, Literal["little", "big"]] = {b"II": "little", b"MM": "big"}


def _orientation(tiff: bytes) -> int | None:
    """The IFD0 Orientation tag (0x0112) of an EXIF block: its value, None when absent,
    `UNREADABLE` when the block is malformed."""
    order = _BYTE_ORDERS.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return UNREADABLE
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return UNREADABLE
    count = int.from_bytes(tiff[ifd : ifd + 2], order)
    for i in range(count):
        entry = tiff[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
        if len(entry) < 12:
            return UNREADABLE
        if int.from_bytes(entry[0:2], order) == 0x0112:
            kind = int.from_bytes(entry[2:4], order)
            if kind != 3:  # SHORT
                return UNREADABLE
            return int.from_bytes(entry[8:10], order)
    return None
