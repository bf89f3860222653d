"""Cut characters out of pictures from the command line.

    python extract.py --img picture.png              # writes picture_cutout.png beside it
    python extract.py --img "art/*.jpg" --out cutouts --layers
    python extract.py --img folder/ --select largest --background "#ffffff" --format jpeg
    python extract.py --img p.png --points "120,80;300,200,-"   # include / exclude clicks

Folders and globs are processed as a batch with a progress bar; a file that
fails is reported on one line and skipped, and the exit status is 1 if any did.
Inputs that would write the same file name (``plain.webp`` and ``plain.bmp`` into
one folder) keep their extension in it (``plain.webp_cutout.png``,
``plain.bmp_cutout.png``); the rule is printed when it applies.

Every picture goes through :func:`inference.outputs.cut_out_picture`, the same
function the studio's Batch page and the HTTP API use.
"""

from __future__ import annotations

import argparse
import glob
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from inference import model_cache
from inference.composite import Background, parse_background
from inference.errors import ModelUnavailable
from inference.image_io import SUPPORTED_EXTENSIONS, ImageLoadError, load_image, pixel_limit, safe_stem, unique_stems
from inference.instances import Click
from inference.matte import MatteSettings
from inference.outputs import OutputOptions, cut_out_picture
from inference.pipeline import check_rule
from inference.picture import Picture
from inference.prompt import parse_points
from inference.segmenter import BACKENDS, REFINERS, DetectionSettings


@dataclass(frozen=True, eq=False)
class Job:
    """What to do with every picture of one run."""

    out_dir: Path | None
    select: str | None
    points: tuple[Click, ...]
    prompt_model: str
    options: OutputOptions
    max_pixels: int
    #: Every input of the run (resolved), never written over.
    inputs: frozenset[Path] = frozenset()


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


def output_stems(paths: Sequence[Path], out_dir: Path | None) -> dict[Path, str]:
    """The file name stem of each input's outputs: :func:`~inference.image_io.unique_stems` among
    the inputs writing into the same folder (``--out``, or each input's own folder)."""
    folders: dict[Path, list[Path]] = {}
    for path in paths:
        folders.setdefault((out_dir or path.parent).resolve(), []).append(path)
    stems: dict[Path, str] = {}
    for group in folders.values():
        stems.update(zip(group, unique_stems([p.name for p in group])))
    return stems


def parse_background_option(spec: str, fit: str) -> Background:
    """``transparent``, ``blur``, a colour (``white``, ``#rrggbb``, ``r,g,b``) or a picture path."""
    try:
        return parse_background(spec, fit=fit)
    except ValueError:
        if not Path(spec).is_file():
            raise ValueError(
                f"expected --background transparent, blur, a colour like #ff8800 or white, or a picture file; "
                f"got {spec!r}"
            ) from None
    return Background(kind="image", image=load_image(spec).image, fit=fit)


def process_file(
    path: Path, stem: str, settings: DetectionSettings, matte: MatteSettings, job: Job
) -> tuple[list[Path], tuple[str, ...]]:
    """Cut out one picture and write its files.

    Returns:
        The paths written, and the notes for the user (e.g. "busy background").
    """
    picture = Picture.from_path(path, max_pixels=job.max_pixels)
    result = cut_out_picture(
        picture,
        stem=stem,
        settings=settings,
        matte=matte,
        select=job.select,
        points=job.points,
        options=job.options,
        prompt_model=job.prompt_model,
    )
    out_dir = job.out_dir or path.parent
    targets = [out_dir / name for name, _ in result.files]
    clash = [t for t in targets if t.resolve() in job.inputs]
    if clash:
        raise ValueError(f"writing {clash[0].name} would overwrite an input of this run; choose another --out folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for target, (_, data) in zip(targets, result.files):
        target.write_bytes(data)
        written.append(target)
    return written, result.notes


def build_parser() -> argparse.ArgumentParser:
    defaults = MatteSettings()
    parser = argparse.ArgumentParser(
        prog="extract.py",
        description="Cut anime and cartoon characters out of pictures (writes <stem>_cutout.png).",
        epilog="Inputs that would write the same name into one folder keep their extension in it "
        "(plain.webp, plain.bmp -> plain.webp_cutout.png, plain.bmp_cutout.png); the same file name from two "
        "folders into one --out gets -2, -3. Nothing is overwritten within one run.",
    )
    parser.add_argument("--img", nargs="+", required=True, metavar="PATH", help="pictures, folders or globs")
    parser.add_argument("--out", type=Path, help="output folder (default: beside each input)")
    parser.add_argument(
        "--select", default=None, help="all | largest | character numbers like 1,3, numbered left to right (default all)"
    )
    parser.add_argument(
        "--points",
        default=None,
        metavar='"X,Y;X,Y,-"',
        help="clicks in picture pixels, applied after --select: include by default, ',-' excludes; a click on "
        "no character cuts out what lies there (point prompt)",
    )
    parser.add_argument(
        "--prompt-model",
        choices=model_cache.PROMPTERS,
        default="auto",
        help="point prompt model for --points on no character (auto: SAM 2 when its weights are installed)",
    )
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
    matte.add_argument(
        "--no-strands", action="store_true", help="drop thin structures (hair strands) below the threshold"
    )
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
    model.add_argument(
        "--max-pixels", type=int, default=None, help="refuse larger pictures (default 24 MP or $NUKKI_MAX_PIXELS)"
    )
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
            strands=not args.no_strands,
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
        max_pixels = pixel_limit() if args.max_pixels is None else args.max_pixels
        if max_pixels <= 0:
            raise ValueError(f"expected --max-pixels > 0, got {max_pixels}")
        job = Job(
            out_dir=args.out,
            select=check_rule(args.select) if args.select is not None else None,
            points=parse_points(args.points) if args.points is not None else (),
            prompt_model=args.prompt_model,
            options=OutputOptions(
                background=parse_background_option(args.background, args.fit),
                image_format=args.format,
                trim=args.trim,
                mask=args.mask,
                layers=args.layers,
            ),
            max_pixels=max_pixels,
        )
        # Load the models now (once per process), so a missing one fails before any file.
        _, choice = model_cache.get_segmenter(settings)
        model_cache.get_refiner(settings.refine, device=settings.device, trust=settings.trust_checkpoints)
        prompter = model_cache.resolve_prompter(args.prompt_model) if job.points else None
    except (ValueError, ModelUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    paths, unmatched = expand_inputs(args.img)
    for pattern in unmatched:
        print(f"error: {pattern}: no such picture, folder or glob match", file=sys.stderr)
    if not paths:
        return 1
    print(choice.reason, file=sys.stderr)
    if prompter is not None:
        print(f"Point prompts: {prompter.reason}", file=sys.stderr)
    job = replace(job, inputs=frozenset(p.resolve() for p in paths))
    stems = output_stems(paths, args.out)
    renamed = [p for p in paths if stems[p] != safe_stem(p.name)]
    if renamed:
        print(
            "note: inputs with the same name keep their extension in the output names: "
            + ", ".join(f"{p.name} -> {stems[p]}_*" for p in renamed),
            file=sys.stderr,
        )
    failures = len(unmatched)
    progress = _progress(paths)
    for path in progress:
        try:
            written, notes = process_file(path, stems[path], settings, matte, job)
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
