"""Draw the studio's bundled pictures: samples to try, backgrounds, and the home page example.

Everything here is made by this project (no third-party art): the sample
characters come from :func:`tests.scenes.make_scene` (cel-shaded figures with
thin hair strands), the backgrounds are procedural gradients and patterns, and
the before/after example is the real engine's output on one sample.

Run from the repository root after changing the drawings or the engine:

    .venv/bin/python assets/make_assets.py            # everything
    .venv/bin/python assets/make_assets.py --only samples backgrounds

Sizes are kept small for the repository (about 1.5 MB in all).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.scenes import make_background, make_scene  # noqa: E402

ASSETS = ROOT / "assets"

#: name -> (characters, background kind, seed, title, file type). 960x540.
SAMPLES = {
    "duo-flat": (2, "flat", 1, "Two friends on a flat colour", "png"),
    "trio-gradient": (3, "gradient", 2, "Three characters on a gradient", "png"),
    "solo-textured": (1, "textured", 4, "One character on a noisy texture (JPEG)", "jpg"),
    "duo-cool": (2, "gradient", 11, "Two characters on a cool gradient", "png"),
}
SAMPLE_SIZE = (540, 960)
BACKGROUND_SIZE = (720, 1280)


def _save_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, optimize=True)


def _save_jpeg(path: Path, rgb: np.ndarray, quality: int = 85) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=quality, optimize=True, progressive=True)


def make_samples() -> dict[str, dict]:
    catalogue = {}
    for name, (n, kind, seed, title, ext) in SAMPLES.items():
        scene = make_scene(n, kind, size=SAMPLE_SIZE, seed=seed)
        path = ASSETS / "samples" / f"{name}.{ext}"
        if ext == "png":
            _save_png(path, scene.image)
        else:
            _save_jpeg(path, scene.image, quality=90)
        catalogue[name] = {"file": f"samples/{name}.{ext}", "title": title, "characters": n}
    return catalogue


def _vertical(top, bottom, size) -> np.ndarray:
    height, width = size
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    top = np.asarray(top, np.float32)[None, None, :]
    bottom = np.asarray(bottom, np.float32)[None, None, :]
    return np.broadcast_to(top * (1 - t) + bottom * t, (height, width, 3)).astype(np.float32)


def background_sunset(size=BACKGROUND_SIZE) -> np.ndarray:
    height, width = size
    img = _vertical((255, 170, 120), (120, 60, 140), size).copy()
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy, r = width * 0.7, height * 0.62, height * 0.16
    glow = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (r * 2.2) ** 2)))[:, :, None]
    img = img * (1 - 0.5 * glow) + np.array([255, 225, 160], np.float32) * 0.5 * glow
    sun = (((xx - cx) ** 2 + (yy - cy) ** 2) <= r * r)[:, :, None]
    img = np.where(sun, np.array([255, 236, 190], np.float32), img)
    horizon = int(height * 0.74)
    hills = np.zeros((height, width), np.uint8)
    pts = [(0, height)]
    for x in range(0, width + 1, 40):
        pts.append((x, int(horizon + 22 * np.sin(x / 130.0) + 14 * np.sin(x / 47.0 + 1))))
    pts.append((width, height))
    cv2.fillPoly(hills, [np.array(pts, np.int32)], 255, cv2.LINE_AA)
    a = (hills.astype(np.float32) / 255.0)[:, :, None]
    img = img * (1 - a) + np.array([70, 40, 90], np.float32) * a
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def background_sky(size=BACKGROUND_SIZE, seed: int = 5) -> np.ndarray:
    height, width = size
    rng = np.random.default_rng(seed)
    img = _vertical((110, 170, 240), (200, 230, 255), size).copy()
    clouds = np.zeros((height, width), np.float32)
    for _ in range(9):
        cx, cy = rng.uniform(0, width), rng.uniform(0.1, 0.6) * height
        for _ in range(6):
            ox, oy = rng.normal(0, 60), rng.normal(0, 14)
            axes = (int(rng.uniform(50, 110)), int(rng.uniform(25, 45)))
            cv2.ellipse(clouds, (int(cx + ox), int(cy + oy)), axes, 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    clouds = cv2.GaussianBlur(np.clip(clouds, 0, 1), (0, 0), 6)[:, :, None]
    img = img * (1 - 0.9 * clouds) + 255 * 0.9 * clouds
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def background_night(size=BACKGROUND_SIZE, seed: int = 8) -> np.ndarray:
    height, width = size
    rng = np.random.default_rng(seed)
    img = _vertical((15, 20, 55), (60, 40, 110), size).copy()
    stars = np.zeros((height, width), np.float32)
    for _ in range(260):
        x, y = int(rng.uniform(0, width)), int(rng.uniform(0, height * 0.85))
        cv2.circle(stars, (x, y), int(rng.choice([1, 1, 1, 2])), float(rng.uniform(0.5, 1.0)), -1, cv2.LINE_AA)
    stars = cv2.GaussianBlur(stars, (0, 0), 0.7)[:, :, None]
    img = img * (1 - stars) + 255 * stars
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    moon = (((xx - width * 0.18) ** 2 + (yy - height * 0.22) ** 2) <= (height * 0.08) ** 2)[:, :, None]
    img = np.where(moon, np.array([250, 245, 215], np.float32), img)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def background_dots(size=BACKGROUND_SIZE) -> np.ndarray:
    height, width = size
    img = np.empty((height, width, 3), np.uint8)
    img[:] = (255, 228, 236)
    step = 48
    for row, y in enumerate(range(step // 2, height + step, step)):
        for x in range(step // 2 + (step // 2 if row % 2 else 0), width + step, step):
            cv2.circle(img, (x, y), 9, (255, 190, 210), -1, cv2.LINE_AA)
    return img


def background_studio(size=BACKGROUND_SIZE) -> np.ndarray:
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    d = np.sqrt(((xx - width / 2) / width) ** 2 + ((yy - height * 0.45) / height) ** 2)
    shade = np.clip(1.0 - 0.9 * d, 0, 1)[:, :, None]
    img = np.array([70, 74, 84], np.float32) * (1 - shade) + np.array([215, 218, 225], np.float32) * shade
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def background_paper(size=BACKGROUND_SIZE, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = make_background("textured", size[0], size[1], rng).astype(np.float32)
    warm = np.array([250, 240, 220], np.float32)
    return np.clip(0.35 * base + 0.65 * warm + 0.5, 0, 255).astype(np.uint8)


BACKGROUNDS = {
    "sunset": ("Sunset", background_sunset),
    "sky": ("Blue sky", background_sky),
    "night": ("Starry night", background_night),
    "dots": ("Pink dots", background_dots),
    "studio": ("Studio grey", background_studio),
    "paper": ("Warm paper", background_paper),
}


def make_backgrounds() -> dict[str, dict]:
    catalogue = {}
    for name, (title, draw) in BACKGROUNDS.items():
        _save_jpeg(ASSETS / "backgrounds" / f"{name}.jpg", draw())
        catalogue[name] = {"file": f"backgrounds/{name}.jpg", "title": title}
    return catalogue


def make_example(sample: str = "trio-gradient", background: str = "sunset") -> dict:
    """The home page's before/after: the engine's real output with default settings."""
    from inference.composite import Background
    from inference.image_io import load_image
    from inference.matte import MatteSettings
    from inference.pipeline import detect_characters, render_cutout, render_composite as render_preview
    from inference.segmenter import DetectionSettings

    _, _, _, _, ext = SAMPLES[sample]
    image = load_image(ASSETS / "samples" / f"{sample}.{ext}").image
    detection = detect_characters(image, DetectionSettings(backend="classic"))
    selected = list(range(len(detection.instances)))
    cutout = render_cutout(image, detection.instances, selected, MatteSettings())
    backdrop = load_image(ASSETS / "backgrounds" / f"{background}.jpg").image
    after = render_preview(image, cutout, Background(kind="image", image=backdrop))
    _save_jpeg(ASSETS / "examples" / "before.jpg", image, quality=88)
    _save_jpeg(ASSETS / "examples" / "after.jpg", after, quality=88)
    return {
        "before": "examples/before.jpg",
        "after": "examples/after.jpg",
        "sample": sample,
        "background": background,
        "backend": detection.choice.name,
        "characters": len(selected),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=("samples", "backgrounds", "example"))
    args = parser.parse_args(argv)
    parts = set(args.only or ("samples", "backgrounds", "example"))
    catalogue_path = ASSETS / "catalogue.json"
    catalogue = json.loads(catalogue_path.read_text()) if catalogue_path.exists() else {}
    if "samples" in parts:
        catalogue["samples"] = make_samples()
    if "backgrounds" in parts:
        catalogue["backgrounds"] = make_backgrounds()
    if "example" in parts:
        catalogue["example"] = make_example()
    catalogue_path.write_text(json.dumps(catalogue, indent=2) + "\n")
    total = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file() and p.suffix in (".png", ".jpg"))
    print(f"assets written: {total / 1e6:.2f} MB in pictures; catalogue at {catalogue_path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
