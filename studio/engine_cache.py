"""The expensive engine calls, cached across reruns with Streamlit's caches.

* Models (segmenters, refiners) are loaded once per process: ``st.cache_resource``.
* A detection is computed once per picture and detection settings: keyed by the
  picture's digest (a hash of its bytes) and the settings, bounded in count and
  age. The digest is a content address, so a session can only ever get back a
  detection of a picture it uploaded itself.
* Slider and background changes never come here.

The ``_image`` arguments start with an underscore so Streamlit does not hash
megapixels of RGB on every call: the digest already names the picture.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import streamlit as st

from inference import pipeline
from inference.image_io import load_image
from inference.instances import Click, Instances
from inference.pipeline import Detection
from inference.segmenter import (
    BackendChoice,
    DetectionSettings,
    Refiner,
    Segmenter,
    create_refiner,
    create_segmenter,
)
from studio.assets import Asset

#: Detections kept per process (each holds box-cropped masks: a few MB).
DETECTION_CACHE_ENTRIES = 32
DETECTION_CACHE_TTL_S = 3600


def _settings_key(settings: DetectionSettings) -> tuple:
    return dataclasses.astuple(settings)


@st.cache_resource(max_entries=4, show_spinner=False)
def _segmenter(settings_key: tuple) -> tuple[Segmenter, BackendChoice]:
    return create_segmenter(DetectionSettings(*settings_key))


@st.cache_resource(max_entries=2, show_spinner=False)
def _refiner(name: str, device: str | None, trust: bool) -> Refiner | None:
    return create_refiner(name, device=device, trust=trust)


def segmenter(settings: DetectionSettings) -> tuple[Segmenter, BackendChoice]:
    """The segmenter ``settings`` asks for (loaded once) and why it was chosen.

    Raises:
        ModelUnavailable: the requested model cannot run here.
    """
    return _segmenter(_settings_key(settings))


def point_segmenter() -> Segmenter:
    """The classic segmenter, whose point prompt adds a character under a click."""
    return segmenter(DetectionSettings(backend="classic"))[0]


@st.cache_resource(max_entries=DETECTION_CACHE_ENTRIES, ttl=DETECTION_CACHE_TTL_S, show_spinner=False)
def _detect(digest: str, settings_key: tuple, _image: np.ndarray) -> Detection:
    settings = DetectionSettings(*settings_key)
    model, choice = segmenter(settings)
    refiner = None
    if settings.refine != "none":
        refiner = _refiner(settings.refine, settings.device, settings.trust_checkpoints)
    detection = pipeline.detect_characters(_image, settings, segmenter=model, refiner=refiner)
    # The pipeline only knows "a segmenter was given"; keep the reason auto chose it.
    return dataclasses.replace(detection, choice=choice)


def detect(image: np.ndarray, digest: str, settings: DetectionSettings) -> Detection:
    """Every character in the picture named by ``digest`` (computed once per settings).

    Raises:
        ModelUnavailable: the requested model cannot run here.
        ValueError: the picture is not ``(H, W, 3)`` uint8.
    """
    return _detect(digest, _settings_key(settings), image)


def add_at(image: np.ndarray) -> Callable[[Instances, Click], Instances]:
    """The point prompt for :meth:`studio.selection.SelectionHistory.click` on this picture."""

    def grow(instances: Instances, click: Click) -> Instances:
        return pipeline.add_characters_at_clicks(image, instances, [click], point_segmenter())

    return grow


@st.cache_resource(max_entries=16, show_spinner=False)
def _bundled_picture(path: str, mtime: float) -> np.ndarray:
    image = load_image(path).image
    image.flags.writeable = False  # shared by every session
    return image


def bundled_picture(asset: Asset) -> np.ndarray:
    """A bundled sample or background, decoded once per process (``(H, W, 3)`` uint8)."""
    return _bundled_picture(str(asset.path), asset.path.stat().st_mtime)
