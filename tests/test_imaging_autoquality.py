"""imaging.autoquality, imaging.autojpeg and quality="auto" in imaging.compress: the score,
the sample, the search (bounded, monotone in the target), the JPEG fast path's check of the
stored output, and what it picks for contrasting images."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import skimage.data
from PIL import Image

from imgbatch.imaging import CompressOptions, autojpeg, compress, encoders, turbo
from imgbatch.imaging.autoquality import (
    HIGH,
    LOW,
    MAX_RAISES,
    MAX_TRIES,
    RAISE_STEP,
    SAMPLE_PIXELS,
    TILE,
    Found,
    Reference,
    Scorer,
    luma_mosaic,
    luma_plane,
    luma_tiles,
    mosaic,
    plan_sample,
    search,
)


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **params)
    return out.getvalue()


def jpeg(im: Image.Image, quality: int) -> bytes:
    return encode(im, "JPEG", quality=quality)


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A real photograph at ~1.1 MP, so scoring samples tiles."""
    return Image.fromarray(skimage.data.astronaut()).resize((1200, 900), Image.Resampling.LANCZOS)


def flat_colour() -> Image.Image:
    """A plain product colour with soft shading: what a flat-colour packshot is made of."""
    y, x = np.mgrid[0:600, 0:800]
    shade = 180 + 30 * np.exp(-((x - 400) ** 2 + (y - 300) ** 2) / 2e5)
    rgb = np.dstack([shade, shade * 0.55, shade * 0.35]).clip(0, 255).astype(np.uint8)
    return Image.fromarray(rgb)


def textured() -> Image.Image:
    """A fine, high-contrast weave with grain: a detailed fabric photo."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:600, 0:800]
    weave = 60 * np.sign(np.sin(x * 1.9) * np.sin(y * 1.7))
    grey = (128 + weave + rng.normal(0, 25, weave.shape)).clip(0, 255)
    return Image.fromarray(np.dstack([grey, grey * 0.9, grey * 0.8]).astype(np.uint8))


# --- score and sample ----------------------------------------------------------------------------


def test_identical_images_score_one_and_damage_lowers_the_score(photo: Image.Image) -> None:
    scorer = Scorer(photo)
    assert scorer.score_image(encode(photo, "PNG")) == pytest.approx(1.0, abs=1e-6)
    scores = [scorer.score_image(jpeg(photo, q)) for q in (20, 50, 90)]
    assert scores[0] < scores[1] < scores[2] < 1.0


def test_flat_windows_do_not_count_and_an_all_flat_image_scores_one() -> None:
    flat = Image.new("L", (64, 64), 200)
    assert Scorer(flat).score_image(jpeg(flat, 5)) == 1.0
    half = Image.new("L", (256, 256), 255)  # a white page with a small textured product
    rng = np.random.default_rng(1)
    half.paste(Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)), (96, 96))
    whole = Reference(luma_tiles(half, plan_sample(256, 256)))
    damaged = luma_tiles(Image.open(io.BytesIO(jpeg(half, 20))), plan_sample(256, 256))
    # only the product's windows count, so the white page does not vouch for it
    assert whole.score(damaged) < 0.9


def test_the_sample_is_a_spread_lattice_within_the_budget() -> None:
    assert plan_sample(500, 500).tiles is None  # small: the whole image
    sample = plan_sample(4000, 3000)
    assert sample.tiles is not None
    assert sample.pixels <= SAMPLE_PIXELS and len(sample.tiles) > 200
    xs = {x for x, _ in sample.tiles}
    ys = {y for _, y in sample.tiles}
    assert all(x % 16 == 0 and y % 16 == 0 for x, y in sample.tiles)  # on the JPEG grid
    assert max(x for x in xs) + TILE <= 4000 and max(ys) + TILE <= 3000
    assert min(xs) < 400 and max(xs) > 3400 and min(ys) < 300 and max(ys) > 2500


def test_a_jpeg_mosaic_scores_exactly_as_the_whole_image(photo: Image.Image) -> None:
    scorer = Scorer(photo)
    assert scorer.sample.tiles is not None
    for q in (30, 60, 85):
        assert scorer.score_mosaic(jpeg(scorer.tiles, q)) == pytest.approx(
            scorer.score_image(jpeg(photo, q)), abs=1e-4
        )


# --- the search ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_search_is_bounded_and_finds_a_passing_quality(seed: int) -> None:
    rnd = random.Random(seed)
    steep, offset = rnd.uniform(8, 40), rnd.uniform(0, 5)
    calls: list[int] = []

    def measure(q: int) -> float:
        calls.append(q)
        return 1 - 0.1 * float(np.exp(-(q - 20) / steep)) - offset * 1e-3

    target = rnd.uniform(0.95, 0.995)
    found = search(measure, target)
    assert len(calls) <= MAX_TRIES + 1 and len(set(calls)) == len(calls)
    assert LOW <= found.quality <= HIGH
    lowest = next((q for q in range(LOW, HIGH + 1) if measure(q) >= target), None)
    calls.clear()
    if lowest is None:
        assert found.quality == HIGH
    else:
        assert found.score >= target
        assert found.quality - lowest <= 2  # exact, or nearly when the tries ran out


def test_search_is_monotone_in_the_target() -> None:
    def measure(q: int) -> float:
        return 1 - 0.1 * float(np.exp(-(q - 20) / 18))

    chosen = [search(measure, t).quality for t in np.linspace(0.9, 0.999, 60)]
    assert chosen == sorted(chosen) and chosen[0] == LOW and chosen[-1] == HIGH


def test_search_gives_the_top_when_nothing_passes_and_the_bottom_when_all_do() -> None:
    assert search(lambda q: 0.5, 0.97).quality == HIGH
    every = search(lambda q: 1.0, 0.97)
    assert every.quality == LOW and len(every.tried) <= 3


def test_real_images_pick_higher_qualities_for_higher_targets(photo: Image.Image) -> None:
    chosen = [
        compress(jpeg(photo, 95), CompressOptions(quality="auto", auto_target=t)).quality
        for t in (0.9, 0.95, 0.97, 0.985)
    ]
    assert chosen == sorted(chosen) and chosen[0] < chosen[-1]


# --- through compress ----------------------------------------------------------------------------


def test_flat_colour_gets_a_lower_quality_than_texture() -> None:
    auto = CompressOptions(quality="auto")
    flat = compress(jpeg(flat_colour(), 95), auto)
    busy = compress(jpeg(textured(), 95), auto)
    assert flat.quality is not None and busy.quality is not None
    assert flat.quality < busy.quality
    assert flat.quality == LOW and busy.quality >= LOW + 20


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "avif"])
def test_every_auto_output_meets_the_target(photo: Image.Image, fmt: str) -> None:
    source = photo.resize((600, 450)) if fmt == "avif" else photo  # AVIF encodes slowly
    result = compress(jpeg(source, 95), CompressOptions(quality="auto", format=fmt))
    assert result.format == fmt and result.quality is not None
    assert LOW <= result.quality <= HIGH
    assert Scorer(source).score_image(result.data) >= CompressOptions().auto_target


def test_auto_on_the_general_path_encodes_a_bounded_number_of_times(
    photo: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[tuple[int, int]] = []
    real = encoders.lossy

    def counting(im: Image.Image, f: str, quality: int, icc: bytes | None = None) -> bytes:
        sizes.append(im.size)
        return real(im, f, quality, icc)

    monkeypatch.setattr(encoders, "lossy", counting)
    result = compress(jpeg(photo, 95), CompressOptions(quality="auto", format="webp"))
    whole = [s for s in sizes if s == photo.size]
    assert 1 <= len(whole) <= 1 + MAX_RAISES  # the output itself, raised at most twice
    assert len(sizes) - len(whole) <= MAX_TRIES + 1  # mosaics only, each far smaller
    assert result.quality is not None


def test_jpeg_to_jpeg_auto_takes_the_fast_path_with_bounded_encodes(
    photo: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    mosaics: list[tuple[int, ...]] = []
    outputs: list[int] = []
    real_mosaic, real_output = autojpeg.simplejpeg.encode_jpeg, turbo.encode

    def mosaic_encode(pixels: np.ndarray, **kwargs: object) -> bytes:
        mosaics.append(pixels.shape)
        return real_mosaic(pixels, **kwargs)  # type: ignore[arg-type]

    def output_encode(*args: object) -> object:
        outputs.append(1)
        return real_output(*args)  # type: ignore[arg-type]

    def no_pillow(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("JPEG to JPEG auto should not encode through Pillow")

    monkeypatch.setattr(autojpeg.simplejpeg, "encode_jpeg", mosaic_encode)
    monkeypatch.setattr(turbo, "encode", output_encode)
    monkeypatch.setattr(encoders, "lossy", no_pillow)
    result = compress(jpeg(photo, 95), CompressOptions(quality="auto"))
    assert result.format == "jpeg" and result.quality is not None
    assert 1 <= len(mosaics) <= MAX_TRIES + 1
    assert all(shape[0] * shape[1] <= SAMPLE_PIXELS for shape in mosaics)  # never the image
    assert 1 <= len(outputs) <= 1 + MAX_RAISES


def test_the_fast_path_checks_the_stored_output_and_raises_the_quality(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A search that answers too low (as a mosaic scored afresh could, by a little, against a
    requantized output) is caught by scoring what is stored, and the quality raised."""
    monkeypatch.setattr(autojpeg, "search", lambda measure, target: Found(LOW, 0.0))
    source = textured()
    result = compress(jpeg(source, 95), CompressOptions(quality="auto"))
    assert result.quality == LOW + MAX_RAISES * RAISE_STEP  # the texture needs far more
    honest = compress(jpeg(source, 95), CompressOptions(quality=LOW + RAISE_STEP))
    assert Scorer(source).score_image(honest.data) < CompressOptions().auto_target


def test_the_fast_path_meets_the_target_on_what_it_stores(photo: Image.Image) -> None:
    for target in (0.95, 0.97, 0.985):
        found = autojpeg.compress_auto(jpeg(photo, 95), target, 10**8)
        assert found is not None
        result, quality = found
        assert not result.kept_original and LOW <= quality <= HIGH
        assert result.route in (turbo.DCT, turbo.PIXELS)
        stored = autojpeg.decoded_luma(result.data)
        sample = plan_sample(*photo.size)
        reference = Reference(
            luma_plane(luma_mosaic(autojpeg.decoded_luma(jpeg(photo, 95)), sample), sample), sample
        )
        assert reference.score(luma_plane(luma_mosaic(stored, sample), sample)) >= target


def test_the_luma_mosaic_is_the_mosaic_of_the_luma(photo: Image.Image) -> None:
    grey = photo.convert("L")
    for size in ((1200, 900), (1203, 907), (300, 200)):
        im = grey.resize(size)
        sample = plan_sample(*size)
        assert np.array_equal(luma_mosaic(np.asarray(im), sample), np.asarray(mosaic(im, sample)))


def test_png_and_gif_keep_their_treatment_under_auto(photo: Image.Image) -> None:
    png = compress(encode(photo, "PNG"), CompressOptions(quality="auto"))
    assert png.format == "png" and png.quality is None
    assert Image.open(io.BytesIO(png.data)).mode == "P"  # quantized, as below quality 100
    gif = compress(encode(photo.quantize(64), "GIF"), CompressOptions(quality="auto"))
    assert gif.format == "gif" and gif.quality is None


def test_a_fixed_quality_is_reported_and_a_kept_original_has_none(photo: Image.Image) -> None:
    assert compress(jpeg(photo, 95), CompressOptions(quality=70)).quality == 70
    kept = compress(jpeg(photo, 10), CompressOptions(quality=90))
    assert kept.kept_original and kept.quality is None


def test_auto_options_are_checked() -> None:
    for bad in ("best", 0, 101):
        with pytest.raises(ValueError, match="quality"):
            CompressOptions(quality=bad)
    with pytest.raises(ValueError, match="auto_target"):
        CompressOptions(quality="auto", auto_target=1.0)
