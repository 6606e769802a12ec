"""imaging.resizing and the resize step of imaging.compress: the box arithmetic (displayed
size, one side or both, never up), the DCT-scaled JPEG decode, and a clean downscale."""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
from PIL import ExifTags, Image, ImageOps, JpegImagePlugin

from imgbatch.imaging import CompressOptions, compress
from imgbatch.imaging.resizing import displayed_size, downscale, fit_within


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **params)
    return out.getvalue()


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def rotated(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return exif


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A real photograph, 451x300: landscape, so a quarter turn shows."""
    return Image.fromarray(skimage.data.chelsea())


# --- the arithmetic -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "box", "expected"),
    [
        ((4000, 3000), (1000, 1000), (1000, 750)),  # landscape: the width limits
        ((3000, 4000), (1000, 1000), (750, 1000)),  # portrait: the height limits
        ((4000, 3000), (1000, 500), (667, 500)),  # a wide box: the height limits
        ((4000, 3000), (800, None), (800, 600)),  # one side only
        ((4000, 3000), (None, 600), (800, 600)),
        ((1001, 1000), (1000, None), (1000, 999)),  # rounding
        ((10_000, 10), (100, 100), (100, 1)),  # never below one pixel
        ((5, 16_000), (None, 16), (1, 16)),
    ],
)
def test_fit_within_scales_down_keeping_the_aspect_ratio(
    size: tuple[int, int], box: tuple[int | None, int | None], expected: tuple[int, int]
) -> None:
    assert fit_within(*size, *box) == expected
    fitted = fit_within(*size, *box)
    assert fitted is not None
    assert (box[0] is None or fitted[0] <= box[0]) and (box[1] is None or fitted[1] <= box[1])


@pytest.mark.parametrize(
    ("size", "box"),
    [
        ((800, 600), (1000, 1000)),  # smaller than the box: never scaled up
        ((1000, 750), (1000, 1000)),  # exactly on the box
        ((800, 600), (800, None)),
        ((800, 600), (None, None)),  # no box at all
    ],
)
def test_fit_within_leaves_what_fits(
    size: tuple[int, int], box: tuple[int | None, int | None]
) -> None:
    assert fit_within(*size, *box) is None


def test_displayed_size_turns_with_the_quarter_turn_orientations() -> None:
    assert [displayed_size(400, 300, o) for o in (None, 1, 2, 3, 4)] == [(400, 300)] * 5
    assert [displayed_size(400, 300, o) for o in (5, 6, 7, 8)] == [(300, 400)] * 4


# --- through compress ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("orientation", [None, 6, 8])
def test_the_box_applies_to_the_displayed_image(
    photo: Image.Image, fmt: str, orientation: int | None
) -> None:
    params: dict[str, object] = {"exif": rotated(orientation)} if orientation else {}
    data = encode(photo, fmt, **params)
    result = compress(data, CompressOptions(max_width=200))
    shown = ImageOps.exif_transpose(decode(data))
    expected = fit_within(*shown.size, 200, None)
    out = decode(result.data)
    assert out.size == expected == (result.width, result.height)
    assert result.resized and not result.kept_original
    assert result.format == fmt.lower()
    # the content is the displayed image, scaled: compare with a plain resize of it
    reference = shown.convert("RGB").resize(out.size, Image.Resampling.LANCZOS)
    diff = np.abs(np.asarray(out.convert("RGB"), float) - np.asarray(reference, float)).mean()
    assert diff < 8
    assert ExifTags.Base.Orientation not in out.getexif()


def test_both_sides_and_height_only(photo: Image.Image) -> None:
    data = encode(photo, "JPEG", quality=90)
    assert compress(data, CompressOptions(max_width=300, max_height=100)).height == 100
    by_height = compress(data, CompressOptions(max_height=150))
    assert (by_height.width, by_height.height) == fit_within(451, 300, None, 150)


def test_an_image_inside_the_box_is_never_scaled_up(photo: Image.Image) -> None:
    data = encode(photo, "JPEG", quality=90)
    result = compress(data, CompressOptions(max_width=2000, max_height=2000))
    assert (result.width, result.height) == photo.size and not result.resized
    tiny = encode(photo, "JPEG", quality=5)  # re-encoding cannot shrink it: kept as is
    kept = compress(tiny, CompressOptions(max_width=2000))
    assert kept.kept_original and kept.data == tiny and kept.quality is None


def test_an_image_outside_the_box_is_resized_even_when_that_does_not_save_bytes(
    photo: Image.Image,
) -> None:
    tiny = encode(photo, "JPEG", quality=5)
    result = compress(tiny, CompressOptions(quality=95, max_width=450))
    assert (result.width, result.height) == (450, 299)
    assert not result.kept_original and result.quality == 95
    assert result.bytes_out > result.bytes_in  # the box wins over "never larger"


def test_large_reductions_decode_jpeg_at_a_reduced_scale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    big = Image.fromarray(skimage.data.astronaut()).resize((2400, 2400))
    data = encode(big, "JPEG", quality=90)
    drafts: list[tuple[int, int]] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: object) -> object:
        answer = original(self, mode, size)  # type: ignore[arg-type]
        drafts.append(self.size)
        return answer

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    result = compress(data, CompressOptions(max_width=500))
    assert drafts == [(600, 600)]  # 1/4 scale: the largest that stays >= 500
    assert (result.width, result.height) == (500, 500)
    drafts.clear()
    compress(data, CompressOptions(max_width=1500))  # under 2x: a full decode
    assert drafts == [(2400, 2400)]


def test_downscale_does_not_alias_fine_patterns() -> None:
    stripes = np.zeros((300, 300), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: nearest-neighbour would keep them or lose them
    small = downscale(Image.fromarray(stripes), (100, 100))
    values = np.asarray(small, float)[5:-5, 5:-5]
    assert abs(values.mean() - 127.5) < 8 and values.std() < 8  # an even grey, no moiré


def test_alpha_is_kept_without_dark_fringes() -> None:
    im = Image.new("RGBA", (400, 400), (0, 0, 0, 0))
    im.paste((255, 0, 0, 255), (100, 100, 300, 300))
    result = compress(encode(im, "PNG"), CompressOptions(max_width=133))
    out = np.asarray(decode(result.data).convert("RGBA"), float)
    assert out.shape == (133, 133, 4)
    seen = out[out[..., 3] > 32]
    assert seen[:, 0].min() > 200 and seen[:, 1].max() < 40  # red, not darkened by the black
    assert out[0, 0, 3] == 0 and out[66, 66, 3] == 255


def test_palette_images_stay_correct(photo: Image.Image) -> None:
    palette = photo.quantize(16)
    data = encode(palette, "PNG")
    result = compress(data, CompressOptions(max_width=150))
    out = decode(result.data).convert("RGB")
    assert out.size == (150, 100)
    expected = palette.convert("RGB").resize((150, 100), Image.Resampling.LANCZOS)
    assert np.abs(np.asarray(out, float) - np.asarray(expected, float)).mean() < 6
    gif = compress(encode(palette, "GIF"), CompressOptions(max_height=50))
    assert gif.format == "gif" and (gif.width, gif.height) == (75, 50)


def test_options_refuse_a_box_out_of_range() -> None:
    for side in (0, 16_385):
        with pytest.raises(ValueError, match="max_width and max_height"):
            CompressOptions(max_width=side)
    assert CompressOptions(max_width=1, max_height=16_384).max_height == 16_384
