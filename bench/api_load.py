"""Load on the HTTP API: concurrent clients asking for cutouts of one 1920x1080 picture.

Starts ``python -m api`` in a child process (an empty models folder unless
``--models-dir`` names one, so the classic segmenter runs), then ``--clients``
threads each ask ``--requests`` times for ``POST /v1/cutout`` (a full-size RGBA
PNG) of the same picture, each with its own HTTP connection. Every answer is
counted as 200, 503 (busy; it must carry ``Retry-After``) or an error (anything
else, a 503 without ``Retry-After``, a transport failure or a 200 that is not the
expected PNG). Two modes, one table row each:

    retry     a refused client waits ``Retry-After`` seconds and asks again until
              it gets its cutout (well-behaved clients; every cutout is delivered)
    no-retry  a refused client goes straight on to its next request

Latency is per HTTP request, of 200 answers only (p50/p95, milliseconds);
``cutout p50/p95`` in retry mode is from the first try to the delivered file,
waiting included. Peak RSS is the server's high-water mark (``VmHWM`` of
``/proc/<pid>/status``) at the end of each run; it never goes down, so the
second row shows the peak over both. The machine's load average is printed too:
other programs on the machine slow every number here.

    python bench/api_load.py                       # 8 clients x 25 cutouts, 2 jobs at once
    python bench/api_load.py --max-jobs 1 --clients 4 --requests 10
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from PIL import Image  # noqa: E402

from api.process import ApiProcess  # noqa: E402
from tests.scenes import make_scene  # noqa: E402

#: A refused client gives up after this many tries of one cutout (retry mode).
MAX_TRIES = 200


@dataclass
class Tally:
    """Outcomes of one run (appended to from the client threads under ``lock``)."""

    ok: int = 0
    busy: int = 0
    errors: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    cutout_ms: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def read_peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set size in MB (``VmHWM``), or ``None`` off Linux."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; NaN when empty."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[min(98, max(0, round(q) - 1))]


def client_loop(url: str, png: bytes, requests: int, retry: bool, size: tuple[int, int], tally: Tally) -> None:
    """One client: ``requests`` cutouts over its own connection."""
    with httpx.Client(base_url=url, timeout=300) as http:
        for _ in range(requests):
            first = time.perf_counter()
            for _try in range(MAX_TRIES if retry else 1):
                start = time.perf_counter()
                try:
                    response = http.post("/v1/cutout", files={"image": ("bench.png", png, "image/png")})
                except httpx.HTTPError as exc:
                    with tally.lock:
                        tally.errors.append(f"{type(exc).__name__}: {exc}")
                    break
                elapsed_ms = (time.perf_counter() - start) * 1000
                if response.status_code == 503 and response.headers.get("retry-after", "").isdigit():
                    with tally.lock:
                        tally.busy += 1
                    if retry:
                        time.sleep(int(response.headers["retry-after"]))
                        continue
                    break
                problem = _problem(response, size)
                with tally.lock:
                    if problem:
                        tally.errors.append(problem)
                    else:
                        tally.ok += 1
                        tally.latencies_ms.append(elapsed_ms)
                        tally.cutout_ms.append((time.perf_counter() - first) * 1000)
                break


def _problem(response: httpx.Response, size: tuple[int, int]) -> str:
    """Why an answer that is not a 503 is wrong, or ``""`` for a good cutout."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    try:
        img = Image.open(io.BytesIO(response.content))
        if img.format != "PNG" or img.mode != "RGBA" or img.size != (size[1], size[0]):
            return f"unexpected file: {img.format} {img.mode} {img.size}"
    except OSError as exc:
        return f"not a picture: {exc}"
    return ""


def run(
    url: str, png: bytes, *, clients: int, requests: int, retry: bool, size: tuple[int, int]
) -> tuple[Tally, float]:
    """All clients at once; returns the tally and the wall time in seconds."""
    tally = Tally()
    threads = [
        threading.Thread(target=client_loop, args=(url, png, requests, retry, size, tally)) for _ in range(clients)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (8)")
    parser.add_argument("--requests", type=int, default=25, help="cutouts per client (25)")
    parser.add_argument("--max-jobs", type=int, default=2, help="the server's NUKKI_API_MAX_JOBS (2)")
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--models-dir", type=Path, help="models folder for the server (default: an empty one)")
    parser.add_argument("--mode", choices=("both", "retry", "no-retry"), default="both")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.requests < 1:
        parser.error("expected --clients and --requests >= 1")

    size = (args.height, args.width)
    scene = make_scene(2, "gradient", size=size, seed=3)
    buffer = io.BytesIO()
    Image.fromarray(scene.image).save(buffer, format="PNG")
    png = buffer.getvalue()
    modes = ("retry", "no-retry") if args.mode == "both" else (args.mode,)

    with tempfile.TemporaryDirectory(prefix="nukki-api-load-") as scratch:
        models = args.models_dir or Path(scratch) / "models"
        models.mkdir(parents=True, exist_ok=True)
        env = {"NUKKI_MODELS_DIR": str(models), "NUKKI_API_MAX_JOBS": str(args.max_jobs)}
        load_before = os.getloadavg()
        with ApiProcess(Path(scratch) / "server.log", **env) as server:
            backend = httpx.get(server.url + "/healthz", timeout=30).json()["backend"]
            rows = []
            for mode in modes:
                tally, wall = run(server.url, png, clients=args.clients, requests=args.requests,
                                  retry=mode == "retry", size=size)
                rows.append((mode, tally, wall, read_peak_rss_mb(server.pid)))
            log = server.log()
        load_after = os.getloadavg()

    print(
        f"POST /v1/cutout, {args.width}x{args.height} PNG ({len(png) / 1024:.0f} KB), {args.clients} clients x "
        f"{args.requests} cutouts, NUKKI_API_MAX_JOBS={args.max_jobs}, backend {backend}, "
        f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f} before / {load_after[0]:.2f} after"
    )
    print()
    print(
        "| mode | requests | 200 | 503 | errors | p50 ms | p95 ms | cutout p50 ms | cutout p95 ms | cutouts/s "
        "| peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for mode, tally, wall, rss in rows:
        sent = tally.ok + tally.busy + len(tally.errors)
        cut50 = f"{percentile(tally.cutout_ms, 50):.0f}" if mode == "retry" else "-"
        cut95 = f"{percentile(tally.cutout_ms, 95):.0f}" if mode == "retry" else "-"
        print(
            f"| {mode} | {sent} | {tally.ok} | {tally.busy} | {len(tally.errors)} | "
            f"{percentile(tally.latencies_ms, 50):.0f} | {percentile(tally.latencies_ms, 95):.0f} | "
            f"{cut50} | {cut95} | {tally.ok / wall:.2f} | "
            f"{'n/a' if rss is None else f'{rss:.0f}'} |"
        )
    errors = [e for _, tally, _, _ in rows for e in tally.errors]
    for error in sorted(set(errors))[:10]:
        print(f"error: {error}", file=sys.stderr)
    if "Traceback" in log:
        print("the server logged a traceback:\n" + log[-3000:], file=sys.stderr)
        return 1
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
