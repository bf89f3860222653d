"""Per-stage time of the anime detector (RTMDet-Ins-L) on one picture, printed as a table.

Uses the full-size network with random weights (the real weights are not needed
for timing), rigged so that every prior predicts a character-sized box
(``--box``, canvas pixels) and a mask; ``--keep`` then fixes how many instances
survive (the detector's ``max_instances``), so mask decoding, TTA and refinement
work on exactly that many characters.

Stages (milliseconds):
    preprocess  letterbox, normalise, to tensor (both views with --tta)
    forward     backbone + neck + head (one batch; 2 pictures with --tta)
    decode      threshold, NMS, box-cropped soft masks (each view)
    tta         un-mirror and merge the two views (--tta only)
    refine      RefineNetISNet (full-size IS-Net, random weights) on the kept instances

``outside/forward`` is (preprocess + decode + tta) / forward: the cost of
everything that is not the network; the target is at most 25 % with 5
characters. ``--mmdet`` also times mmdet's own post-processing
(``predict_by_feat`` with full-picture masks, as ``inference_detector`` does)
on the same head outputs, for comparison.

    python bench/detect.py --keep 5
    python bench/detect.py --keep 20 --tta --no-refine
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tests.scenes import make_scene  # noqa: E402

STAGES = ("preprocess", "forward", "decode", "tta", "refine")


def parse_size(text: str) -> tuple[int, int]:
    """``"1920x1080"`` -> ``(H, W)``."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if width < 32 or height < 32:
        raise argparse.ArgumentTypeError(f"expected a picture of at least 32x32, got {text!r}")
    return height, width


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=int, choices=(1, 5, 20), default=5, help="instances kept per picture")
    parser.add_argument("--size", type=parse_size, default=(1080, 1920), help="picture WIDTHxHEIGHT (1920x1080)")
    parser.add_argument("--det-size", type=int, default=640, help="detector input side (640)")
    parser.add_argument("--box", type=parse_size, default=(300, 120),
                        help="predicted box WIDTHxHEIGHT in canvas pixels (120x300: a standing character)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs after one warm-up run (3)")
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    parser.add_argument("--no-refine", action="store_true", help="leave out the RefineNetISNet stage")
    parser.add_argument("--mmdet", action="store_true", help="also time mmdet's predict_by_feat on the same outputs")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from inference import rtmdet

    torch.manual_seed(0)
    started = time.perf_counter()
    model = rtmdet.build_detector(rtmdet.load_model_config())
    box_height, box_width = args.box
    rtmdet.set_fixed_box_predictions(model, box_size=(box_width, box_height))
    segmenter = rtmdet.RTMDetSegmenter.from_model(
        model, det_size=args.det_size, tta=args.tta, score_threshold=0.3, max_instances=args.keep, device="cpu"
    )
    refiner = None
    if not args.no_refine:
        from inference.isnet import ISNet
        from inference.refine import RefineNetISNet

        refiner = RefineNetISNet(ISNet(4), device="cpu")
    height, width = args.size
    image = make_scene(3, background="busy", size=(height, width), seed=1).image
    print(
        f"RTMDet-Ins-L (random weights), picture {width}x{height}, det_size {args.det_size}, keep {args.keep}, "
        f"tta {'on' if args.tta else 'off'}, torch {torch.__version__} on {torch.get_num_threads()} CPU thread(s); "
        f"set-up {time.perf_counter() - started:.1f} s"
    )

    rows: list[dict[str, float]] = []
    mmdet_ms: list[float] = []
    for run in range(args.runs + 1):
        times: dict[str, float] = {}
        clock = time.perf_counter()
        prepared = segmenter.preprocess(image)
        times["preprocess"] = time.perf_counter() - clock

        clock = time.perf_counter()
        outputs = segmenter.forward(prepared.batch)
        times["forward"] = time.perf_counter() - clock

        clock = time.perf_counter()
        instances = segmenter.decode(outputs, prepared.letterbox, index=0)
        mirrored = segmenter.decode(outputs, prepared.letterbox, index=1) if args.tta else None
        times["decode"] = time.perf_counter() - clock

        clock = time.perf_counter()
        if mirrored is not None:
            instances = segmenter.merge_mirrored(instances, mirrored)
        times["tta"] = time.perf_counter() - clock

        if refiner is not None:
            clock = time.perf_counter()
            refiner.refine(image, instances)
            times["refine"] = time.perf_counter() - clock

        if args.mmdet:
            mmdet_ms.append(1000 * time_mmdet_postprocess(segmenter, outputs, prepared.letterbox, args.keep))
        if run:  # run 0 warms up caches and allocators
            rows.append({k: 1000 * v for k, v in times.items()} | {"instances": float(len(instances))})

    stages = [s for s in STAGES if (s != "tta" or args.tta) and (s != "refine" or refiner is not None)]
    header = ["run"] + [f"{s} ms" for s in stages] + ["total ms", "outside/forward", "instances"]
    table = []
    for number, row in enumerate(rows, start=1):
        table.append(format_row(str(number), row, stages))
    median = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    table.append(format_row("median", median, stages))
    print_table(header, table)
    if refiner is None:
        print("refine: left out (--no-refine)")
    if mmdet_ms:
        print(
            f"mmdet predict_by_feat on the same outputs (rescale=True, full-picture masks, max_per_img={args.keep}): "
            f"median {statistics.median(mmdet_ms[1:] or mmdet_ms):.1f} ms per view"
        )
    share = outside_share(median)
    verdict = "meets" if share <= 0.25 else "misses"
    print(f"outside the network: {100 * share:.1f} % of the forward ({verdict} the 25 % target)")
    return 0


def outside_share(row: dict[str, float]) -> float:
    """(preprocess + decode + tta) / forward."""
    return (row["preprocess"] + row["decode"] + row.get("tta", 0.0)) / row["forward"]


def format_row(label: str, row: dict[str, float], stages: list[str]) -> list[str]:
    total = sum(row.get(s, 0.0) for s in stages)
    return (
        [label]
        + [f"{row.get(s, 0.0):.1f}" for s in stages]
        + [f"{total:.1f}", f"{100 * outside_share(row):.1f} %", f"{row['instances']:.0f}"]
    )


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(" | ".join(h.rjust(w) for h, w in zip(header, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.rjust(w) for c, w in zip(row, widths)))


def time_mmdet_postprocess(segmenter, outputs, letterbox, keep: int) -> float:
    """Seconds mmdet's own post-processing takes on batch item 0 (boxes + full-picture binary masks)."""
    from mmengine.config import ConfigDict

    head = segmenter.model.bbox_head
    sx, sy = letterbox.scale
    meta = dict(img_shape=letterbox.scaled_size, ori_shape=letterbox.source_size, scale_factor=(sx, sy))
    cfg = ConfigDict(nms_pre=1000, min_bbox_size=0, score_thr=0.3, nms=dict(type="nms", iou_threshold=0.6),
                     max_per_img=keep, mask_thr_binary=0.5)
    levels = (outputs.cls_scores, outputs.bbox_preds, outputs.kernel_preds)
    single = tuple(tuple(t[:1] for t in group) for group in levels)
    clock = time.perf_counter()
    with torch.inference_mode():
        result = head.predict_by_feat(*single, outputs.mask_feat[:1], batch_img_metas=[meta], cfg=cfg, rescale=True)[0]
        np.asarray(result.masks.numpy())
    return time.perf_counter() - clock


if __name__ == "__main__":
    raise SystemExit(main())
