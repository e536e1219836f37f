"""Which TFLite file is faster: interleaved calls, paired by round, for differences of a few percent.

``bench.export_latency`` times each format as a block of calls; on a shared or throttled machine
the speed drifts between blocks by more than the few milliseconds two variants of one model
differ by. Here every round calls each file once, in a fresh random order, and the comparison is
the per-round difference against the first file: its median, with a distribution-free 95%
interval (order statistics of the differences, binomial ranks), so drift common to a round cancels.
Each file's own median time per call gets the same kind of interval (for a latency goal: is the
median below it), and the JSON keeps every call's time.

Each file is fed the same image as its input type wants (float32 pixels 0..255; int8: the
pixels less 128) and its output is read as it comes (``tflite.run(..., raw=True)``): what an app
pays per call, copies included.

Usage::

    python -m exfuse_keras.bench.tflite_compare A.tflite B.tflite [--rounds 100] [--threads 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

import numpy as np


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(median, low, high)``: the sample median and the distribution-free interval of the true
    median from order statistics: the k-th smallest and k-th largest values, k the largest with
    P(k ≤ B ≤ n − k) ≥ ``confidence`` for B ~ Binomial(n, 1/2)."""
    from scipy import stats

    x = np.sort(np.asarray(values, np.float64))
    n = len(x)
    k = 0

    def coverage(k):  # of [x_(k+1), x_(n-k)]: P(k + 1 <= B <= n - k - 1)
        return stats.binom.cdf(n - k - 1, n, 0.5) - stats.binom.cdf(k, n, 0.5)

    while k + 1 < n // 2 and coverage(k + 1) >= confidence:
        k += 1
    # k values below the interval on each side: [x_(k+1), x_(n-k)] in 1-based order statistics.
    return float(np.median(x)), float(x[k]), float(x[n - k - 1])


def _input_for(runner, image: np.ndarray) -> np.ndarray:
    dtype = runner.get_input_details()[0]["dtype"]
    return (image - 128).astype(np.int8) if dtype == np.int8 else image.astype(dtype)


def compare(paths: Sequence[str], rounds: int = 100, threads: int = 2, warmup: int = 3, seed: int = 0) -> dict:
    """``{"files": [{"path", "median_ms", "ci", "times_ms"}], "differences": [{"path", "median_ms", "ci"}],
    "rounds", "threads"}``: per file its median time per call with its 95% interval and every
    round's time (0.1 µs), and per file after the first its paired difference."""
    from exfuse_keras.bench.export_latency import smooth_image
    from exfuse_keras.export import tflite

    if rounds < 6:
        raise ValueError(f"rounds {rounds}: at least 6 (below, no order-statistic interval reaches 95%)")
    runners = [tflite.interpreter(path, num_threads=threads) for path in paths]
    shapes = {tuple(r.get_input_details()[0]["shape"]) for r in runners}
    if len(shapes) != 1:
        raise ValueError(f"the files take different input shapes ({', '.join(map(str, sorted(shapes)))}); "
                         "compare files of one size")
    (_, height, width, _), = shapes
    image = smooth_image(max(height, width), 0)[None, :height, :width].astype(np.float32)
    inputs = [_input_for(r, image) for r in runners]
    for runner, x in zip(runners, inputs):
        for _ in range(warmup):
            tflite.run(runner, x, raw=True)
    order_rng = np.random.default_rng(seed)
    times = np.zeros((rounds, len(paths)))
    for k in range(rounds):
        for j in order_rng.permutation(len(paths)):
            start = time.perf_counter()
            tflite.run(runners[j], inputs[j], raw=True)
            times[k, j] = (time.perf_counter() - start) * 1e3
    times = np.round(times, 4)
    files = []
    for j, path in enumerate(paths):
        median, low, high = median_interval(times[:, j])
        files.append({"path": str(path), "median_ms": median, "ci": [low, high], "times_ms": times[:, j].tolist()})
    differences = []
    for j in range(1, len(paths)):
        median, low, high = median_interval(times[:, j] - times[:, 0])
        differences.append({"path": str(paths[j]), "median_ms": median, "ci": [low, high]})
    return {"files": files, "differences": differences, "rounds": rounds, "threads": threads}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exfuse_keras.bench.tflite_compare",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", help="two or more .tflite files of one input size")
    parser.add_argument("--rounds", type=int, default=100, help="rounds of one call per file")
    parser.add_argument("--threads", type=int, default=2, help="interpreter threads")
    parser.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    args = parser.parse_args(argv)
    if len(args.files) < 2 or args.rounds < 6:
        parser.error("give two files or more, and --rounds of at least 6 (the interval needs them)")
    import os

    from exfuse_keras.machine import cpu_description

    missing = [f for f in args.files if not os.path.isfile(f)]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    result = compare(args.files, args.rounds, args.threads)
    result["cpu"] = cpu_description()
    print(f"{args.rounds} rounds, {args.threads} threads, {result['cpu']}")
    print("| file | median ms / call [95% CI] | Δ against the first, median [95% CI] |\n|---|---|---|")
    for row, diff in zip(result["files"], [None] + result["differences"]):
        own = f"{row['median_ms']:.2f} [{row['ci'][0]:.2f}, {row['ci'][1]:.2f}]"
        delta = "–" if diff is None else f"{diff['median_ms']:+.2f} [{diff['ci'][0]:+.2f}, {diff['ci'][1]:+.2f}]"
        print(f"| {row['path']} | {own} | {delta} |")
    if args.json:
        from exfuse_keras.export.common import write_json

        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
