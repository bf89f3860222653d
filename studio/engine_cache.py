"""What the studio keeps across reruns and sessions, bounded.

* Models are loaded once per process by :mod:`inference.model_cache` (bounded LRU,
  thread-safe); detections are cached by :data:`inference.detection_cache.SHARED_DETECTIONS`
  (bounded in count and age), keyed by the picture's digest and the detection
  settings. A digest is a content address, so a session only ever gets back a
  detection of a picture it uploaded itself.
* Bundled pictures (samples, backgrounds) are decoded once per process here.
* Slider and background changes never come here.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from inference.image_io import load_image
from studio.assets import Asset


@st.cache_resource(max_entries=16, show_spinner=False)
def _bundled_picture(path: str, mtime: float) -> np.ndarray:
    image = load_image(path).image
    image.flags.writeable = False  # shared by every session
    return image


def bundled_picture(asset: Asset) -> np.ndarray:
    """A bundled sample or background, decoded once per process (``(H, W, 3)`` uint8)."""
    return _bundled_picture(str(asset.path), asset.path.stat().st_mtime)
