"""How far from a pixel the scores of that pixel can look: the positive controls' window.

``centre_window(model, size)`` is the largest Chebyshev distance, in input pixels, from the
centre of a ``size`` x ``size`` random image to an input pixel with a non-zero gradient of the
centre pixel's scores (inference mode). Pixels farther away cannot change those scores (the
tests change them at random and check). With random weights a ReLU can hide a pixel that a
trained model would see, so it is a lower bound of the receptive field, measured, not derived.

Usage::

    python -m exfuse_keras.ablation.window [--table controls] [--size 256]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def centre_window(model, size: int = 256, seed: int = 0) -> tuple[int, np.ndarray]:
    """``(window, image)``: the window in pixels, and the float32 ``[1, size, size, 3]`` image it was measured on."""
    import tensorflow as tf

    image = tf.constant(np.random.default_rng(seed).uniform(0, 255, (1, size, size, 3)).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(image)
        centre = tf.reduce_sum(model(image, training=False)["logits"][0, size // 2, size // 2])
    moved = np.abs(tape.gradient(centre, image).numpy()[0]).sum(-1) > 0
    rows, cols = np.nonzero(moved)
    return int(max(np.abs(rows - size // 2).max(), np.abs(cols - size // 2).max())), image.numpy()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exfuse_keras.ablation.window", description=__doc__.split("\n")[0])
    parser.add_argument("--table", default="controls", help="the ablation table whose rows to measure")
    parser.add_argument("--config-set", default="cpu", choices=("paper", "cpu"))
    parser.add_argument("--data", default="configs/data/scenes_128.yaml")
    parser.add_argument("--size", type=int, default=256, help="input side (a multiple of 32)")
    args = parser.parse_args(argv)
    import keras

    from exfuse_keras.ablation.rows import rows_for
    from exfuse_keras.ablation.sweep import SweepSettings, row_config
    from exfuse_keras.model import build_model

    settings = SweepSettings(preset=args.config_set, data=args.data, seeds=1, steps=4000, output="unused")
    print(f"| row | config | window at {args.size}² |\n|---|---|---|")
    for row in rows_for(args.table):
        keras.utils.set_random_seed(0)
        window, _ = centre_window(build_model(row_config(row, settings, 0)), args.size)
        whole = " (the whole image)" if window >= args.size // 2 else ""
        print(f"| {row.key} | {row.config} | ±{window} px{whole} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
