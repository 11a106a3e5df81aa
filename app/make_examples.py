"""Writes the demo's example images (`app/examples/*.jpg`, 10-50 KB each):

* `street.jpg`, `landscape.jpg`: PIL drawings of ADE20K-like scenes (sky, buildings, road, car, tree; mountains,
  lake, grass, trees). Not photographs: no license questions, tiny, reproducible. A model trained on ADE20K sees
  them as stylized scenes.
* `synthetic_scene.jpg`: a validation-style scene of agent_hf's procedural dataset
  (`agent_hf.data.make_synthetic_scene_parsing`, 8 classes), the data `make demo` trains `outputs/demo/model` on,
  so the default model of the app has something it recognizes (about 96% pixel accuracy on it).

Regenerate with `python app/make_examples.py`; the outputs are committed (the same Pillow version writes the
same bytes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 320, 240
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"


def _vertical_gradient(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], top, bottom) -> None:
    x0, y0, x1, y1 = box
    for y in range(y0, y1):
        t = (y - y0) / max(1, y1 - y0 - 1)
        color = tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        draw.line([(x0, y), (x1 - 1, y)], fill=color)


def _tree(draw: ImageDraw.ImageDraw, x: int, ground: int, height: int, rng: np.random.Generator) -> None:
    trunk_w = max(3, height // 10)
    draw.rectangle([x - trunk_w // 2, ground - height // 2, x + trunk_w // 2, ground], fill=(101, 67, 33))
    for _ in range(6):
        r = int(height * rng.uniform(0.18, 0.28))
        cx = x + int(rng.uniform(-0.2, 0.2) * height)
        cy = ground - height // 2 - int(rng.uniform(0.0, 0.35) * height)
        green = tuple(int(c) for c in rng.integers((20, 90, 20), (60, 140, 50)))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=green)


def _finish(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A little blur and sensor noise, so the drawing looks less like flat vector art."""
    image = image.filter(ImageFilter.GaussianBlur(0.6))
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, 4.0, size=(HEIGHT, WIDTH, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def street(rng: np.random.Generator) -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT))
    draw = ImageDraw.Draw(image)
    _vertical_gradient(draw, (0, 0, WIDTH, 120), (110, 160, 225), (190, 215, 240))  # sky
    x, facades = 0, ((95, (150, 120, 100)), (70, (185, 175, 160)), (110, (120, 125, 135)), (80, (170, 140, 120)))
    for i, (height, color) in enumerate(facades):
        w = WIDTH - x if i == len(facades) - 1 else int(rng.integers(60, 90))  # the last one reaches the edge
        top = 150 - height
        draw.rectangle([x, top, x + w, 150], fill=color)  # building
        for wy in range(top + 8, 140, 16):
            for wx in range(x + 6, x + w - 10, 14):
                draw.rectangle([wx, wy, wx + 7, wy + 9], fill=(70, 90, 120))  # windows
        x += w
    draw.rectangle([0, 150, WIDTH, 165], fill=(175, 170, 160))  # sidewalk
    draw.rectangle([0, 165, WIDTH, HEIGHT], fill=(80, 80, 85))  # road
    for lx in range(10, WIDTH, 50):
        draw.rectangle([lx, 200, lx + 25, 204], fill=(235, 235, 220))  # lane marking
    draw.rounded_rectangle([40, 178, 130, 210], radius=8, fill=(180, 30, 35))  # car body
    draw.rounded_rectangle([60, 165, 110, 182], radius=6, fill=(150, 25, 30))
    draw.rectangle([66, 168, 104, 180], fill=(120, 160, 190))  # car windows
    for wx in (58, 112):
        draw.ellipse([wx - 9, 202, wx + 9, 220], fill=(25, 25, 25))  # wheels
    _tree(draw, 270, 158, 70, rng)
    return _finish(image, rng)


def landscape(rng: np.random.Generator) -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT))
    draw = ImageDraw.Draw(image)
    _vertical_gradient(draw, (0, 0, WIDTH, 130), (70, 130, 210), (200, 220, 245))  # sky
    draw.ellipse([250, 20, 280, 50], fill=(255, 240, 190))  # sun
    ridge = [(0, 130), (60, 60), (120, 115), (180, 45), (260, 120), (320, 80), (320, 140), (0, 140)]
    draw.polygon(ridge, fill=(105, 100, 115))  # mountains
    draw.polygon([(165, 62), (180, 45), (196, 62)], fill=(240, 240, 245))  # snow cap
    draw.rectangle([0, 135, WIDTH, 175], fill=(60, 110, 160))  # lake
    for y in range(140, 175, 6):
        x0 = int(rng.integers(0, WIDTH - 40))
        draw.line([(x0, y), (x0 + 30, y)], fill=(120, 165, 205))  # ripples
    draw.polygon([(0, 170), (120, 165), (320, 172), (320, HEIGHT), (0, HEIGHT)], fill=(85, 150, 60))  # grass
    for x in (30, 75, 290):
        _tree(draw, x, 200, int(rng.integers(50, 75)), rng)
    return _finish(image, rng)


def synthetic_scene(rng: np.random.Generator) -> Image.Image:
    """Validation-style image 3 of the synthetic dataset (seed 2024, not one `make demo` trains or evaluates on)."""
    del rng  # the dataset is a deterministic function of (seed, split, index)
    try:
        from agent_hf.data.synthetic import make_synthetic_scene_parsing
    except ImportError:  # a source checkout without `pip install -e .`
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
        from agent_hf.data.synthetic import make_synthetic_scene_parsing
    data = make_synthetic_scene_parsing(0, 4, num_classes=8, seed=2024, min_size=240, max_size=320)
    return data["validation"][3]["image"].convert("RGB")


SCENES = {"street": street, "landscape": landscape, "synthetic_scene": synthetic_scene}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", type=Path, default=EXAMPLES_DIR)
    args = parser.parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for seed, (name, draw_scene) in enumerate(SCENES.items()):
        path = args.output_dir / f"{name}.jpg"
        draw_scene(np.random.default_rng(seed)).save(path, quality=90, optimize=True)
        print(f"{path} ({path.stat().st_size / 1024:.1f} KB)")


if __name__ == "__main__":
    main()
