"""SAM 2.1 point prompts: how long the picture embedding and each prompt take, printed as a table.

The network is the real SAM 2.1 architecture built by the ``sam2`` package from its
own config; without ``--checkpoint`` its weights are random (the time does not depend
on them). Per picture size (medians over ``--runs`` after one warm-up run):

    input     resize to 1024 x 1024 and normalise (part of embed)
    embed     what the first click on a picture costs: input + image encoder
    1 point   a prompt on the cached embedding: one include point, best of 3 masks,
              mask upsampled to the picture, soft mask and instance built
    3 pts+box two include points, one exclude point and a box (single-mask output)

    python bench/prompt.py                         # CPU, 2 threads, tiny, 1 MP and 1920x1080
    python bench/prompt.py --device cuda           # on a GPU (autocast bf16/fp16)
    python bench/prompt.py --variant base_plus --checkpoint models/sam2.1-hiera-base-plus/sam2.1_hiera_base_plus.pt
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch

from inference.device import resolve_device
from inference.instances import Click
from picture_size import parse_picture_size


def parse_size(text: str) -> tuple[int, int]:
    """``"1920x1080"`` -> ``(H, W)``."""
    return parse_picture_size(text, minimum=16)


def _picture(height: int, width: int) -> np.ndarray:
    """A smooth colourful picture with a few discs (content does not change the timings)."""
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    image = np.stack([xx / width * 255, yy / height * 255, np.full_like(xx, 128)], axis=-1)
    for i, (cx, cy) in enumerate(((0.3, 0.4), (0.6, 0.5), (0.8, 0.3))):
        disc = (xx - cx * width) ** 2 + (yy - cy * height) ** 2 <= (0.12 * min(height, width)) ** 2
        image[disc] = ((220, 40, 40), (40, 200, 60), (250, 220, 90))[i]
    return image.astype(np.uint8)


def _median_ms(step: Callable[[int], object], runs: int, sync: Callable[[], None]) -> float:
    """Median wall time of ``step(i)`` in milliseconds over ``runs`` runs after one warm-up run."""
    step(-1)
    sync()
    times = []
    for i in range(runs):
        started = time.perf_counter()
        step(i)
        sync()
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


def _time_size(
    prompter: object, size: tuple[int, int], runs: int, prompt_runs: int, sync: Callable[[], None]
) -> tuple[str, ...]:
    """One table row: input, embed and prompt medians (ms) on a ``size`` = ``(H, W)`` picture."""
    from inference.sam2_prompt import model_input

    height, width = size
    image = _picture(height, width)
    input_size = prompter.network.input_size

    def embed(i: int) -> None:
        prompter.clear()
        prompter.embed(image, f"bench-{i}")

    input_ms = _median_ms(lambda _: model_input(image, input_size), prompt_runs, sync)
    embed_ms = _median_ms(embed, runs, sync)
    prompter.embed(image, "cached")
    one = [Click(int(width * 0.3), int(height * 0.4))]
    several = [Click(int(width * 0.3), int(height * 0.4)), Click(int(width * 0.35), int(height * 0.45)),
               Click(int(width * 0.6), int(height * 0.5), include=False)]
    box = (int(width * 0.15), int(height * 0.2), int(width * 0.45), int(height * 0.6))
    one_ms = _median_ms(lambda _: prompter.segment_points(image, "cached", one), prompt_runs, sync)
    several_ms = _median_ms(lambda _: prompter.segment_points(image, "cached", several, box), prompt_runs, sync)
    return (f"{width}x{height} ({height * width / 1e6:.1f} MP)", f"{input_ms:.0f}", f"{embed_ms:.0f}",
            f"{one_ms:.0f}", f"{several_ms:.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the network runs (cpu)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (2, the CI machine; 0: torch's default)")
    parser.add_argument("--variant", choices=("tiny", "small", "base_plus", "large"), default="tiny",
                        help="SAM 2.1 variant (tiny)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a real {'model': state_dict} checkpoint of --variant (default: random weights)")
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=[(1000, 1000), (1080, 1920)],
                        help="picture sizes WIDTHxHEIGHT (1000x1000 1920x1080)")
    parser.add_argument("--runs", type=int, default=3, help="timed embeddings per size after a warm-up (3)")
    parser.add_argument("--prompt-runs", type=int, default=10, help="timed prompts per kind (10)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from inference.sam2_prompt import Sam2Network, Sam2Prompter, build_sam2_model

    device = resolve_device(args.device)
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)

        def sync() -> None:
            torch.cuda.synchronize(device)
    else:
        device_name = f"CPU, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores"

        def sync() -> None:
            return None

    started = time.perf_counter()
    if args.checkpoint is not None:
        prompter = Sam2Prompter.from_checkpoint(args.checkpoint, device=args.device, variant=args.variant)
        weights = str(args.checkpoint)
    else:
        torch.manual_seed(0)
        prompter = Sam2Prompter(Sam2Network(build_sam2_model(args.variant), device), variant=args.variant)
        weights = "random"
    sync()
    load_s = time.perf_counter() - started
    parameters = sum(p.numel() for p in prompter.network.model.parameters())

    print(f"SAM 2.1 {args.variant} ({parameters / 1e6:.1f} M parameters, weights: {weights}) on {device_name}")
    print(f"torch {torch.__version__}; built and loaded in {load_s:.2f} s; "
          f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (other processes share the cores)")
    print(f"medians: embed over {args.runs} runs, prompts over {args.prompt_runs} runs, each after a warm-up run")
    print()
    header = ("picture", "input ms", "embed ms", "1 point ms", "3 pts+box ms")
    rows = [_time_size(prompter, size, args.runs, args.prompt_runs, sync) for size in args.sizes]

    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-|-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(v.ljust(w) for v, w in zip(row, widths)))
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if device.type == "cuda":
        print(f"peak GPU memory allocated: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB "
              f"(autocast {prompter.network._half})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
