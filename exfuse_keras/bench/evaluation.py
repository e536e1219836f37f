"""Evaluation throughput: images/s of ``evaluate()`` on 500x375 images, single scale and 6 scales + flip.

Usage::

    python -m exfuse_keras.bench.evaluation [--run runs/quickstart] [--images 20] [--tta-images 5]
    python -m exfuse_keras.bench.evaluation --quick     # a smoke test of this script: tiny sizes, seconds

Writes VOC-layout data itself (``--images`` smooth random colour images of ``--size`` 500x375,
VOC's typical landscape size, with random masks, in a temporary folder), then for each model

- **quick start**: the trained run of ``--run`` (default ``runs/quickstart``; built from
  ``configs/quickstart.yaml`` with random weights when that folder does not exist: throughput
  does not depend on the weights),
- **ExFuse-ResNet-101**: ``configs/exfuse_resnet101.yaml`` with ``model.backbone.weights=null``
  (random initialisation, nothing downloaded),

times ``evaluate()`` (decode, pad, forward, resize back, confusion matrix: all that evaluate.py
does per image) over the images with the single-scale protocol and with the paper's 6 scales x
flip (12 forward passes per image, at 0.5x to 1.75x the image size). One image per protocol is
evaluated first and not timed (tracing). Prints one line per measurement and a table; machines
are noisy, so compare figures from the same run only.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from exfuse_keras.bench.models import benchmark_models
from exfuse_keras.data.palette import voc_palette, write_palette_png
from exfuse_keras.data.voc import VOC_SUBDIR

__all__ = ["write_evaluation_data", "measure", "main"]

IMAGE_SIZE = (500, 375)  # W, H of a typical (landscape) VOC image


def write_evaluation_data(root, count: int, size=IMAGE_SIZE, seed: int = 0) -> None:
    """``count`` smooth random colour images of ``size`` (W, H) with random block masks, all in ``val``."""
    voc = Path(root) / VOC_SUBDIR
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    ids = [f"eval_{k:04d}" for k in range(count)]
    for example_id in ids:
        image = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
        image.save(voc / "JPEGImages" / f"{example_id}.jpg", quality=95)
        blocks = Image.fromarray(rng.integers(0, 21, (3, 4), dtype=np.uint8)).resize((width, height), Image.NEAREST)
        write_palette_png(voc / "SegmentationClass" / f"{example_id}.png", np.asarray(blocks), voc_palette())
    lists = voc / "ImageSets" / "Segmentation"
    (lists / "val.txt").write_text("".join(f"{i}\n" for i in ids))
    (lists / "train.txt").write_text(f"{ids[0]}\n")


def measure(cfg, segmenter, images: int, protocol) -> float:
    """img/s of ``evaluate()`` under ``protocol`` (an ``EvalConfig``) over ``images`` images after one
    untimed image."""
    from exfuse_keras.evaluation.evaluate import evaluate

    evaluate(cfg, segmenter, "val", progress=False, max_images=1, protocol=protocol)
    scores = evaluate(cfg, segmenter, "val", progress=False, max_images=images, protocol=protocol)
    return scores["images"] / scores["seconds"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/quickstart", help="the quick-start run folder")
    parser.add_argument("--images", type=int, default=20, help="images timed, single scale")
    parser.add_argument("--tta-images", type=int, default=5, help="images timed, 6 scales + flip")
    parser.add_argument("--size", default=f"{IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}", help="image W x H")
    parser.add_argument("--quick", action="store_true", help="check the script runs: 2 images of 96x64")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.tta_images, args.size = 2, 2, "96x64"
    width, height = (int(v) for v in args.size.lower().split("x"))

    import tensorflow as tf
    import tensorflow_datasets as tfds

    from exfuse_keras.config import EvalConfig, config_from_dict
    from exfuse_keras.inference.segmenter import Segmenter
    from exfuse_keras.inference.tta import PAPER_SCALES

    tfds.disable_progress_bar()
    protocols = {"single scale": (EvalConfig(), args.images),
                 "6 scales + flip": (EvalConfig(list(PAPER_SCALES), flip=True), args.tta_images)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as root:
        write_evaluation_data(root, max(args.images, args.tta_images) + 1, (width, height))
        bench_data = config_from_dict({"data": {"dataset": "voc", "root": root}}).data
        print(f"{width}x{height} images, {os.cpu_count()} CPUs, TensorFlow {tf.__version__}")
        for name, cfg, model in benchmark_models(args.run):
            # The model's own classes and mean colour; the generated VOC-layout data to read.
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(bench_data, mean_rgb=cfg.data.mean_rgb))
            segmenter = Segmenter(model, cfg)
            for protocol_name, (protocol, images) in protocols.items():
                rate = measure(cfg, segmenter, images, protocol)
                rows.append((name, f"{model.count_params() / 1e6:.2f} M", protocol_name, images, rate))
                print(f"{name}, {protocol_name}: {rate:.3f} img/s ({images} images)", flush=True)
    print("\n| model | parameters | protocol | images timed | img/s | s/img |\n|---|---|---|---|---|---|")
    for name, params, protocol_name, images, rate in rows:
        print(f"| {name} | {params} | {protocol_name} | {images} | {rate:.3f} | {1 / rate:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
