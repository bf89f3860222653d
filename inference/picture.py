"""A decoded picture and its names: what every door hands the engine.

:class:`Picture` holds the ``(H, W, 3)`` uint8 RGB pixels (read-only, shared by
caches), a digest of the file's bytes (the key of every per-picture cache), the
file's name and its :func:`~inference.image_io.safe_stem`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inference.image_io import check_rgb_image, load_image, read_picture_bytes, safe_stem
from inference.pipeline import image_digest


@dataclass(frozen=True, eq=False)
class Picture:
    """A decoded picture and its names.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB, read-only (shared by caches; a writeable array
            given to the constructor is copied, so the caller's stays writeable).
        digest: content address (hash of the file's bytes, or of the array for
            :meth:`from_array`); detection caches are keyed by it.
        name: the file name it came with (for manifests and messages).
        stem: :func:`safe_stem` of ``name`` (output files are ``<stem>_cutout.png`` ...).
    """

    image: np.ndarray
    digest: str
    name: str = "picture"
    stem: str = ""

    def __post_init__(self) -> None:
        check_rgb_image(self.image)
        if not self.digest:
            raise ValueError("expected a non-empty digest, got ''")
        if self.image.flags.writeable:  # the caller's array stays as it was: keep a frozen copy
            image = self.image.copy()
            image.flags.writeable = False
            object.__setattr__(self, "image", image)
        if not self.stem:
            object.__setattr__(self, "stem", safe_stem(self.name))

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    @classmethod
    def from_bytes(cls, data: bytes, *, name: str = "picture", max_pixels: int | None = None) -> Picture:
        """Decode an uploaded file (``max_pixels`` ``None``: :func:`pixel_limit`, 24 MP unless
        ``NUKKI_MAX_PIXELS`` says otherwise).

        Raises:
            ImageLoadError: (a ``ValueError``) not a picture Nukki can use; the message says why.
        """
        loaded = load_image(data, max_pixels=max_pixels)
        loaded.image.flags.writeable = False  # decoded here and shared by nobody else: freeze, no copy
        return cls(loaded.image, image_digest(bytes(data)), name, safe_stem(name))

    @classmethod
    def from_path(cls, path: str | Path, *, max_pixels: int | None = None) -> Picture:
        """Decode a picture file (see :meth:`from_bytes`); its name is the file name."""
        path = Path(path)
        return cls.from_bytes(read_picture_bytes(path), name=path.name, max_pixels=max_pixels)

    @classmethod
    def from_array(cls, image: np.ndarray, *, name: str = "picture") -> Picture:
        """Wrap an ``(H, W, 3)`` uint8 RGB array (copied); the digest hashes its shape and pixels."""
        check_rgb_image(image)
        image = np.ascontiguousarray(image).copy()
        image.flags.writeable = False
        digest = hashlib.blake2b(repr(image.shape).encode() + image.tobytes(), digest_size=16).hexdigest()
        return cls(image, digest, name, safe_stem(name))
