"""Category-styled pictures drawn with PIL: product photos, covers and video frames.

A ``Scene`` samples all of its random layout once, so rendering it at several
animation phases (video frames) moves the same objects instead of redrawing
new ones. Everything is derived from the caller's numpy ``Generator``, hence
deterministic for a seed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from tools.demo.categories import RGB, VisualStyle

Draw = Callable[[ImageDraw.ImageDraw, int, float], None]  # (draw, size, phase)


def _jitter(rgb: RGB, rng: np.random.Generator, amount: int = 25) -> RGB:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def _colour(style: VisualStyle, rng: np.random.Generator) -> RGB:
    return _jitter(style.palette[int(rng.integers(len(style.palette)))], rng)


def _ellipse(d: ImageDraw.ImageDraw, s: int, cx: float, cy: float, rx: float, ry: float, **style) -> None:
    """An ellipse given in fractions of the picture size."""
    d.ellipse([(cx - rx) * s, (cy - ry) * s, (cx + rx) * s, (cy + ry) * s], **style)


# --- motifs: each samples its layout from rng and returns a drawing routine -------------

def _mountains(style: VisualStyle, rng: np.random.Generator) -> Draw:
    peaks = [(rng.uniform(-0.1, 1.0), rng.uniform(0.2, 0.5), rng.uniform(0.3, 0.6), _colour(style, rng))
             for _ in range(int(rng.integers(2, 5)))]
    trees = [(rng.uniform(0, 1), rng.uniform(0.75, 0.95), rng.uniform(0.05, 0.1))
             for _ in range(int(rng.integers(2, 7)))]
    sun_y = rng.uniform(0.08, 0.25)

    def draw(d: ImageDraw.ImageDraw, s: int, phase: float) -> None:
        sx = (0.1 + 0.8 * phase) * s
        _ellipse(d, s, sx / s, sun_y, 0.08, 0.08, fill=(255, 220, 80))
        for x, top, half, col in peaks:
            d.polygon([((x - half) * s, 0.85 * s), (x * s, top * s), ((x + half) * s, 0.85 * s)], fill=col)
            d.polygon([((x - 0.08) * s, (top + 0.1) * s), (x * s, top * s), ((x + 0.08) * s, (top + 0.1) * s)],
                      fill=(245, 245, 250))
        for x, base, h in trees:
            d.polygon([((x - h / 2) * s, base * s), (x * s, (base - h * 2) * s), ((x + h / 2) * s, base * s)],
                      fill=(20, 90, 30))
    return draw


def _plates(style: VisualStyle, rng: np.random.Generator) -> Draw:
    plates = [(rng.uniform(0.25, 0.75), rng.uniform(0.35, 0.7), rng.uniform(0.15, 0.3))
              for _ in range(int(rng.integers(1, 3)))]
    food = [(rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(0.2, 0.4), _colour(style, rng))
            for _ in range(4)]

    def draw(d: ImageDraw.ImageDraw, s: int, phase: float) -> None:
        for cx, cy, r in plates:
            _ellipse(d, s, cx, cy, r, r, fill=(250, 250, 245), outline=(120, 120, 120))
            _ellipse(d, s, cx, cy, 0.7 * r, 0.7 * r, outline=(200, 200, 200))
            for fx, fy, fr, col in food:
                x, y, rr = (cx + fx * r) * s, (cy + fy * r) * s, fr * r * s
                d.ellipse([x - rr, y - rr * 0.7, x + rr, y + rr * 0.7], fill=col)
            for k in range(3):  # rising steam
                x0 = (cx + (k - 1) * r / 2) * s
                y0 = (cy - r - 0.05 - 0.1 * phase) * s
                d.arc([x0 - 0.03 * s, y0 - 0.12 * s, x0 + 0.03 * s, y0], 90, 270, fill=(255, 255, 255), width=2)
    return draw


def _devices(style: VisualStyle, rng: np.random.Generator) -> Draw:
    boxes = []
    for _ in range(int(rng.integers(1, 3))):
        w, h = rng.uniform(0.25, 0.55), rng.uniform(0.2, 0.5)
        boxes.append((rng.uniform(0.05, 0.95 - w), rng.uniform(0.1, 0.9 - h), w, h, _colour(style, rng)))
    traces = [(rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0, 1)) for _ in range(6)]

    def draw(d: ImageDraw.ImageDraw, s: int, phase: float) -> None:
        for x, y, x2 in traces:  # circuit traces: an L-shaped line
            d.line([(x * s, y * s), (x2 * s, y * s), (x2 * s, (1 - y) * s)], fill=(0, 200, 140), width=1)
        for x, y, w, h, col in boxes:
            d.rounded_rectangle([x * s, y * s, (x + w) * s, (y + h) * s], radius=max(2, s // 30),
                                fill=(35, 35, 40), outline=col, width=2)
            inset = 0.03
            d.rectangle([(x + inset) * s, (y + inset) * s, (x + w - inset) * s, (y + h - inset) * s], fill=col)
            led_on = math.sin(2 * math.pi * phase * 3) > 0
            d.ellipse([(x + w - 0.05) * s, (y + h + 0.01) * s, (x + w - 0.02) * s, (y + h + 0.04) * s],
                      fill=(0, 255, 0) if led_on else (40, 60, 40))
    return draw


def _vinyl(style: VisualStyle, rng: np.random.Generator) -> Draw:
    cx, cy, r = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6), rng.uniform(0.3, 0.42)
    label = _colour(style, rng)
    angle0 = rng.uniform(0, 2 * math.pi)

    def draw(d: ImageDraw.ImageDraw, s: int, phase: float) -> None:
        d.ellipse([(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s], fill=(12, 12, 14))
        for k in range(4, 10):
            g = r * k / 10
            d.ellipse([(cx - g) * s, (cy - g) * s, (cx + g) * s, (cy + g) * s], outline=(45, 45, 50))
        lr = r * 0.3
        d.ellipse([(cx - lr) * s, (cy - lr) * s, (cx + lr) * s, (cy + lr) * s], fill=label)
        a = angle0 + 2 * math.pi * phase  # the record turns
        d.line([(cx + lr * math.cos(a)) * s, (cy + lr * math.sin(a)) * s,
                (cx + r * math.cos(a)) * s, (cy + r * math.sin(a)) * s], fill=(212, 175, 55), width=2)
    return draw


def _equalizer(style: VisualStyle, rng: np.random.Generator) -> Draw:
    n = int(rng.integers(6, 12))
    base = rng.uniform(0.2, 0.8, size=n)
    speed = rng.uniform(1, 3, size=n)
    colours = [_colour(style, rng) for _ in range(n)]

    def draw(d: ImageDraw.ImageDraw, s: int, phase: float) -> None:
        w = s / n
        for i in range(n):
            h = base[i] * (0.6 + 0.4 * math.sin(2 * math.pi * (speed[i] * phase + i / n)))
            d.rectangle([i * w + 1, (1 - h) * s, (i + 1) * w - 2, s], fill=colours[i])
    return draw


def _staff(style: VisualStyle, rng: np.random.Generator) -> Draw:
    top = rng.uniform(0.15, 0.35)
    notes = [(rng.uniform(0, 1), int(rng.integers(0, 9))) for _ in range(int(rng.integers(4, 9)))]

    def draw(d: ImageDraw.ImageDraw, s: int, phase: float) -> None:
        gap = 0.05
        for k in range(5):
            y = (top + k * gap) * s
            d.line([(0, y), (s, y)], fill=(30, 25, 20), width=1)
        for x, step in notes:
            nx = ((x - 0.3 * phase) % 1.0) * s  # the score scrolls by
            ny = (top + step * gap / 2) * s
            d.ellipse([nx - 0.03 * s, ny - 0.02 * s, nx + 0.03 * s, ny + 0.02 * s], fill=(20, 15, 10))
            d.line([(nx + 0.03 * s, ny), (nx + 0.03 * s, ny - 0.15 * s)], fill=(20, 15, 10), width=2)
        keys_top = 0.78 * s
        for k in range(14):  # a strip of piano keys
            key = s / 14
            d.rectangle([k * key, keys_top, (k + 1) * key - 1, s], fill=(250, 250, 245), outline=(40, 40, 40))
            if k % 7 not in (2, 6):  # black keys, skipping E-F and B-C
                d.rectangle([(k + 0.65) * key, keys_top, (k + 1.35) * key, keys_top + 0.12 * s], fill=(15, 15, 15))
    return draw


def _dumbbells(style: VisualStyle, rng: np.random.Generator) -> Draw:
    bells = [(rng.uniform(0.25, 0.75), rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.45), _colour(style, rng))
             for _ in range(int(rng.integers(1, 3)))]

    def draw(d: ImageDraw.ImageDraw, s: int, phase: float) -> None:
        lift = 0.1 * math.sin(2 * math.pi * phase)
        for cx, cy, w, col in bells:
            y = (cy + lift) * s
            d.rectangle([(cx - w / 2) * s, y - 0.015 * s, (cx + w / 2) * s, y + 0.015 * s], fill=(170, 170, 170))
            for side in (-1, 1):  # the weight plates
                x = (cx + side * w / 2) * s
                d.rectangle([x - 0.04 * s, y - 0.12 * s, x + 0.04 * s, y + 0.12 * s], fill=col, outline=(0, 0, 0))
    return draw


def _balloons(style: VisualStyle, rng: np.random.Generator) -> Draw:
    balloons = [(rng.uniform(0.1, 0.9), rng.uniform(0.3, 0.8), rng.uniform(0.07, 0.13), _colour(style, rng))
                for _ in range(int(rng.integers(3, 7)))]
    stars = [(rng.uniform(0, 1), rng.uniform(0, 0.4), rng.uniform(0.03, 0.06)) for _ in range(3)]

    def draw(d: ImageDraw.ImageDraw, s: int, phase: float) -> None:
        for x, y, r in stars:
            pts = [((x + (r if k % 2 == 0 else r / 2.5) * math.cos(math.pi * k / 5 - math.pi / 2)) * s,
                    (y + (r if k % 2 == 0 else r / 2.5) * math.sin(math.pi * k / 5 - math.pi / 2)) * s)
                   for k in range(10)]
            d.polygon(pts, fill=(255, 220, 0))
        for x, y, r, col in balloons:
            by = (y - 0.2 * phase) * s  # balloons float up
            d.line([(x * s, by + r * s), (x * s, by + (r + 0.2) * s)], fill=(80, 80, 80), width=1)
            d.ellipse([(x - r) * s, by - 1.2 * r * s, (x + r) * s, by + r * s], fill=col)
    return draw


MOTIFS: dict[str, Callable[[VisualStyle, np.random.Generator], Draw]] = {
    "mountains": _mountains, "plates": _plates, "devices": _devices, "vinyl": _vinyl,
    "equalizer": _equalizer, "staff": _staff, "dumbbells": _dumbbells, "balloons": _balloons,
}


# --- textures: numpy overlays in [0, 1] applied as light/dark modulation ------------------

def _texture(kind: str, s: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    if kind == "checker":
        cell = s // int(rng.integers(6, 12))
        return (((xx // cell + yy // cell) % 2) * (yy > s * 0.6)).astype(np.float32)
    if kind == "grid":
        step = s // int(rng.integers(8, 16))
        return ((xx % step == 0) | (yy % step == 0)).astype(np.float32)
    if kind == "stripes":
        period = s / rng.uniform(5, 10)
        return (np.sin(2 * np.pi * (xx + yy) / period) > 0.6).astype(np.float32)
    if kind == "dots":
        period = s / rng.uniform(6, 10)
        return ((np.sin(2 * np.pi * xx / period) * np.sin(2 * np.pi * yy / period)) > 0.85).astype(np.float32)
    if kind == "grain":
        return rng.random((s, s), dtype=np.float32)
    if kind == "none":
        return np.zeros((s, s), np.float32)
    raise ValueError(f"unknown texture {kind!r}")


class Scene:
    """One picture layout in a category's style, renderable at animation phases 0..1."""

    def __init__(self, style: VisualStyle, rng: np.random.Generator, size: int,
                 accent: VisualStyle | None = None) -> None:
        self.size = size
        sky, ground = _jitter(style.sky, rng, 20), _jitter(style.ground, rng, 20)
        t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
        self._background = (1 - t) * np.array(sky, np.float32) + t * np.array(ground, np.float32)
        self._background = np.broadcast_to(self._background, (size, size, 3)).copy()
        self._texture = _texture(style.texture, size, rng)[..., None]
        self._texture_strength = float(rng.uniform(18, 40))
        self._noise = rng.normal(0.0, rng.uniform(4, 10), size=(size, size, 3)).astype(np.float32)
        self._motif = MOTIFS[style.motif](style, rng)
        # A cross-over item carries a small inset of its second interest in one corner.
        self._accent = None if accent is None else (MOTIFS[accent.motif](accent, rng), accent.sky)

    def render(self, phase: float = 0.0) -> Image.Image:
        base = self._background + self._texture_strength * (self._texture - 0.5)
        img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
        self._motif(ImageDraw.Draw(img), self.size, phase)
        if self._accent is not None:
            draw_accent, background = self._accent
            small = max(8, int(self.size * 0.4))
            tile = Image.new("RGB", (small, small), background)
            draw_accent(ImageDraw.Draw(tile), small, phase)
            img.paste(tile, (self.size - small - 2, 2))
        pixels = np.asarray(img, dtype=np.float32) + self._noise
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def save_image(img: Image.Image, path: Path) -> None:
    """JPEG or PNG by suffix; neither embeds timestamps, so bytes are reproducible."""
    if path.suffix == ".jpg":
        img.save(path, format="JPEG", quality=88, optimize=False)
    else:
        img.save(path, format="PNG", optimize=False)
