"""Synthetic anime-style scenes with known alpha, for tests, benchmarks and samples.

Each character is cel-shaded flat colour with dark line art, a round head, a
body, and thin strands of hair and ribbon (2-3 px) sticking out, drawn at 4x and
area-downsampled so its edges carry true fractional alpha. Characters never
touch each other, so each one's ground-truth mask is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SUPERSAMPLE = 4


@dataclass(frozen=True)
class Scene:
    """A rendered scene.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        alpha: ``(H, W)`` float32 in ``[0, 1]``: union of all characters.
        character_alphas: per character ``(H, W)`` float32 alpha.
        foreground: ``(H, W, 3)`` uint8 RGB colour of the characters (undefined where alpha is 0).
        background: ``(H, W, 3)`` uint8 RGB background without characters.
        thin: ``(H, W)`` bool, the pixels of thin structures (hair strands, ribbons, props
            under about 3 px wide), where thin-structure errors are measured.
    """

    image: np.ndarray
    alpha: np.ndarray
    character_alphas: tuple[np.ndarray, ...]
    foreground: np.ndarray
    background: np.ndarray
    thin: np.ndarray | None = None

    @property
    def character_masks(self) -> tuple[np.ndarray, ...]:
        """Per character ``(H, W)`` bool mask (alpha >= 0.5)."""
        return tuple(a >= 0.5 for a in self.character_alphas)


PALETTE = [
    ((250, 214, 190), (235, 90, 120), (60, 70, 160)),   # skin, hair, clothes
    ((245, 205, 180), (250, 220, 90), (200, 60, 60)),
    ((240, 200, 175), (90, 60, 140), (40, 150, 120)),
]


def make_background(kind: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """``(H, W, 3)`` uint8 background: ``flat``, ``gradient``, ``textured`` or ``busy``."""
    if kind == "flat":
        colour = rng.integers(170, 256, 3)
        return np.ascontiguousarray(np.broadcast_to(colour.astype(np.uint8), (height, width, 3)))
    if kind == "gradient":
        top, bottom = rng.integers(150, 256, 3), rng.integers(60, 200, 3)
        t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
        grad = top[None, None, :] * (1 - t) + bottom[None, None, :] * t
        return np.ascontiguousarray(np.broadcast_to(grad, (height, width, 3)), dtype=np.uint8)
    if kind in ("textured", "busy"):
        base = make_background("gradient", height, width, rng).astype(np.float32)
        noise = rng.normal(0, 1, (height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
        noise = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
        base += noise * (12 if kind == "textured" else 30)
        if kind == "busy":
            for _ in range(40):
                centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
                axes = (int(rng.integers(10, width // 5)), int(rng.integers(10, height // 5)))
                colour = tuple(int(c) for c in rng.integers(0, 256, 3))
                cv2.ellipse(base, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
            base += rng.normal(0, 10, base.shape).astype(np.float32)
        return np.clip(base, 0, 255).astype(np.uint8)
    raise ValueError(f"expected background kind flat|gradient|textured|busy, got {kind!r}")


def _draw_character(
    fg: np.ndarray,
    cover: np.ndarray,
    cx: int,
    cy: int,
    size: int,
    palette_index: int,
    rng: np.random.Generator,
    thin_cover: np.ndarray | None = None,
) -> None:
    """Draw one character at 4x scale into colour ``fg`` and coverage ``cover`` (uint8 0/255).

    ``thin_cover`` (same shape as ``cover``), when given, also receives the hair strands.
    """
    s = SUPERSAMPLE
    skin, hair, cloth = (tuple(int(v) for v in c) for c in PALETTE[palette_index % len(PALETTE)])
    shade = tuple(int(v * 0.78) for v in cloth)
    line = (35, 25, 40)
    head_r = size // 5
    head = (cx * s, (cy - size // 2 + head_r) * s)
    body = np.array(
        [
            [cx - size // 4, cy - size // 2 + 2 * head_r],
            [cx + size // 4, cy - size // 2 + 2 * head_r],
            [cx + size // 3, cy + size // 2],
            [cx - size // 3, cy + size // 2],
        ],
        np.int32,
    ) * s
    # Hair strands and a ribbon: thin curves 2-3 px wide at 1x, sticking out of the head.
    strands = []
    for k in range(5):
        angle = rng.uniform(-2.6, -0.5) if k < 4 else rng.uniform(0.2, 0.6)
        length = rng.uniform(0.2, 0.4) * size
        t = np.linspace(0, 1, 24)
        bend = rng.uniform(-0.4, 0.4)
        xs = head[0] / s + np.cos(angle + bend * t) * (head_r + length * t)
        ys = head[1] / s + np.sin(angle + bend * t) * (head_r + length * t)
        strands.append((np.stack([xs, ys], 1) * s).astype(np.int32))
    shapes = [
        ("poly", body, cloth),
        ("circle", head, skin),
    ]
    for kind, geom, colour in shapes:
        for target, value in ((fg, colour), (cover, 255)):
            if kind == "poly":
                cv2.fillPoly(target, [geom], value)
                cv2.polylines(target, [geom], True, line if target is fg else value, 3 * s)
            else:
                cv2.circle(target, geom, head_r * s, value, -1)
                cv2.circle(target, geom, head_r * s, line if target is fg else value, 3 * s)
    # Cel shading: a darker band on one side of the body.
    shade_poly = np.array([body[1], body[2], (body[1] + body[2]) // 2 - [size * s // 8, 0]], np.int32)
    cv2.fillPoly(fg, [shade_poly], shade)
    # Hair cap over the head, then the strands.
    cv2.ellipse(fg, head, (head_r * s, head_r * s), 0, 180, 360, hair, -1)
    for k, strand in enumerate(strands):
        width = (2 if k % 2 else 3) * s
        colour = hair if k < 4 else (230, 60, 90)
        cv2.polylines(fg, [strand], False, colour, width)
        cv2.polylines(cover, [strand], False, 255, width)
        if thin_cover is not None:
            cv2.polylines(thin_cover, [strand], False, 255, width)


def _finished_scene(
    image: np.ndarray, alphas: list[np.ndarray], fg_total: np.ndarray, bg: np.ndarray, thin: np.ndarray
) -> Scene:
    """The :class:`Scene` of float layers composited by :func:`_layer_over` (rounded to uint8)."""
    return Scene(
        image=np.clip(image + 0.5, 0, 255).astype(np.uint8),
        alpha=np.clip(np.sum(alphas, axis=0), 0, 1).astype(np.float32),
        character_alphas=tuple(alphas),
        foreground=np.clip(fg_total + 0.5, 0, 255).astype(np.uint8),
        background=bg,
        thin=thin,
    )


def _layer_over(
    image: np.ndarray, fg_total: np.ndarray, fg: np.ndarray, cover: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Put one supersampled character layer over ``image`` (float RGB at ``size`` = ``(W, H)``).

    ``fg`` (uint8 RGB) and ``cover`` (uint8 coverage) are drawn at the supersampled size; they
    are area-averaged down, so the layer's alpha is its exact coverage. Returns the new
    image, the running true foreground colour and the layer's ``(H, W)`` float32 alpha.
    """
    alpha = cv2.resize(cover, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    premult = cv2.resize(fg.astype(np.float32) * (cover[:, :, None] / 255.0), size, interpolation=cv2.INTER_AREA)
    colour = premult / np.maximum(alpha[:, :, None], 1e-6)
    image = image * (1 - alpha[:, :, None]) + premult
    fg_total = np.where(alpha[:, :, None] > 0, colour, fg_total)
    return image, fg_total, alpha


def make_scene(
    n_characters: int = 2,
    background: str = "flat",
    size: tuple[int, int] = (360, 640),
    seed: int = 0,
) -> Scene:
    """Render 1-3 separate characters over a background with exact alpha.

    Args:
        n_characters: how many characters (1 to 3), placed side by side.
        background: ``flat``, ``gradient``, ``textured`` or ``busy``.
        size: ``(H, W)`` of the picture.
        seed: random seed; the same seed gives the same scene.
    """
    if not 1 <= n_characters <= 3:
        raise ValueError(f"expected 1 to 3 characters, got {n_characters}")
    height, width = size
    rng = np.random.default_rng(seed)
    bg = make_background(background, height, width, rng)
    s = SUPERSAMPLE
    image = bg.astype(np.float32)
    fg_total = np.zeros_like(image)
    alphas = []
    slot = width // n_characters
    char_size = int(min(slot * 0.62, height * 0.62))
    thin = np.zeros((height, width), bool)
    for i in range(n_characters):
        fg = np.zeros((height * s, width * s, 3), np.uint8)
        cover = np.zeros((height * s, width * s), np.uint8)
        thin_cover = np.zeros((height * s, width * s), np.uint8)
        cx = slot * i + slot // 2 + int(rng.integers(-slot // 12, slot // 12 + 1))
        cy = int(height * 0.56) + int(rng.integers(-height // 20, height // 20 + 1))
        _draw_character(fg, cover, cx, cy, char_size, i + seed, rng, thin_cover)
        thin |= _thin_pixels(thin_cover, cover, (width, height))
        image, fg_total, alpha = _layer_over(image, fg_total, fg, cover, (width, height))
        alphas.append(alpha)
    return _finished_scene(image, alphas, fg_total, bg, thin)


def _thin_pixels(thin_cover: np.ndarray, cover: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` bool: pixels a thin structure touches (grown by 1 px), minus the solid body.

    ``thin_cover`` and ``cover`` are 4x-supersampled uint8 coverages; ``size`` is ``(W, H)``.
    """
    thin = cv2.resize(thin_cover, size, interpolation=cv2.INTER_AREA) > 0
    thin = cv2.dilate(thin.view(np.uint8), np.ones((3, 3), np.uint8)) > 0
    body_only = np.where(thin_cover > 0, 0, cover).astype(np.uint8)
    solid = cv2.resize(body_only, size, interpolation=cv2.INTER_AREA) >= 255
    return thin & ~solid


def coarse_mask(alpha: np.ndarray, *, long_side: int = 640, threshold: float = 0.5) -> np.ndarray:
    """What a detector at ``long_side`` resolution gives: ``(H, W)`` float32 soft mask.

    The alpha is downscaled, thresholded there, and upsampled bilinearly: edges
    off by up to a detector pixel, thin strands lost.
    """
    height, width = alpha.shape
    scale = min(1.0, long_side / max(height, width))
    small = cv2.resize(alpha, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    small = (small >= threshold).astype(np.float32)
    return np.clip(cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR), 0, 1)


def refine_net_like(alpha: np.ndarray, *, long_side: int = 720, blur_px: float = 1.2) -> np.ndarray:
    """What an ISNet refiner gives after its 720-px round trip: ``(H, W)`` float32 soft mask."""
    height, width = alpha.shape
    scale = min(1.0, long_side / max(height, width))
    small = cv2.resize(alpha, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), blur_px)
    return np.clip(cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR), 0, 1).astype(np.float32)


# ---------------------------------------------------------------------------- hair and thin props
#: Backgrounds of :func:`make_strand_scene`: :func:`make_background`'s kinds plus these.
STRAND_BACKGROUNDS = ("flat", "gradient", "textured", "busy", "paper", "bokeh", "stripes", "painted", "close", "photo")


def _extra_background(kind: str, height: int, width: int, rng: np.random.Generator, hair: tuple[int, ...]) -> np.ndarray:
    """The backgrounds :func:`make_background` does not draw, ``(H, W, 3)`` uint8."""
    if kind == "paper":
        base = np.full((height, width, 3), rng.integers(225, 246, 3), np.float32)
        fibres = rng.normal(0, 1, (height, width)).astype(np.float32)
        fibres = cv2.GaussianBlur(fibres, (0, 0), 0.7) * 9
        return np.clip(base + fibres[:, :, None] - np.array([0, 2, 6], np.float32), 0, 255).astype(np.uint8)
    if kind == "bokeh":
        base = np.zeros((height, width, 3), np.float32)
        base[:] = rng.integers(10, 60, 3)
        for _ in range(60):
            centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            radius = int(rng.integers(width // 60 + 2, width // 12 + 3))
            colour = tuple(float(c) for c in rng.integers(60, 256, 3))
            layer = np.zeros_like(base)
            cv2.circle(layer, centre, radius, colour, -1, cv2.LINE_AA)
            base = np.maximum(base, layer * float(rng.uniform(0.3, 0.9)))
        return np.clip(cv2.GaussianBlur(base, (0, 0), max(1.0, width / 300)), 0, 255).astype(np.uint8)
    if kind == "stripes":
        period = int(rng.integers(6, 14))
        first, second = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        y, x = np.mgrid[0:height, 0:width]
        on = ((x + y) // period) % 2 == 0
        return np.where(on[:, :, None], first, second).astype(np.uint8)
    if kind == "painted":
        blobs = rng.integers(0, 256, (6, 10, 3)).astype(np.float32)
        base = cv2.resize(blobs, (width, height), interpolation=cv2.INTER_CUBIC)
        strokes = rng.normal(0, 1, (height // 3 + 1, width // 3 + 1, 3)).astype(np.float32)
        strokes = cv2.resize(strokes, (width, height), interpolation=cv2.INTER_LINEAR) * 14
        return np.clip(base + strokes, 0, 255).astype(np.uint8)
    if kind == "close":
        # A background within a few dozen levels of the hair colour, gently textured.
        shift = rng.integers(-28, 29, 3).astype(np.float32)
        shift += np.sign(shift) * 8
        base = np.full((height, width, 3), np.array(hair, np.float32) + shift, np.float32)
        noise = rng.normal(0, 1, (height // 16 + 1, width // 16 + 1, 3)).astype(np.float32)
        base += cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC) * 6
        return np.clip(base, 0, 255).astype(np.uint8)
    if kind == "photo":
        from pathlib import Path

        path = Path(__file__).resolve().parents[1] / "assets" / "backgrounds" / "night.jpg"
        picture = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if picture is None:
            raise ValueError(f"expected a readable background picture at {path}")
        return np.ascontiguousarray(cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA)[:, :, ::-1])
    return make_background(kind, height, width, rng)


def _tapered(target: np.ndarray, points: np.ndarray, widths: np.ndarray, value) -> None:
    """Draw a polyline at 4x whose width (in 4x pixels, >= 1) varies per segment."""
    for k in range(len(points) - 1):
        p, q = (int(points[k, 0]), int(points[k, 1])), (int(points[k + 1, 0]), int(points[k + 1, 1]))
        cv2.line(target, p, q, value, max(1, int(round(widths[k]))), cv2.LINE_8)


def make_strand_scene(
    background: str = "flat",
    size: tuple[int, int] = (1080, 1920),
    seed: int = 0,
    n_characters: int = 1,
) -> Scene:
    """A hair-heavy scene: :func:`make_scene`'s characters plus what matting tools lose.

    Each character gets tapered hair strands from 2.5 px at the root to 0.25 px at the tip,
    two floating strands 0.25-1 px wide not touching anything, an ahoge loop (1.5 px)
    and a thin staff (1.5-2 px) as a prop. ``thin`` marks all of them.

    Args:
        background: one of :data:`STRAND_BACKGROUNDS` (``close``: near the hair colour;
            ``photo``: the bundled night picture).
        size: ``(H, W)``.
        seed: random seed.
        n_characters: 1 to 3.
    """
    if background not in STRAND_BACKGROUNDS:
        raise ValueError(f"expected background in {STRAND_BACKGROUNDS}, got {background!r}")
    if not 1 <= n_characters <= 3:
        raise ValueError(f"expected 1 to 3 characters, got {n_characters}")
    height, width = size
    rng = np.random.default_rng(seed)
    hair_of_first = PALETTE[seed % len(PALETTE)][1]
    bg = _extra_background(background, height, width, rng, hair_of_first)
    s = SUPERSAMPLE
    image = bg.astype(np.float32)
    fg_total = np.zeros_like(image)
    alphas = []
    thin = np.zeros((height, width), bool)
    slot = width // n_characters
    char_size = int(min(slot * 0.55, height * 0.55))
    for i in range(n_characters):
        fg = np.zeros((height * s, width * s, 3), np.uint8)
        cover = np.zeros((height * s, width * s), np.uint8)
        thin_cover = np.zeros((height * s, width * s), np.uint8)
        cx = slot * i + slot // 2 + int(rng.integers(-slot // 16, slot // 16 + 1))
        cy = int(height * 0.58)
        palette = i + seed
        _draw_character(fg, cover, cx, cy, char_size, palette, rng, thin_cover)
        hair = tuple(int(v) for v in PALETTE[palette % len(PALETTE)][1])
        head_r = char_size // 5
        head = np.array([cx, cy - char_size // 2 + head_r], np.float64)
        # Tapered strands flowing out and down from the head.
        for _ in range(7):
            angle = rng.uniform(-3.0, 0.1)
            length = rng.uniform(0.25, 0.5) * char_size
            t = np.linspace(0, 1, 48)
            bend = rng.uniform(-0.7, 0.7)
            xs = head[0] + np.cos(angle + bend * t) * (head_r * 0.9 + length * t)
            ys = head[1] + np.sin(angle + bend * t) * (head_r * 0.9 + length * t) + 0.3 * length * t * t
            widths = (2.5 - 2.25 * t[:-1]) * s
            points = np.stack([xs, ys], 1) * s
            for target, value in ((fg, hair), (cover, 255), (thin_cover, 255)):
                _tapered(target, points, widths, value)
        # Floating strands: thin curves near the head, not touching it.
        for _ in range(2):
            angle = rng.uniform(-2.8, -0.3)
            start = head + np.array([np.cos(angle), np.sin(angle)]) * head_r * rng.uniform(1.4, 1.8)
            t = np.linspace(0, 1, 32)
            direction = angle + rng.uniform(-0.8, 0.8)
            length = rng.uniform(0.12, 0.25) * char_size
            xs = start[0] + np.cos(direction) * length * t + 6 * np.sin(6 * t)
            ys = start[1] + np.sin(direction) * length * t
            widths = np.full(31, rng.uniform(0.25, 1.0) * s)
            points = np.stack([xs, ys], 1) * s
            for target, value in ((fg, hair), (cover, 255), (thin_cover, 255)):
                _tapered(target, points, widths, value)
        # Ahoge: a loop of hair standing on top of the head.
        top = head - np.array([0, head_r])
        t = np.linspace(0, 2 * np.pi, 64)
        loop_r = head_r * 0.35
        xs = top[0] + loop_r * 0.6 * np.sin(t)
        ys = top[1] - loop_r * (1 - np.cos(t))
        points = np.stack([xs, ys], 1) * s
        for target, value in ((fg, hair), (cover, 255), (thin_cover, 255)):
            _tapered(target, points, np.full(63, 1.5 * s), value)
        # A staff held beside the body: a long straight prop 1.5-2 px wide.
        staff_colour = (120, 85, 50) if background != "close" else (200, 200, 210)
        x_staff = cx + char_size // 3 + char_size // 10
        p = np.array([[x_staff, cy - char_size // 2], [x_staff + char_size // 12, cy + char_size // 2]], np.float64) * s
        staff_width = rng.uniform(1.5, 2.0) * s
        for target, value in ((fg, staff_colour), (cover, 255), (thin_cover, 255)):
            _tapered(target, p, np.array([staff_width]), value)
        image, fg_total, alpha = _layer_over(image, fg_total, fg, cover, (width, height))
        alphas.append(alpha)
        thin |= _thin_pixels(thin_cover, cover, (width, height))
    return _finished_scene(image, alphas, fg_total, bg, thin)
