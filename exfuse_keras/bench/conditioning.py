"""How well each shipped model starts from random weights: its first loss and logits, and whether
its own recipe at its peak learning rate (warm-up skipped) trains without the loss rising.

Usage::

    python -m exfuse_keras.bench.conditioning [--configs A.yaml,B.yaml] [--size 256] [--batch 2]
        [--steps 50] [--precision float32|mixed_bfloat16] [--set KEY=VALUE ...]

Each config is built with ``model.backbone.weights=null`` (ImageNet weights would hide the
initialisation) and ``train.init.from_run=null``, and gets ``train.warmup_steps=0``; its optimiser,
learning rate (scaled to ``--batch`` as the recipe scales it), losses and loss weights are the
config's. The data are the built-in shapes scenes rendered at ``--size`` (class indices 0-5, valid
for every config's classes), a fixed set of 8 images cycled in batches. Printed per config: the
first batch's main-output loss against ln C (the loss of a uniform guess), the logits' std and
largest magnitude, and the main-output loss over the steps (first, mean of the last 10, largest).
A config passes when its first loss is within 1.5 x ln C and the last-10 mean is below the first.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_CONFIGS = ["configs/exfuse_resnet101.yaml", "configs/exfuse_resnext101.yaml", "configs/gcn_baseline.yaml",
                   *sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "configs", "stages", "*.yaml")))]


def shapes_batch(size: int, count: int = 8, seed: int = 0):
    """``count`` built-in shapes scenes at ``size``: (uint8-valued float32 images, int32 masks)."""
    from exfuse_keras.data.shapes import render_example

    rng = np.random.default_rng(seed)
    pairs = [render_example(rng, size) for _ in range(count)]
    return (np.stack([p[0] for p in pairs]).astype("float32"), np.stack([p[1] for p in pairs]).astype("int32"))


def measure(path: str, size: int, batch: int, steps: int, precision: str, overrides=()) -> dict:
    import keras

    from exfuse_keras.config import load_config
    from exfuse_keras.losses import SegmentationCrossEntropy
    from exfuse_keras.training.run import build_training_model

    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(precision)
    cfg = load_config(os.path.join(ROOT, path) if not os.path.isabs(path) else path,
                      ["model.backbone.weights=null", "train.init.from_run=null", "train.warmup_steps=0",
                       f"train.batch_size={batch}", f"data.crop_size={size}", *overrides])
    keras.utils.set_random_seed(0)
    model = build_training_model(cfg, jit_compile=False)
    images, masks = shapes_batch(size)
    loss_fn = SegmentationCrossEntropy(cfg.data.num_classes, cfg.data.ignore_label)
    logits = np.asarray(model(images[:batch], training=True)["logits"], np.float32)
    first = float(loss_fn(masks[:batch], logits))
    names = list(model.output.keys())
    losses, started = [], time.perf_counter()
    for step in range(steps):
        index = [(step * batch + i) % len(images) for i in range(batch)]
        result = model.train_on_batch(images[index], {n: masks[index] for n in names}, return_dict=True)
        losses.append(float(result.get("logits_loss", result["loss"])))
    seconds = time.perf_counter() - started
    uniform = math.log(cfg.data.num_classes)
    tail = float(np.mean(losses[-10:])) if losses else None
    finite = all(np.isfinite(losses)) and np.isfinite(first)
    return {"config": path, "precision": precision, "num_classes": cfg.data.num_classes, "ln_c": uniform,
            "first_loss": first, "logits_std": float(logits.std()), "logits_max": float(np.abs(logits).max()),
            "losses": losses, "last10": tail, "max_loss": max(losses) if losses else None,
            "learning_rate": float(model.optimizer.learning_rate.numpy()) if hasattr(
                model.optimizer.learning_rate, "numpy") else None,
            "seconds": seconds,
            "passes": bool(finite and first <= 1.5 * uniform and (tail is None or tail < first))}


def format_table(rows) -> str:
    lines = ["| config | precision | first loss (ln C) | logits std / max | steps: first → last-10 mean (max) | passes |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        curve = "–" if r["last10"] is None else (f"{r['losses'][0]:.2f} → {r['last10']:.2f} "
                                                  f"({r['max_loss']:.2f}) in {len(r['losses'])}")
        lines.append(f"| {r['config']} | {r['precision']} | {r['first_loss']:.2f} ({r['ln_c']:.2f}) | "
                     f"{r['logits_std']:.2f} / {r['logits_max']:.1f} | {curve} | {'yes' if r['passes'] else 'NO'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exfuse_keras.bench.conditioning", description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--precision", default="float32", choices=("float32", "mixed_bfloat16", "mixed_float16"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", metavar="PATH", help="also write every row (and the CPU) here")
    args = parser.parse_args(argv)
    from exfuse_keras.machine import cpu_description

    print(f"CPU: {cpu_description()}; {args.size}², batch {args.batch}, {args.steps} steps, {args.precision}",
          flush=True)
    rows = []
    for path in args.configs.split(","):
        row = measure(path, args.size, args.batch, args.steps, args.precision, args.set)
        print(format_table([row]).splitlines()[-1], f"({row['seconds']:.0f} s)", flush=True)
        rows.append(row)
        if args.json:  # after each config, so a long run keeps what it measured
            from exfuse_keras.machine import cpu_record

            with open(args.json, "w", encoding="utf-8") as f:
                json.dump({"cpu": cpu_record(), "size": args.size, "batch": args.batch, "steps": args.steps,
                           "rows": rows}, f, indent=1)
    print(format_table(rows))
    return 0 if all(r["passes"] for r in rows) else 1


if __name__ == "__main__":
    from exfuse_keras.onednn import prefer_onednn

    prefer_onednn()
    sys.exit(main())
