"""Time and peak memory of sliding-window prediction of one large image.

Usage::

    python -m exfuse_keras.bench.large_image --size 8000                  # the Python API
    python -m exfuse_keras.bench.large_image --size 8000 --through cli    # predict.py on a PNG
    python -m exfuse_keras.bench.large_image --size 2000 --through graph  # the whole-image TF path

The model is ``configs/quickstart.yaml`` with random weights (time and memory do not depend on
the weights; ``--classes 21`` for VOC's class count, which sizes the float32 sums). The image is a synthetic
``--size`` x ``--size`` uint8 RGB picture (smooth colour ramps and noise), predicted with
``--sliding-window`` (default 512,341) after one untimed window-sized call that traces the model:

- ``api``: ``Segmenter.predict(image, sliding_window=..., probabilities=False)``, band by band;
- ``cli``: ``predict.py`` on the image written as a PNG (decode, predict, write the mask and
  overlay PNGs; writing the input PNG is not timed), the model saved as a run folder;
- ``graph``: ``Segmenter.forward_function``, the whole-image TF implementation evaluate.py and
  the exports run (for comparison; it holds float32 ``[H, W, C]`` sums and pads every window
  to the image).

Prints the seconds, windows, the process's resident memory before predicting (TF and the model
loaded, the image made) and its peak (``VmHWM`` of /proc/self/status: the whole process, so run
one measurement per process), the CPU and the command, and a Markdown row.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from exfuse_keras.machine import cpu_description

ROOT = Path(__file__).resolve().parents[2]


def memory_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in MB (1e6 bytes), from /proc/self/status."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"/proc/self/status: no {field} line (Linux only)")


def synthetic_image(size: int, seed: int = 0) -> np.ndarray:
    """uint8 ``[size, size, 3]``: smooth colour ramps plus noise, made 512 rows at a time."""
    rng = np.random.default_rng(seed)
    image = np.empty((size, size, 3), np.uint8)
    x = np.arange(size, dtype=np.float32)[None, :] / size
    for top in range(0, size, 512):
        y = np.arange(top, min(top + 512, size), dtype=np.float32)[:, None] / size
        ramps = np.stack([127 + 100 * np.sin(6 * x + 0 * y + 0.3), 127 + 90 * np.cos(5 * y + 0 * x),
                          127 + 80 * np.sin(4 * (x + y))], -1)
        noise = rng.normal(0, 12, ramps.shape).astype(np.float32)
        image[top:top + len(y)] = np.clip(ramps + noise, 0, 255).astype(np.uint8)
    return image


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Time and peak RSS of sliding-window prediction of a large image.")
    parser.add_argument("--size", type=int, default=8000, help="image side in pixels (default 8000)")
    parser.add_argument("--sliding-window", default="512,341", metavar="CROP,STRIDE", help="default 512,341")
    parser.add_argument("--through", choices=("api", "cli", "graph"), default="api", help="see the module doc")
    parser.add_argument("--classes", type=int, help="number of classes (default: the quick start's 6)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override configs/quickstart.yaml")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    crop, stride = (int(v) for v in args.sliding_window.split(","))

    import keras
    import tensorflow as tf

    from exfuse_keras.config import EvalConfig, load_config, save_config
    from exfuse_keras.inference import Segmenter
    from exfuse_keras.inference.sliding_bands import window_count
    from exfuse_keras.model import build_model

    overrides = list(args.set)
    if args.classes:
        overrides += [f"data.num_classes={args.classes}",
                      "data.class_names=[" + ",".join(f"class{i}" for i in range(args.classes)) + "]"]
    cfg = load_config(str(ROOT / "configs" / "quickstart.yaml"), overrides)
    keras.utils.set_random_seed(0)
    model = build_model(cfg)
    segmenter = Segmenter(model, cfg)
    segmenter.predict(synthetic_image(crop, seed=1), sliding_window=(crop, stride), probabilities=False,
                      progress=False)
    image = synthetic_image(args.size)
    windows = window_count(args.size, args.size, crop, stride)
    with tempfile.TemporaryDirectory() as folder:
        if args.through == "cli":
            from PIL import Image

            from exfuse_keras.inference.predict import main as predict_main

            Image.fromarray(image).save(os.path.join(folder, "large.png"))
            del image
            save_config(cfg, os.path.join(folder, "config.yaml"))
            model.save(os.path.join(folder, "best.keras"))
        rss_before = memory_mb("VmRSS")
        start = time.perf_counter()
        if args.through == "api":
            mask, _ = segmenter.predict(image, sliding_window=(crop, stride), probabilities=False,
                                        progress=not args.quiet)
        elif args.through == "graph":
            forward = segmenter.forward_function(EvalConfig([1.0], False, [crop, stride]))
            mask = forward(tf.constant(image[None].astype(np.float32)))[0].numpy()[0]
        else:
            status = predict_main([os.path.join(folder, "large.png"), "--weights", folder, "--output",
                                   os.path.join(folder, "out"), "--sliding-window", f"{crop},{stride}"]
                                  + (["--quiet"] if args.quiet else []))
            if status != 0:
                print(f"error: predict.py exited with {status}", file=sys.stderr)
                return 1
            mask = None
        seconds = time.perf_counter() - start
    peak = memory_mb("VmHWM")
    classes = cfg.data.num_classes
    if mask is not None and mask.shape != (args.size, args.size):
        print(f"error: mask of shape {mask.shape}, expected ({args.size}, {args.size})", file=sys.stderr)
        return 1
    command = "python -m exfuse_keras.bench.large_image " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"{args.size}x{args.size} image, {classes} classes, window {crop},{stride}: {windows} windows "
          f"through {args.through} in {seconds:.1f} s ({seconds / windows * 1e3:.0f} ms/window); "
          f"RSS before {rss_before:,.0f} MB, peak {peak:,.0f} MB")
    print(f"CPU: {cpu_description()}; TF {tf.__version__}, Keras {keras.__version__}")
    print(f"command: {command.strip()}")
    print("| image | classes | window | windows | through | seconds | RSS before (MB) | peak RSS (MB) |")
    print(f"| {args.size}² | {classes} | {crop},{stride} | {windows} | {args.through} | {seconds:.1f} | "
          f"{rss_before:,.0f} | {peak:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
