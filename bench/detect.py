"""Nukki's anime detector vs the reference (mmdet's own ``inference_detector``), same model, same pictures.

Both run the full-size RTMDet-Ins-L with random weights (the real weights are
not needed for timing), rigged by :mod:`tests.rtmdet_rigging` so that every
prior predicts a character-sized box (``--box``, canvas pixels) with a mask;
both keep at most ``--keep`` instances (mmdet's ``max_per_img``, as
CartoonSegmentation's ``set_max_instance`` sets it) scoring above 0.3.

Timing (``--runs`` per pipeline after one warm-up each, interleaved: Nukki and
the reference alternate, the order swapping every run, so machine load hits
both alike):
    nukki      ``RTMDetSegmenter.segment`` (letterbox, forward, decode with
               soft masks cropped to their support)
    reference  ``mmdet.apis.inference_detector`` (mmdet's test pipeline,
               ``test_step``, full-picture binary masks) then ``scores > 0.3``
The ratio nukki / reference of the medians is printed per picture size (target
<= 0.8), and the ratio of the fastest runs (less sensitive to load spikes on a
shared machine).

Memory (``--memory``, default on): each pipeline runs in a fresh child process
(``--memory-child``) on a ``--memory-size`` picture (8 MP by default); the peak
resident set during detection is read from ``/proc/self/status`` (``VmHWM``,
reset through ``/proc/self/clear_refs`` after the model is loaded). Printed: the
process peak (target <= 1.0 GB for Nukki) and the increase over the loaded model.

``--stages`` also times only the parts outside the network (the forward is the
same computation in both and carries most of a shared machine's noise).

``--options-report`` prints the measured effect of the options that depart
from the references: the detector's ``DecodeSettings.extend_to_edges`` and the
animeseg refiner's ``AnimeSegSettings.edge_margin`` (with a perfect foreground,
so only the combination rule is measured).

    python bench/detect.py                      # 1920x1080 and 3840x2160, 12 instances, memory at 8 MP
    python bench/detect.py --sizes 1920x1080 --keep 40 --no-memory
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from picture_size import parse_picture_size  # noqa: E402
from tests.scenes import make_scene  # noqa: E402

SCORE_THRESHOLD = 0.3


def parse_size(text: str) -> tuple[int, int]:
    """``"1920x1080"`` -> ``(H, W)``."""
    return parse_picture_size(text, minimum=32)


def picture(size: tuple[int, int], seed: int) -> np.ndarray:
    """A busy synthetic scene of ``(H, W)``: rendered at no more than 1920 wide, then resized (bilinear)."""
    height, width = size
    factor = min(1.0, 1920 / width)
    small = make_scene(3, background="busy", size=(max(32, round(height * factor)), max(32, round(width * factor))),
                       seed=seed).image
    return small if small.shape[:2] == size else cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def build_model(box: tuple[int, int], det_size: int, keep: int) -> torch.nn.Module:
    """RTMDet-Ins-L, random weights, rigged; ``test_cfg.max_per_img = keep``; ``model.cfg`` for ``inference_detector``."""
    from mmengine.config import Config

    from inference import rtmdet
    from tests.rtmdet_rigging import reference_test_pipeline_steps, set_fixed_box_predictions

    torch.manual_seed(0)
    model = rtmdet.build_detector(rtmdet.load_model_config())
    box_height, box_width = box
    set_fixed_box_predictions(
        model, box_size=(box_width, box_height), score_logit=0.0, score_spread=2.0, mask_sharpness=16.0,
        padding_logit=-3.0,
    )
    model.bbox_head.test_cfg["max_per_img"] = keep
    pipeline = reference_test_pipeline_steps(det_size)
    model.cfg = Config(dict(test_dataloader=dict(dataset=dict(pipeline=pipeline))))
    return model.eval()


def run_nukki(segmenter, image: np.ndarray) -> int:
    return len(segmenter.segment(image))


def run_reference(model: torch.nn.Module, image: np.ndarray) -> int:
    from mmdet.apis import inference_detector

    result = inference_detector(model, np.ascontiguousarray(image[:, :, ::-1])).pred_instances  # BGR, as cv2 reads
    result = result[result.scores > SCORE_THRESHOLD]  # CartoonSegmentation's pred_score_thr
    return len(result)


def machine_load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def time_interleaved(args: argparse.Namespace) -> None:
    from inference.rtmdet import RTMDetSegmenter

    started = time.perf_counter()
    model = build_model(args.box, args.det_size, args.keep)
    # Nukki moves its network to the channels-last layout; the reference keeps mmdet's own copy.
    segmenter = RTMDetSegmenter.from_model(
        copy.deepcopy(model), det_size=args.det_size, score_threshold=SCORE_THRESHOLD, max_instances=args.keep,
        device="cpu",
    )
    print(f"RTMDet-Ins-L (random weights, rigged), det_size {args.det_size}, at most {args.keep} instances; "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); set-up {time.perf_counter() - started:.1f} s")
    print(f"machine before: {machine_load()}")
    header = ["picture", "instances", "nukki s (median)", "reference s (median)", "nukki / reference",
              "ratio of fastest runs", "runs"]
    rows = []
    for size in args.sizes:
        image = picture(size, seed=1)
        times: dict[str, list[float]] = {"nukki": [], "reference": []}
        counts: dict[str, int] = {}
        for run in range(args.runs + 1):
            order = ("nukki", "reference") if run % 2 == 0 else ("reference", "nukki")
            for name in order:
                clock = time.perf_counter()
                counts[name] = run_nukki(segmenter, image) if name == "nukki" else run_reference(model, image)
                if run:  # run 0 warms up caches and allocators
                    times[name].append(time.perf_counter() - clock)
        nukki, reference = statistics.median(times["nukki"]), statistics.median(times["reference"])
        if counts["nukki"] != counts["reference"]:
            print(f"WARNING {size}: nukki found {counts['nukki']} instances, the reference {counts['reference']}")
        fastest = min(times["nukki"]) / min(times["reference"])
        rows.append([f"{size[1]}x{size[0]}", str(counts["nukki"]), f"{nukki:.2f}", f"{reference:.2f}",
                     f"{nukki / reference:.2f}x", f"{fastest:.2f}x", str(args.runs)])
    print_table(header, rows)
    print(f"machine after: {machine_load()}")
    print("target: nukki / reference <= 0.80x")


def time_stages(args: argparse.Namespace) -> None:
    """Time the parts outside the network of each pipeline, with one shared forward measurement.

    The network forward is the same computation in both pipelines (same model,
    same input tensor), and on a shared machine it carries most of the load
    noise; the parts that differ are timed separately, interleaved:
    nukki = ``preprocess`` + ``decode``; reference = mmdet's test pipeline +
    ``data_preprocessor`` + ``predict_by_feat(rescale=True)`` + ``scores > 0.3``.
    """
    from mmcv.transforms import Compose
    from mmdet.utils import get_test_pipeline_cfg
    from mmengine.registry import DefaultScope

    from inference.rtmdet import RTMDetSegmenter

    model = build_model(args.box, args.det_size, args.keep)
    segmenter = RTMDetSegmenter.from_model(
        model, det_size=args.det_size, score_threshold=SCORE_THRESHOLD, max_instances=args.keep, device="cpu"
    )
    steps = get_test_pipeline_cfg(model.cfg.copy())
    steps[0].type = "mmdet.LoadImageFromNDArray"
    with DefaultScope.overwrite_default_scope("mmdet"):
        pipeline = Compose(steps)
    print(f"\nOutside the network (medians of {args.runs} interleaved runs after a warm-up; {machine_load()}):")
    header = ["picture", "forward s", "nukki outside s", "reference outside s", "estimated nukki / reference"]
    rows = []
    for size in args.sizes:
        image = picture(size, seed=1)
        forward, ours, theirs = [], [], []
        for run in range(args.runs + 1):
            clock = time.perf_counter()
            prepared = segmenter.preprocess(image)
            middle = time.perf_counter()
            outputs = segmenter.forward(prepared.batch)
            after_forward = time.perf_counter()
            segmenter.decode(outputs, prepared.letterbox)
            done = time.perf_counter()

            data = pipeline(dict(img=np.ascontiguousarray(image[:, :, ::-1]), img_id=0))
            data = model.data_preprocessor(dict(inputs=[data["inputs"]], data_samples=[data["data_samples"]]), False)
            prepared_ref = time.perf_counter()
            with torch.no_grad():
                head_outputs = model.bbox_head(model.extract_feat(data["inputs"]))
                forward_ref = time.perf_counter()
                metas = [sample.metainfo for sample in data["data_samples"]]
                result = model.bbox_head.predict_by_feat(*head_outputs, batch_img_metas=metas, rescale=True)[0]
                result = result[result.scores > SCORE_THRESHOLD]
            finished = time.perf_counter()
            if run:
                forward += [after_forward - middle, forward_ref - prepared_ref]
                ours.append((middle - clock) + (done - after_forward))
                theirs.append((prepared_ref - done) + (finished - forward_ref))
        f, o, t = statistics.median(forward), statistics.median(ours), statistics.median(theirs)
        rows.append([f"{size[1]}x{size[0]}", f"{f:.2f}", f"{o:.3f}", f"{t:.3f}", f"{(f + o) / (f + t):.2f}x"])
    print_table(header, rows)


def memory_child(which: str, args: argparse.Namespace) -> None:
    """Load the model, reset the peak RSS counter, detect once, print JSON with the peak."""
    from inference.rtmdet import RTMDetSegmenter

    model = build_model(args.box, args.det_size, args.keep)
    segmenter = RTMDetSegmenter.from_model(
        model, det_size=args.det_size, score_threshold=SCORE_THRESHOLD, max_instances=args.keep, device="cpu"
    )
    image = picture(args.memory_size, seed=2)
    loaded = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    count = run_nukki(segmenter, image) if which == "nukki" else run_reference(model, image)
    print(json.dumps({"which": which, "instances": count, "loaded_kb": loaded, "peak_kb": _status_kb("VmHWM")}))


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure_memory(args: argparse.Namespace) -> None:
    height, width = args.memory_size
    print(f"\nPeak memory, {width}x{height} ({height * width / 1e6:.1f} MP), fresh process per pipeline:")
    header = ["pipeline", "instances", "process peak GB", "increase over loaded model GB"]
    rows = []
    for which in ("nukki", "reference"):
        command = [sys.executable, __file__, "--memory-child", which, "--keep", str(args.keep),
                   "--det-size", str(args.det_size), "--box", f"{args.box[1]}x{args.box[0]}",
                   "--memory-size", f"{width}x{height}", "--threads", str(torch.get_num_threads())]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        result = json.loads(output)
        rows.append([which, str(result["instances"]), f"{result['peak_kb'] / 1024 ** 2:.2f}",
                     f"{(result['peak_kb'] - result['loaded_kb']) / 1024 ** 2:.2f}"])
    print_table(header, rows)
    print("target: nukki process peak <= 1.0 GB")


def options_report(args: argparse.Namespace) -> None:
    """Measured effect of DecodeSettings.extend_to_edges on the picture sizes of a few common formats."""
    from inference.rtmdet import mmdet_letterbox

    print(f"\nextend_to_edges (off by default): rows/columns of the picture that mmdet's resized mask does not "
          f"reach (det_size {args.det_size}); the option fills them from the nearest decoded row/column")
    header = ["picture", "missing rows", "missing columns", "pixels affected"]
    rows = []
    for width, height in ((1920, 1080), (1080, 1920), (1500, 1000), (1680, 1359), (1500, 750), (3840, 2160),
                          (4032, 3024), (2048, 1365), (1200, 1697)):
        geometry = mmdet_letterbox((height, width), args.det_size)
        w_scale, h_scale = geometry.scale
        resized_h = math.ceil(args.det_size * (1 / w_scale))
        resized_w = math.ceil(args.det_size * (1 / h_scale))
        missing_rows, missing_cols = max(0, height - resized_h), max(0, width - resized_w)
        affected = missing_rows * width + missing_cols * height - missing_rows * missing_cols
        rows.append([f"{width}x{height}", str(missing_rows), str(missing_cols), f"{affected} ({affected / (width * height):.3%})"])
    print_table(header, rows)


def edge_margin_report() -> None:
    """AnimeSegSettings.edge_margin vs the reference's rule, with a perfect foreground (the scene's true alpha).

    Instance masks are the true character masks eroded by ``rim`` pixels (a
    detector that misses hair tips and outlines); the refined masks (``> 0.5``)
    are compared with the true masks.
    """
    from inference.instances import Instances
    from inference.isnet import ISNet
    from inference.refine import AnimeSegRefiner, AnimeSegSettings

    print("\nanimeseg edge_margin (off by default) vs the reference's min(M, F) rule; perfect foreground F, "
          "detector masks M = true masks eroded by the rim; IoU of refined masks (> 0.5) with the true masks")
    header = ["picture", "rim px", "IoU of M", "reference rule", "edge_margin 0.01", "edge_margin 0.02"]
    rows = []
    for seed, size in ((1, (720, 1280)), (2, (1080, 1920)), (3, (1200, 900))):
        scene = make_scene(3, background="busy", size=size, seed=seed)
        truth = [a > 0.5 for a in scene.character_alphas]
        for rim in (2, 5):
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rim + 1, 2 * rim + 1))
            masks = [cv2.erode(a, kernel) for a in scene.character_alphas]
            instances = Instances.from_full_masks(masks, [0.9] * len(masks), "rtmdet")
            cells = [f"{size[1]}x{size[0]}", str(rim), _mean_iou(instances, truth)]
            for margin in (0.0, 0.01, 0.02):
                refiner = AnimeSegRefiner(ISNet(3, width_divisor=16), device="cpu",
                                          settings=AnimeSegSettings(edge_margin=margin))
                refined = refiner.combine(scene.alpha, instances)
                result = Instances(instances.image_size, np.array([b for b, _ in refined], np.int32),
                                   tuple(m for _, m in refined), instances.scores, "rtmdet")
                cells.append(_mean_iou(result, truth))
            rows.append(cells)
    print_table(header, rows)


def _mean_iou(instances, truth: list[np.ndarray]) -> str:
    values = []
    for i, true in enumerate(truth):
        mask = instances.full_mask(i) > 0.5
        values.append(np.count_nonzero(mask & true) / max(1, np.count_nonzero(mask | true)))
    return f"{np.mean(values):.4f}"


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(" | ".join(h.rjust(w) for h, w in zip(header, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.rjust(w) for c, w in zip(row, widths)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=[(1080, 1920), (2160, 3840)],
                        help="pictures WIDTHxHEIGHT to time (1920x1080 3840x2160)")
    parser.add_argument("--keep", type=int, default=12, help="at most this many instances (12)")
    parser.add_argument("--det-size", type=int, default=640, help="detector input side (640)")
    parser.add_argument("--box", type=parse_size, default=(300, 120),
                        help="predicted box WIDTHxHEIGHT in canvas pixels (120x300: a standing character)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per pipeline after one warm-up (3)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--memory-size", type=parse_size, default=(2160, 3840), help="picture for memory (3840x2160)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument("--no-timing", action="store_true", help="skip the timing")
    parser.add_argument("--options-report", action="store_true", help="print the effect of the departing option")
    parser.add_argument("--stages", action="store_true", help="also time the parts outside the network")
    parser.add_argument("--memory-child", choices=("nukki", "reference"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args)
        return 0
    if not args.no_timing:
        time_interleaved(args)
    if args.stages:
        time_stages(args)
    if not args.no_memory:
        measure_memory(args)
    if args.options_report:
        options_report(args)
        edge_margin_report()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
