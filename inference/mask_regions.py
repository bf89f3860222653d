"""Connected pieces of a mask: drop small ones (specks) and fill small enclosed holes, in place.

:func:`remove_small_regions` and :func:`fill_small_holes` (re-exported by
:mod:`inference.matte`), their in-place working parts (also those of ``refine_alpha``'s island
and hole steps, with areas measured in full-resolution pixels so a shrunk preview keeps them),
and the whole step of the matte (:func:`clean_mask`).

At full resolution the pieces are found from their contours (``cv2.findContours`` follows
8-connected foreground and 4-connected holes, the connectivities used here), which costs a
fraction of labelling every pixel: a piece's bounding box bounds its area from both sides
(an 8-connected piece spanning ``n`` columns has at least ``n`` pixels, and at most its box's),
so only pieces the box leaves undecided are labelled, inside their own box. A preview, which
measures areas by coverage, sorts its pieces the same way and sums coverage over the boxes of
the undecided ones only (the character itself, the costly part of a full sum, never is).

:func:`boxes_at_or_above` finds where a soft map reaches given levels (the boxes the matte
works in) without a full-size temporary.
"""

from __future__ import annotations

from concurrent.futures import Future

import cv2
import numpy as np

from inference import band_matting
from inference.matte_checks import check_count, check_mask
from inference.side_threads import side_workers


def remove_small_regions(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop foreground specks: 8-connected True components of fewer than ``min_area`` pixels.

    Args:
        mask: ``(H, W)`` bool.
        min_area: smallest component kept, in pixels, >= 0 (0 and 1 keep everything).

    Returns:
        A new ``(H, W)`` bool mask.
    """
    mask = check_mask(mask)
    min_area = check_count(min_area, "min_area", minimum=0)
    out = np.array(mask, dtype=np.bool_, order="C", copy=True)
    remove_small_regions_inplace(out, min_area)
    return out


def fill_small_holes(mask: np.ndarray, max_area: int) -> np.ndarray:
    """Plug pin holes: 4-connected False components off the border, of fewer than ``max_area`` pixels.

    Holes use 4-connectivity, the counterpart of the 8-connected foreground of
    :func:`remove_small_regions`, so a hole never leaks through a diagonal gap.
    Background touching the picture's border is never filled, whatever its size.

    Args:
        mask: ``(H, W)`` bool.
        max_area: holes with fewer pixels than this are filled, >= 0 (0 and 1 fill nothing).

    Returns:
        A new ``(H, W)`` bool mask.
    """
    mask = check_mask(mask)
    max_area = check_count(max_area, "max_area", minimum=0)
    out = np.array(mask, dtype=np.bool_, order="C", copy=True)
    fill_small_holes_inplace(out, max_area)
    return out


def component_areas(labels: np.ndarray, count: int, coverage: np.ndarray | None, pixel_area: float) -> np.ndarray:
    """Area of each labelled component in full-resolution pixels.

    Without ``coverage`` it is the pixel count times ``pixel_area``. A preview passes the
    shrunk map's ``coverage`` (how much of each preview pixel the component's side covers):
    a component's area is then the coverage summed over it and the ring of partly covered
    pixels around it, so specks and holes a few full-resolution pixels wide keep their size.
    """
    return _areas_within(labels, count, coverage, pixel_area, None)


def _areas_within(
    labels: np.ndarray,
    count: int,
    coverage: np.ndarray | None,
    pixel_area: float,
    boxes: list[tuple[int, int, int, int]] | None,
) -> np.ndarray:
    """:func:`component_areas` from the pixels in ``boxes`` (xywh; None: all): exact for each
    component that lies, with its ring, inside them, partial for the others. Summing a few small
    boxes rather than the whole map (whose biggest pieces are no speck and no hole) is what
    makes a preview's island and hole steps cheap."""
    height, width = labels.shape
    x0, y0, x1, y1, inside = 0, 0, width, height, None
    if boxes is not None:
        # The boxes' pixels (the labels dilated within their bounding rectangle and a margin of
        # one pixel, which is all the dilation reads), in raster order: the sums are the same.
        x0 = max(0, min(x for x, _, _, _ in boxes) - 1)
        y0 = max(0, min(y for _, y, _, _ in boxes) - 1)
        x1 = min(width, max(x + w for x, _, w, _ in boxes) + 1)
        y1 = min(height, max(y + h for _, y, _, h in boxes) + 1)
        selected = np.zeros((y1 - y0, x1 - x0), np.uint8)
        for x, y, w, h in boxes:
            selected[y - y0 : y + h - y0, x - x0 : x + w - x0] = 1
        inside = np.flatnonzero(selected)
    grown = labels[y0:y1, x0:x1]
    weights = None
    if coverage is not None:
        grown = cv2.dilate(grown.astype(np.float32), np.ones((3, 3), np.uint8)).astype(np.int32)
        weights = np.ascontiguousarray(coverage[y0:y1, x0:x1]).reshape(-1)
    grown = np.ascontiguousarray(grown).reshape(-1)
    if inside is not None:
        grown = grown[inside]
        weights = None if weights is None else weights[inside]
    return np.bincount(grown, weights=weights, minlength=count) * pixel_area


#: A preview with more pieces (or holes) than this measures them over the whole map at once: for
#: thousands of specks, tracing and sorting each costs more than one full sum.
_PREVIEW_MAX_PIECES = 256


def _contours(mask: np.ndarray, holes: bool) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """``(contour, bounding box xywh)`` of the mask's 8-connected pieces (all of them, nested
    ones too) or, with ``holes``, of the 4-connected holes inside them."""
    contours, hierarchy = cv2.findContours(mask.view(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return []
    is_hole = hierarchy[0][:, 3] >= 0
    return [(c, cv2.boundingRect(c)) for c, hole in zip(contours, is_hole) if hole == holes]


def remove_small_regions_inplace(
    mask: np.ndarray,
    min_area: float,
    *,
    coverage: np.ndarray | None = None,
    pixel_area: float = 1.0,
    coverage_floor: float = 0.0,
) -> int:
    """:func:`remove_small_regions` on a contiguous mask, in place; returns how many specks went.

    ``min_area`` is in full-resolution pixels; see :func:`component_areas` for the others.
    ``coverage_floor``: the least ``coverage`` of any mask pixel, if known (pieces it proves big
    enough are not measured).
    """
    if min_area <= 1:
        return 0
    if coverage is not None or pixel_area != 1.0:
        return _remove_small_covered_regions(mask, min_area, coverage, pixel_area, coverage_floor)
    tiny, undecided = [], []
    for contour, (x, y, w, h) in _contours(mask, holes=False):
        if max(w, h) >= min_area:
            continue  # at least one pixel per column and per row it spans
        (tiny if w * h < min_area else undecided).append((contour, (x, y, w, h)))
    # Filling an outer contour clears the piece and whatever lies in its holes: in a box this
    # small that is specks only, each of them removed (and counted) through its own contour.
    if tiny:
        cv2.drawContours(mask.view(np.uint8), [c for c, _ in tiny], -1, 0, thickness=cv2.FILLED)
    removed = len(tiny)
    for contour, (x, y, w, h) in undecided:
        box = mask[y : y + h, x : x + w]
        _, labels = cv2.connectedComponents(box.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
        px, py = contour[0, 0]
        piece = labels == labels[py - y, px - x]
        if np.count_nonzero(piece) < min_area:
            box[piece] = False
            removed += 1
    return removed


def _remove_small_covered_regions(
    mask: np.ndarray, min_area: float, coverage: np.ndarray | None, pixel_area: float, coverage_floor: float
) -> int:
    """:func:`remove_small_regions_inplace` with areas from ``coverage`` or ``pixel_area``
    (:func:`component_areas`), measuring only the pieces their bounding box leaves in doubt: an
    8-connected piece spanning ``n`` columns or rows has at least ``n`` pixels, each covered at
    least ``coverage_floor`` (1 without ``coverage``)."""
    floor = 1.0 if coverage is None else coverage_floor
    count, labels = cv2.connectedComponents(mask.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    boxes = None  # a speckled mask: every piece is measured at once
    if count - 1 <= _PREVIEW_MAX_PIECES:  # label 0 is the background
        undecided = [
            (contour, box) for contour, box in _contours(mask, holes=False) if floor * max(box[2:]) * pixel_area < min_area
        ]
        if not undecided:
            return 0
        height, width = mask.shape
        boxes = []  # each piece's box and the ring of pixels around it (coverage counts the ring too)
        for _, (x, y, w, h) in undecided:
            x0, y0 = max(0, x - 1), max(0, y - 1)
            boxes.append((x0, y0, min(width, x + w + 1) - x0, min(height, y + h + 1) - y0))
    small = _areas_within(labels, count, coverage, pixel_area, boxes) < min_area
    small[0] = False
    if boxes is not None:
        measured = np.zeros(count, np.bool_)
        measured[[labels[contour[0, 0, 1], contour[0, 0, 0]] for contour, _ in undecided]] = True
        small &= measured  # the pieces wholly inside the boxes (others' sums are partial)
    removed = int(small.sum())
    if removed and boxes is None:
        mask[small[labels]] = False
    elif removed:
        for x, y, w, h in boxes:
            box = mask[y : y + h, x : x + w]
            box[small[labels[y : y + h, x : x + w]]] = False
    return removed


def fill_small_holes_inplace(
    mask: np.ndarray,
    max_area: float,
    *,
    coverage: np.ndarray | None = None,
    pixel_area: float = 1.0,
    enclosed: np.ndarray | None = None,
) -> int:
    """:func:`fill_small_holes` on a contiguous mask, in place; returns how many holes were filled.

    ``max_area`` is in full-resolution pixels; ``coverage`` is the background's (see
    :func:`component_areas`). ``enclosed`` (bool, shaped like ``mask``) receives the
    background the mask encloses before filling: its holes of any size (full resolution only).
    """
    if max_area <= 1 and enclosed is None:
        return 0
    if enclosed is not None and (coverage is not None or pixel_area != 1.0):
        raise ValueError(f"expected enclosed at full resolution only, got pixel_area {pixel_area} and a coverage map")
    if coverage is not None or pixel_area != 1.0:
        return _fill_labelled_holes(mask, max_area, coverage, pixel_area)
    holes = _contours(mask, holes=True)
    if enclosed is not None:
        np.copyto(enclosed, mask)
        cv2.drawContours(enclosed.view(np.uint8), [c for c, _ in holes], -1, 1, thickness=cv2.FILLED)
        enclosed &= ~mask
    # A hole's contour runs through the foreground pixels around it, one pixel outside the hole.
    tiny, undecided = [], []
    for contour, (x, y, w, h) in holes:
        if max(w, h) - 2 >= max_area:
            continue  # at least one pixel per column and per row it spans
        (tiny if (w - 2) * (h - 2) < max_area else undecided).append((x, y, w, h, contour))
    # Filling a hole's contour fills the hole and what lies in it: in a box this small, pieces
    # (foreground already) and their own smaller holes, each filled (and counted) through its contour.
    if tiny:
        cv2.drawContours(mask.view(np.uint8), [c for *_, c in tiny], -1, 1, thickness=cv2.FILLED)
    filled = len(tiny)
    for x, y, w, h, _ in undecided:
        # Every background piece in the box that does not reach its edge is enclosed (a hole)
        # and lies wholly inside, so its area is exact; holes filled earlier are foreground now.
        filled += _fill_labelled_holes(mask[y : y + h, x : x + w], max_area, None, 1.0)
    return filled


def _fill_labelled_holes(mask: np.ndarray, max_area: float, coverage: np.ndarray | None, pixel_area: float) -> int:
    """Fill the background pieces of ``mask`` (a view is fine) off its edge smaller than
    ``max_area``, labelling every pixel; returns how many were filled. Areas are summed over the
    holes' boxes only (every hole lies, with its ring, inside its contour's box)."""
    background = np.logical_not(mask)
    count, labels = cv2.connectedComponents(background.view(np.uint8), connectivity=4, ltype=cv2.CV_32S)
    boxes = None
    if coverage is not None and count - 1 <= _PREVIEW_MAX_PIECES:  # label 0 is the foreground
        contiguous = np.ascontiguousarray(mask)
        # Tracing the holes traces every piece too: a speckled mask is summed whole.
        if cv2.connectedComponents(contiguous.view(np.uint8), connectivity=8)[0] - 1 <= _PREVIEW_MAX_PIECES:
            holes = _contours(contiguous, holes=True)
            if not holes:
                return 0
            boxes = [box for _, box in holes]
    small = _areas_within(labels, count, coverage, pixel_area, boxes) < max_area
    small[0] = False  # label 0 is the foreground
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        small[edge] = False  # background touching the edge is never a hole
    filled = int(small.sum())
    if filled:
        mask[small[labels]] = True
    return filled


def filled_mask(prior: np.ndarray, threshold: float, max_hole_area: int) -> tuple[np.ndarray, int, np.ndarray]:
    """The thresholded prior with its holes filled (full resolution), how many were filled, and
    the background it encloses (off the border, holes of any size: see :func:`clean_mask`)."""
    mask = prior >= np.float32(threshold)
    enclosed = np.empty_like(mask)
    return mask, fill_small_holes_inplace(mask, max_hole_area, enclosed=enclosed), enclosed


def _holes_unchanged(removed: np.ndarray, enclosed: np.ndarray) -> bool:
    """Whether dropping the mask pixels ``removed`` leaves its holes as they were: true when no
    removed pixel is 4-adjacent to enclosed background (then only the outer background grows)."""
    x, y, w, h = cv2.boundingRect(removed.view(np.uint8))
    if w == 0:
        return True
    height, width = removed.shape
    x0, y0, x1, y1 = max(0, x - 1), max(0, y - 1), min(width, x + w + 1), min(height, y + h + 1)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    reach = cv2.dilate(removed[y0:y1, x0:x1].view(np.uint8), cross).view(np.bool_)
    return not np.logical_and(reach, enclosed[y0:y1, x0:x1]).any()


def clean_mask(
    prior: np.ndarray,
    *,
    threshold: float,
    min_island_area: int,
    max_hole_area: int,
    scale: float,
    strands: np.ndarray | None,
    filled: Future | None = None,
) -> tuple[np.ndarray, np.ndarray | None, int, int]:
    """Threshold the prior, drop islands, fill holes: ``(mask, changed pixels or None, islands, holes)``.

    ``prior`` is an ``(h, w)`` float crop; areas are in full-resolution pixels, ``scale`` is
    the crop's size relative to full resolution (a preview's < 1: areas measured from coverage).

    An island is a connected piece of the mask and of ``strands`` (the same crop of
    :func:`~inference.band_matting.strand_alpha`, or None) at ``STRAND_ISLAND_LEVEL``, so a
    strand attached to the character is never an island, and a removed island takes its
    strand pixels with it (``strands`` is changed in place). ``filled``: :func:`filled_mask`
    of the same crop started earlier (full resolution), used unless a removed island borders a hole.
    """
    mask = prior >= np.float32(threshold)
    islands = holes = 0
    if min_island_area <= 1 and max_hole_area <= 1:
        return mask, None, 0, 0
    # A preview measures areas in full-resolution pixels, from the shrunk maps' coverage.
    pixel_area = 1.0 / (scale * scale)
    pieces = mask if strands is None else mask | (strands >= np.float32(band_matting.STRAND_ISLAND_LEVEL))
    coverage = None
    if scale < 1.0:
        coverage = np.clip(prior if strands is None else np.maximum(prior, strands), 0.0, 1.0)
    kept = pieces.copy()
    # Every piece's pixel covers at least the threshold (mask) or the strands' island level.
    floor = threshold if strands is None else min(threshold, band_matting.STRAND_ISLAND_LEVEL)
    islands = remove_small_regions_inplace(
        kept, min_island_area, coverage=coverage, pixel_area=pixel_area, coverage_floor=floor
    )
    cleaned = mask.copy()
    if islands:
        removed = pieces & ~kept
        if filled is not None and not _holes_unchanged(np.logical_and(removed, mask), filled.result()[2]):
            filled = None  # the holes around a removed piece of the mask change: fill them again
        cleaned &= ~removed
        if strands is not None:
            strands[cv2.dilate(removed.view(np.uint8), np.ones((3, 3), np.uint8)).view(np.bool_)] = 0.0
    if filled is not None and scale >= 1.0:
        with_holes, holes, _ = filled.result()
        cleaned = with_holes & ~removed if islands else with_holes
    elif scale < 1.0:
        # A hole narrower than a preview pixel only dims it: label holes below a level close to 1
        # (a tenth of the way down to the threshold) and measure them by their missing coverage.
        filled = cleaned & (prior >= np.float32(1.0 - (1.0 - threshold) * 0.1))
        holes = fill_small_holes_inplace(
            filled, max_hole_area, coverage=1.0 - np.clip(prior, 0.0, 1.0), pixel_area=pixel_area
        )
        cleaned |= filled
    else:
        holes = fill_small_holes_inplace(cleaned, max_hole_area)
    return cleaned, (cleaned != mask) if islands or holes else None, islands, holes


def boxes_at_or_above(prior: np.ndarray, levels: tuple[float, ...]) -> list[tuple[int, int, int, int] | None]:
    """``xyxy`` bounding box (end exclusive) of ``prior >= level`` for each level (None: no such
    pixel) of an ``(H, W)`` float map, from its row and column maxima (one pass, the top half on
    a side thread). NaN counts as below every level."""
    half = prior.shape[0] // 2
    if prior.size >= 2**18:
        top = side_workers().submit(_row_and_column_maxima, prior[:half])
        bottom_rows, bottom_columns = _row_and_column_maxima(prior[half:])
        top_rows, top_columns = top.result()
        row_max = np.concatenate([top_rows, bottom_rows])
        column_max = np.fmax(top_columns, bottom_columns, out=top_columns)
    else:
        row_max, column_max = _row_and_column_maxima(prior)
    boxes = []
    for level in levels:
        ys = np.flatnonzero(row_max >= np.float32(level))
        xs = np.flatnonzero(column_max >= np.float32(level))
        boxes.append((int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1) if ys.size else None)
    return boxes


#: Rows per block of :func:`_row_and_column_maxima`: a block of a 4K float map stays in a core's cache.
_MAXIMA_BLOCK_ROWS = 64


def _row_and_column_maxima(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(row maxima (h,), column maxima (w,))`` of an ``(h, w)`` float map, NaN ignored (a row of
    NaN gives NaN, a column -inf), read once: block by block of rows, each block's column maxima
    taken while it is still in cache."""
    height, width = values.shape
    row_max = np.empty(height, values.dtype)
    column_max = np.full(width, -np.inf, values.dtype)
    for top in range(0, height, _MAXIMA_BLOCK_ROWS):
        block = values[top : top + _MAXIMA_BLOCK_ROWS]
        np.fmax.reduce(block, axis=1, out=row_max[top : top + _MAXIMA_BLOCK_ROWS])
        np.fmax(column_max, np.fmax.reduce(block, axis=0), out=column_max)
    return row_max, column_max


def grown_box(box: tuple[int, int, int, int] | None, margin: int, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """``box`` (xyxy) grown by ``margin`` on every side, inside a map of ``shape`` ``(H, W)``."""
    if box is None:
        return None
    height, width = shape
    x0, y0, x1, y1 = box
    return max(0, x0 - margin), max(0, y0 - margin), min(width, x1 + margin), min(height, y1 + margin)
