"""A corpus of 24 varied images, built only from files shipped inside scikit-image.

Not a test. Used by bench/auto_quality.py. Nothing is downloaded: the files are read
from the installed package's data directory (`skimage.data` functions may fetch
others). Kinds: people, products, products on white, textures, photos, text, graphics.
The shipped files are small (0.1-2 MP), so most are scaled up with Lanczos; upscaled
photographs are smoother than camera output, so those get a light sensor-like grain
(sigma 1.2 levels). Textures are tiled at their native scale instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image, ImageDraw, ImageFilter

DATA = Path(skimage.data.__file__).parent
GRAIN = 1.2


def load(name: str, mode: str = "RGB") -> Image.Image:
    with Image.open(DATA / name) as im:
        return im.convert(mode)


def grain(im: Image.Image, seed: int, sigma: float = GRAIN) -> Image.Image:
    a = np.asarray(im.convert("RGB"), dtype=np.float32)
    noise = np.random.default_rng(seed).normal(0, sigma, a.shape[:2])[..., None]
    return Image.fromarray(np.clip(a + noise, 0, 255).round().astype(np.uint8))


def scaled(im: Image.Image, mp: float) -> Image.Image:
    s = (mp * 1e6 / (im.width * im.height)) ** 0.5
    size = (max(1, round(im.width * s)), max(1, round(im.height * s)))
    return im.resize(size, Image.Resampling.LANCZOS)


def tiled(im: Image.Image, nx: int, ny: int) -> Image.Image:
    out = Image.new(im.mode, (im.width * nx, im.height * ny))
    for i in range(nx):
        for j in range(ny):
            tile = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if (i + j) % 2 else im
            out.paste(tile, (i * im.width, j * im.height))
    return out


def on_white(
    obj: Image.Image, size: tuple[int, int], mask: Image.Image | None = None
) -> Image.Image:
    """A packshot: the object centred on white, with a soft shadow."""
    canvas = Image.new("RGB", size, (255, 255, 255))
    x, y = (size[0] - obj.width) // 2, (size[1] - obj.height) // 2
    m = mask if mask is not None else Image.new("L", obj.size, 255)
    shadow = Image.new("L", size, 0)
    shadow.paste(m, (x + 18, y + 24))
    shadow = shadow.filter(ImageFilter.GaussianBlur(14)).point(lambda v: int(v * 0.35))
    canvas.paste((200, 200, 200), (0, 0, *size), shadow)
    canvas.paste(obj.convert("RGB"), (x, y), m)
    return canvas


def flat_banner(size: tuple[int, int]) -> Image.Image:
    """Flat colour blocks with hard edges: a banner or a simple product graphic."""
    im = Image.new("RGB", size, (242, 236, 225))
    d = ImageDraw.Draw(im)
    w, h = size
    d.rectangle((0, 0, w, h // 6), fill=(34, 60, 110))
    d.ellipse((w // 5, h // 4, w // 2, h * 3 // 4), fill=(214, 84, 48))
    d.rectangle((w * 3 // 5, h // 3, w * 9 // 10, h * 4 // 5), fill=(90, 160, 90))
    return im


def colour_wheel(size: int) -> Image.Image:
    y, x = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    hue = (np.arctan2(y, x) / (2 * np.pi) + 0.5) * 255
    sat = np.clip(np.hypot(x, y), 0, 1) * 255
    hsv = np.dstack([hue, sat, np.full_like(hue, 255)]).astype(np.uint8)
    return Image.fromarray(hsv, "HSV").convert("RGB")


def text_sheet() -> Image.Image:
    page, text = load("page.png", "L"), load("text.png", "L")
    sheet = Image.new("L", (1200, 900), 255)
    sheet.paste(page.resize((page.width * 2, page.height * 2), Image.Resampling.LANCZOS), (40, 40))
    sheet.paste(text, (40, 480))
    sheet.paste(text.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (600, 480))
    return sheet.convert("RGB")


def build() -> list[tuple[str, str, Image.Image]]:
    """(name, kind, RGB image) in a fixed order, 0.5-2.5 MP; deterministic."""
    astronaut, coffee, logo = load("astronaut.png"), load("coffee.png"), load("logo.png", "RGBA")
    logo_s = scaled(logo, 0.8)
    return [
        ("astronaut", "people", grain(scaled(astronaut, 1.5), 1)),
        ("astronaut-face", "people", grain(scaled(astronaut.crop((150, 20, 350, 220)), 1.0), 2)),
        ("camera", "people", grain(scaled(load("camera.png"), 2.0), 3)),
        ("chelsea", "people", grain(scaled(load("chelsea.png"), 1.2), 4)),
        ("coffee", "product", grain(scaled(coffee, 2.0), 5)),
        ("motorcycle", "product", grain(scaled(load("motorcycle_left.png"), 2.5), 6)),
        (
            "mug-on-white",
            "product on white",
            on_white(scaled(coffee.crop((150, 20, 450, 330)), 0.6), (1400, 1400)),
        ),
        (
            "coins-on-white",
            "product on white",
            on_white(scaled(load("coins.png"), 0.5), (1300, 1100)),
        ),
        (
            "clock-on-white",
            "product on white",
            on_white(scaled(load("clock_motion.png"), 0.7), (1500, 1200)),
        ),
        (
            "logo-on-white",
            "product on white",
            on_white(logo_s.convert("RGB"), (1200, 1200), logo_s.getchannel("A")),
        ),
        ("rocket", "photo", grain(scaled(load("rocket.jpg"), 1.0), 7)),
        ("retina", "photo", load("retina.jpg")),
        ("moon", "photo", grain(scaled(load("moon.png"), 1.0), 8)),
        ("cell", "photo", scaled(load("cell.png"), 0.8)),
        ("brick", "texture", tiled(load("brick.png"), 3, 2)),
        ("grass", "texture", tiled(load("grass.png"), 2, 2)),
        ("gravel", "texture", tiled(load("gravel.png"), 3, 3)),
        ("ihc", "texture", scaled(load("ihc.png"), 1.0)),
        ("hubble", "texture", load("hubble_deep_field.jpg")),
        ("text-sheet", "text", text_sheet()),
        ("colour-chart", "graphics", scaled(load("color.png"), 0.6)),
        ("colour-wheel", "graphics", colour_wheel(1000)),
        ("flat-banner", "graphics", flat_banner((1600, 900))),
        ("phantom", "graphics", scaled(load("phantom.png"), 0.5)),
    ]
