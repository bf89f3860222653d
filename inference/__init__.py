"""Nukki's engine: decode, segment characters, matte, composite and export.

Nothing here imports Streamlit. Only :mod:`inference.rtmdet` imports mmdet/mmcv;
everything else runs on numpy, OpenCV, Pillow (and torch for the refiners).
"""
