"""Cut characters out of pictures from the command line.

    python extract.py --img picture.png              # writes picture_cutout.png beside it
    python extract.py --img "art/*.jpg" --out cutouts --layers
    python extract.py --img folder/ --select largest --background "#ffffff" --format jpeg

Folders and globs are processed as a batch with a progress bar; a file that
fails is reported on one line and skipped, and the exit status is 1 if any did.
"""

from __future__ import annotations

import argparse
import glob
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from inference.composite import Background
from inference.export import cutout_png, encode_image, layers_zip, mask_png, trim_box
from inference.image_io import DEFAULT_MAX_PIXELS, SUPPORTED_EXTENSIONS, ImageLoadError, load_image
from inference.instances import Instances
from inference.matte import MatteSettings
from inference.pipeline import SELECTION_RULES, choose_by_rule, detect_characters, render_cutout, render_preview
from inference.segmenter import BACKENDS, REFINERS, DetectionSettings, ModelUnavailable, create_refiner, create_segmenter


@dataclass(frozen=True)
class OutputOptions:
    """What to write for each picture."""

    out_dir: Path | None
    select: str
    background: Background
    image_format: str
    trim: bool
    write_mask: bool
    write_layers: bool
    max_pixels: int


def expand_inputs(patterns: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Files, folders (their pictures, sorted) and globs -> (picture paths, patterns that matched nothing)."""
    found: list[Path] = []
    unmatched: list[str] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            matches = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower().lstrip(".") in SUPPORTED_EXTENSIONS
            )
        elif path.exists():
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if not matches:
            unmatched.append(pattern)
        found.extend(m for m in matches if m not in found)
    return found, unmatched


def choose_indices(instances: Instances, select: str) -> list[int]:
    """``all``, ``largest``, or 1-based numbers as the app shows them (``"1,3"``)."""
    if select in SELECTION_RULES:
        return choose_by_rule(instances, select)
    try:
        numbers = [int(part) for part in select.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"expected --select all, largest or numbers like 1,3; got {select!r}") from None
    bad = [n for n in numbers if not 1 <= n <= len(instances)]
    if bad:
        raise ValueError(f"expected character numbers 1-{len(instances)}, got {bad}")
    return sorted({n - 1 for n in numbers})


def parse_background(spec: str, fit: str) -> Background:
    """``transparent``, ``blur``, a colour (``white``, ``black``, ``#rrggbb``) or a picture path."""
    named = {"white": (255, 255, 255), "black": (0, 0, 0), "green": (0, 177, 64)}
    if spec in ("transparent", "blur"):
        return Background(kind=spec)
    if spec in named:
        return Background(kind="color", color=named[spec])
    if spec.startswith("#") and len(spec) == 7:
        try:
            rgb = tuple(int(spec[i : i + 2], 16) for i in (1, 3, 5))
        except ValueError:
            raise ValueError(f"expected a colour like #12ab34, got {spec!r}") from None
        return Background(kind="color", color=rgb)
    return Background(kind="image", image=load_image(spec).image, fit=fit)


def process_file(
    path: Path, segmenter, refiner, settings: DetectionSettings, matte: MatteSettings, options: OutputOptions
) -> tuple[list[Path], tuple[str, ...]]:
    """Cut out one picture and write its files.

    Returns:
        The paths written, and the segmenter's notes for the user (e.g. "busy background").
    """
    loaded = load_image(path, max_pixels=options.max_pixels)
    image = loaded.image
    detection = detect_characters(image, settings, segmenter=segmenter, refiner=refiner)
    instances = detection.instances
    if not len(instances):
        raise ValueError("no character found (try --backend rtmdet with the anime model, or another picture)")
    chosen = choose_indices(instances, options.select)
    cutout = render_cutout(image, instances, chosen, matte)
    out_dir = options.out_dir or path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if options.background.kind == "transparent":
        target = out_dir / f"{path.stem}_cutout.png"
        target.write_bytes(cutout_png(cutout.foreground, cutout.alpha, trim=options.trim))
    else:
        box = trim_box(cutout.alpha) if options.trim else None
        crop = (slice(box[1], box[3]), slice(box[0], box[2])) if box else (slice(None), slice(None))
        suffix = "jpg" if options.image_format == "jpeg" else options.image_format
        target = out_dir / f"{path.stem}_composite.{suffix}"
        composite = render_preview(image, cutout, options.background)
        target.write_bytes(encode_image(np.ascontiguousarray(composite[crop]), options.image_format))
    written.append(target)
    if options.write_mask:
        target = out_dir / f"{path.stem}_mask.png"
        target.write_bytes(mask_png(cutout.alpha))
        written.append(target)
    if options.write_layers:
        target = out_dir / f"{path.stem}_layers.zip"
        extra = {"detection": {"backend": detection.choice.name, "refine": settings.refine, "tta": settings.tta}}
        target.write_bytes(layers_zip(image, instances, chosen, matte, source_name=path.name, extra=extra))
        written.append(target)
    return written, instances.notes


def build_parser() -> argparse.ArgumentParser:
    defaults = MatteSettings()
    parser = argparse.ArgumentParser(
        prog="extract.py", description="Cut anime and cartoon characters out of pictures (writes <stem>_cutout.png)."
    )
    parser.add_argument("--img", nargs="+", required=True, metavar="PATH", help="pictures, folders or globs")
    parser.add_argument("--out", type=Path, help="output folder (default: beside each input)")
    parser.add_argument("--select", default="all", help="all | largest | character numbers like 1,3 (default all)")
    parser.add_argument("--layers", action="store_true", help="also write <stem>_layers.zip: one RGBA layer per character")
    parser.add_argument("--mask", action="store_true", help="also write <stem>_mask.png")
    parser.add_argument("--trim", action="store_true", help="crop the output to the characters")
    out = parser.add_argument_group("background")
    out.add_argument("--background", default="transparent", help="transparent | blur | white | black | #rrggbb | picture path")
    out.add_argument("--fit", choices=("cover", "contain"), default="cover", help="how a background picture is fitted")
    out.add_argument("--format", choices=("png", "jpeg", "webp"), default="png", help="format of composites")
    matte = parser.add_argument_group("matte")
    matte.add_argument("--threshold", type=float, default=defaults.threshold)
    matte.add_argument("--min-island", type=int, default=defaults.min_island_area, help="remove specks smaller than this (px)")
    matte.add_argument("--max-hole", type=int, default=defaults.max_hole_area, help="fill holes smaller than this (px)")
    matte.add_argument("--guided-radius", type=int, default=defaults.guided_radius, help="0 disables the guided filter")
    matte.add_argument("--guided-eps", type=float, default=defaults.guided_eps)
    matte.add_argument("--feather", type=float, default=defaults.feather, help="edge feathering (px)")
    matte.add_argument("--no-decontaminate", action="store_true", help="keep the original edge colours")
    model = parser.add_argument_group("model")
    model.add_argument("--backend", choices=BACKENDS, default="auto")
    model.add_argument("--refine", choices=REFINERS, default="none")
    model.add_argument("--det-size", type=int, default=640)
    model.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    model.add_argument("--score-threshold", type=float, default=DetectionSettings().score_threshold)
    model.add_argument("--device", choices=("cpu", "cuda"), default=None)
    model.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow weight files that need full unpickling (only files you trust)",
    )
    model.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger pictures")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        matte = replace(
            MatteSettings(),
            threshold=args.threshold,
            min_island_area=args.min_island,
            max_hole_area=args.max_hole,
            guided_radius=args.guided_radius,
            guided_eps=args.guided_eps,
            feather=args.feather,
            decontaminate=not args.no_decontaminate,
            fast=False,
        )
        settings = DetectionSettings(
            backend=args.backend,
            refine=args.refine,
            det_size=args.det_size,
            tta=args.tta,
            score_threshold=args.score_threshold,
            device=args.device,
            trust_checkpoints=args.trust_checkpoint,
        )
        if args.max_pixels <= 0:
            raise ValueError(f"expected --max-pixels > 0, got {args.max_pixels}")
        options = OutputOptions(
            out_dir=args.out,
            select=args.select,
            background=parse_background(args.background, args.fit),
            image_format=args.format,
            trim=args.trim,
            write_mask=args.mask,
            write_layers=args.layers,
            max_pixels=args.max_pixels,
        )
        segmenter, choice = create_segmenter(settings)
        refiner = create_refiner(settings.refine, device=settings.device, trust=settings.trust_checkpoints)
    except (ValueError, ModelUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    paths, unmatched = expand_inputs(args.img)
    for pattern in unmatched:
        print(f"error: {pattern}: no such picture, folder or glob match", file=sys.stderr)
    if not paths:
        return 1
    print(choice.reason, file=sys.stderr)
    failures = len(unmatched)
    progress = _progress(paths)
    for path in progress:
        try:
            written, notes = process_file(path, segmenter, refiner, settings, matte, options)
            for note in notes:
                _report(progress, f"note: {path.name}: {note}")
            if len(paths) == 1:
                print(*written, sep="\n")
        except (ImageLoadError, ValueError, ModelUnavailable, OSError) as exc:
            failures += 1
            _report(progress, f"error: {path}: {exc}")
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
            failures += 1
            _report(progress, f"error: {path}: unexpected {type(exc).__name__}: {exc}")
    if len(paths) > 1:
        print(f"{len(paths) - (failures - len(unmatched))} of {len(paths)} pictures done", file=sys.stderr)
    return 1 if failures else 0


def _progress(paths: list[Path]):
    if len(paths) == 1:
        return paths
    from tqdm import tqdm

    return tqdm(paths, unit="picture", desc="cutting out", file=sys.stderr)


def _report(progress, line: str) -> None:
    if hasattr(progress, "write"):
        progress.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
