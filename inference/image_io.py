"""Decoding pictures people upload into Nukki's ``image`` convention.

:func:`load_image` takes bytes or a path and returns an ``(H, W, 3)`` uint8 RGB
array, EXIF orientation applied, plus the file's own alpha channel when it has
one. Everything that can go wrong with the input raises :class:`ImageLoadError`
(a ``ValueError``) with a message a person can act on.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: The one pixel limit (width x height) of every door (studio, command line, batch, API):
#: 24 MP (6000 x 4000). A small file can decode to a huge picture (a PNG of one flat colour
#: compresses 1000:1), and every decoded megapixel costs about 40 MB while a cutout is worked
#: on (RGB, float32 masks, guided-filter planes, the preview), so 24 MP keeps one session
#: under about 1 GB. ``NUKKI_MAX_PIXELS`` overrides it (see :func:`pixel_limit`).
MAX_PIXELS = 24_000_000

#: File extensions of the formats people may upload, lower case, no dot
#: (PNG, JPEG, WebP, BMP, TIFF, GIF).
SUPPORTED_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif")


def pixel_limit() -> int:
    """The pixel limit in force: ``$NUKKI_MAX_PIXELS`` when it is a positive integer
    (``_`` separators allowed), else :data:`MAX_PIXELS`. Read on every call."""
    raw = os.environ.get("NUKKI_MAX_PIXELS", "").strip().replace("_", "")
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    return MAX_PIXELS


def safe_stem(name: str) -> str:
    """The one rule for naming outputs after an input: the file name's last part
    (after any ``/`` or ``\\``) without its extension, every character other than a
    letter, digit, ``-`` or ``_`` replaced by ``_``; ``"picture"`` when nothing is left.

    ``"dir\\my pic.v2.png"`` -> ``"my_pic_v2"``; ``".png"`` -> ``"picture"``.
    """
    base = str(name).replace("\\", "/").rsplit("/", 1)[-1].strip()
    stem = base.rsplit(".", 1)[0] if "." in base else base
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem.strip())
    return safe or "picture"


def unique_stems(names: Sequence[str]) -> list[str]:
    """Output stems for pictures written to one place, never two alike (ignoring case).

    The rule: each name gets :func:`safe_stem`. Names whose stems collide keep their
    extension instead (``plain.webp`` -> ``plain.webp``, ``plain.bmp`` -> ``plain.bmp``,
    so the outputs read ``plain.webp_cutout.png``, ``plain.bmp_cutout.png``). If those
    still collide (the same file name from two folders), ``-2``, ``-3``, ... are added
    in input order.
    """
    stems = [safe_stem(n) for n in names]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem.lower()] = counts.get(stem.lower(), 0) + 1
    out: list[str] = []
    taken: set[str] = set()
    for name, stem in zip(names, stems):
        if counts[stem.lower()] > 1:
            base = str(name).replace("\\", "/").rsplit("/", 1)[-1].strip()
            ext = base.rsplit(".", 1)[1] if "." in base.lstrip(".") else ""
            ext = "".join(c for c in ext if c.isalnum())
            if ext:
                stem = f"{stem}.{ext}"
        candidate, n = stem, 2
        while candidate.lower() in taken:
            candidate, n = f"{stem}-{n}", n + 1
        taken.add(candidate.lower())
        out.append(candidate)
    return out


class ImageLoadError(ValueError):
    """The input is not a picture Nukki can use; the message says why."""


class PictureTooLarge(ImageLoadError):
    """The picture has (or declares) more pixels than the limit allows (HTTP 413 in the API)."""


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """A decoded picture.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB, upright (EXIF orientation applied). A file
            with transparency is flattened over white, so hidden colour under
            transparent pixels never shows.
        alpha: ``(H, W)`` float32 in ``[0, 1]`` if the file had transparency, else ``None``.
        format: the file format as Pillow names it (``"PNG"``, ``"JPEG"``, ...).
    """

    image: np.ndarray
    alpha: np.ndarray | None
    format: str

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return self.image.shape[0], self.image.shape[1]


def check_rgb_image(image: object, what: str = "image") -> np.ndarray:
    """Return ``image`` if it follows Nukki's image convention, else raise ``ValueError``.

    The convention: an ``(H, W, 3)`` uint8 RGB numpy array with ``H, W >= 1``.
    ``what`` names the argument in the message ("expected {what} as ...").
    """
    if (
        not isinstance(image, np.ndarray)
        or image.dtype != np.uint8
        or image.ndim != 3
        or image.shape[2] != 3
        or image.shape[0] < 1
        or image.shape[1] < 1
    ):
        got = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"expected {what} as an (H, W, 3) uint8 RGB image, got {got}")
    return image


def load_image(source: bytes | str | Path, *, max_pixels: int | None = None) -> LoadedImage:
    """Decode a picture from bytes or a file path.

    Args:
        source: the encoded file (bytes) or a path to it.
        max_pixels: refuse pictures with more than this many pixels (width x height);
            ``None``: :func:`pixel_limit`.

    Returns:
        The decoded :class:`LoadedImage` (first frame of animated files).

    Raises:
        ImageLoadError: empty, truncated, corrupt, unsupported or too large input.
    """
    if max_pixels is None:
        max_pixels = pixel_limit()
    if max_pixels <= 0:
        raise ValueError(f"expected max_pixels > 0, got {max_pixels}")
    data = read_picture_bytes(source)
    if not data:
        raise ImageLoadError("The file is empty: expected a picture, got 0 bytes.")
    with warnings.catch_warnings():
        # Pillow only warns between its limit and twice its limit; refuse those too.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise PictureTooLarge(
                        f"The picture is too large: {width}x{height} = {width * height / 1e6:.1f} MP, "
                        f"the limit is {max_pixels / 1e6:.1f} MP. Scale it down and try again."
                    )
                fmt = img.format or "unknown"
                img.seek(0)
                img.load()
                upright = ImageOps.exif_transpose(img)
                image, alpha = _to_rgb_and_alpha(upright)
        except ImageLoadError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise PictureTooLarge(
                f"The picture declares too many pixels to decode safely ({exc}). It may be a decompression bomb."
            ) from None
        except UnidentifiedImageError:
            raise ImageLoadError(
                "This is not a picture Nukki can read: expected PNG, JPEG, WebP, BMP, TIFF or GIF."
            ) from None
        except (OSError, SyntaxError, EOFError, ValueError, IndexError, TypeError) as exc:
            raise ImageLoadError(f"The picture is damaged or truncated and cannot be decoded ({exc}).") from None
    return LoadedImage(image=image, alpha=alpha, format=fmt)


def read_picture_bytes(source: bytes | str | Path) -> bytes:
    """The bytes of ``source`` (returned as is) or of the file at that path.

    Raises:
        ImageLoadError: no such file, a folder, or unreadable (the message says which).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ImageLoadError(f"No such file: {path}") from None
        except IsADirectoryError:
            raise ImageLoadError(f"Expected a picture file, got a folder: {path}") from None
        except OSError as exc:
            raise ImageLoadError(f"Cannot read {path}: {exc.strerror or exc}") from None
    raise TypeError(f"expected bytes or a path, got {type(source).__name__}")


def _to_rgb_and_alpha(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Any Pillow mode to ``(H, W, 3)`` uint8 RGB and optional float32 alpha."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        gray = _high_depth_to_uint8(np.asarray(img))
        return np.repeat(gray[:, :, None], 3, axis=2), None
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = np.asarray(img.convert("RGBA"))
        alpha = rgba[:, :, 3].astype(np.float32) / 255.0
        white = np.float32(255.0)
        flat = rgba[:, :, :3].astype(np.float32) * alpha[:, :, None] + white * (1.0 - alpha[:, :, None])
        return (flat + 0.5).astype(np.uint8), alpha
    if mode == "LAB":
        raise ImageLoadError("CIELAB pictures are not supported: save it as RGB and try again.")
    return np.ascontiguousarray(np.asarray(img.convert("RGB"))), None


def _high_depth_to_uint8(values: np.ndarray) -> np.ndarray:
    """16-bit / 32-bit integer or float grey levels to uint8."""
    if values.dtype.kind == "f":
        finite = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        scale = 255.0 if finite.size and finite.max() <= 1.0 else 1.0
        return np.clip(finite * scale + 0.5, 0, 255).astype(np.uint8)
    wide = values.astype(np.int64)
    top = 65535 if wide.size and wide.max() > 255 else 255
    return np.clip((wide * 255 + top // 2) // top, 0, 255).astype(np.uint8)
