"""``python -m exfuse_keras.bench.grouped_conv``: one grouped 3x3 convolution's training step,
Keras' ``Conv2D(groups=G)`` (XLA on CPU) against ``GroupedConv2D`` (a dense convolution with a
block-diagonal kernel when training on a CPU), in one run.

Prints the milliseconds per step (forward, then the gradients for the input and the kernel; the
median of ``--repeats`` after one untimed step) and how far the two layers' outputs and gradients
are apart with the same weights. Nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def step_function(layer):
    import tensorflow as tf

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.square(y))
        return (y, *tape.gradient(loss, [x, layer.kernel]))

    return step


def measure(size: int, batch: int, channels: int, groups: int, repeats: int) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from exfuse_keras.layers.grouped import GroupedConv2D
    from exfuse_keras.machine import cpu_record

    x = tf.random.stateless_normal([batch, size, size, channels], seed=[0, 1])
    layers = {"keras Conv2D(groups)": keras.layers.Conv2D(channels, 3, padding="same", groups=groups, use_bias=False),
              "GroupedConv2D": GroupedConv2D(channels, 3, padding="same", groups=groups, use_bias=False)}
    for layer in layers.values():
        layer.build(x.shape)
    layers["GroupedConv2D"].set_weights(layers["keras Conv2D(groups)"].get_weights())
    rows, outputs = [], {}
    for name, layer in layers.items():
        step = step_function(layer)
        outputs[name] = [np.asarray(t) for t in step(x)]
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            step(x)
            times.append(time.perf_counter() - started)
        rows.append({"layer": name, "ms_per_step": 1000 * statistics.median(times)})
    ours, ref = outputs["GroupedConv2D"], outputs["keras Conv2D(groups)"]
    gaps = {what: float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))
            for what, a, b in zip(("output", "input gradient", "kernel gradient"), ours, ref)}
    return {"cpu": cpu_record(), "size": size, "batch": batch, "channels": channels, "groups": groups,
            "repeats": repeats, "rows": rows, "relative_max_difference": gaps}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exfuse_keras.bench.grouped_conv", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--groups", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)
    if args.channels % args.groups:
        parser.error(f"--channels {args.channels} is not a multiple of --groups {args.groups}")
    result = measure(args.size, args.batch, args.channels, args.groups, args.repeats)
    cpu = result["cpu"]
    print(f"3x3 convolution, {args.channels} channels in {args.groups} groups, {args.batch} x {args.size} x "
          f"{args.size}, training step (forward + both gradients), {cpu['kind']}, {cpu['cores']} cores:")
    for row in result["rows"]:
        print(f"  {row['layer']:<22} {row['ms_per_step']:10.1f} ms")
    first, second = (row["ms_per_step"] for row in result["rows"])
    print(f"  GroupedConv2D is {first / second:.1f}x faster; largest difference relative to the largest value: "
          + ", ".join(f"{k} {v:.1e}" for k, v in result["relative_max_difference"].items()))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    from exfuse_keras.onednn import prefer_onednn

    prefer_onednn()
    sys.exit(main())
