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
    """

    image: np.ndarray
    alpha: np.ndarray
    character_alphas: tuple[np.ndarray, ...]
    foreground: np.ndarray
    background: np.ndarray

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
    fg: np.ndarray, cover: np.ndarray, cx: int, cy: int, size: int, palette_index: int, rng: np.random.Generator
) -> None:
    """Draw one character at 4x scale into colour ``fg`` and coverage ``cover`` (uint8 0/255)."""
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
    for i in range(n_characters):
        fg = np.zeros((height * s, width * s, 3), np.uint8)
        cover = np.zeros((height * s, width * s), np.uint8)
        cx = slot * i + slot // 2 + int(rng.integers(-slot // 12, slot // 12 + 1))
        cy = int(height * 0.56) + int(rng.integers(-height // 20, height // 20 + 1))
        _draw_character(fg, cover, cx, cy, char_size, i + seed, rng)
        alpha = cv2.resize(cover, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        premult = cv2.resize(
            fg.astype(np.float32) * (cover[:, :, None] / 255.0), (width, height), interpolation=cv2.INTER_AREA
        )
        colour = premult / np.maximum(alpha[:, :, None], 1e-6)
        image = image * (1 - alpha[:, :, None]) + premult
        fg_total = np.where(alpha[:, :, None] > 0, colour, fg_total)
        alphas.append(alpha)
    union = np.clip(np.sum(alphas, axis=0), 0, 1).astype(np.float32)
    return Scene(
        image=np.clip(image + 0.5, 0, 255).astype(np.uint8),
        alpha=union,
        character_alphas=tuple(alphas),
        foreground=np.clip(fg_total + 0.5, 0, 255).astype(np.uint8),
        background=bg,
    )


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
