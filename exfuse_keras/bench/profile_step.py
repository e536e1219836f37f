"""Where a training step's time goes: TensorFlow profiler op times, summed per op type and per layer.

Usage::

    python -m exfuse_keras.bench.profile_step [--model exfuse|gcn|quickstart] [--size 512] [--batch 2]
        [--steps 1] [--top 25]

``exfuse`` and ``gcn`` are the training-step benchmark's models (exfuse_keras/bench/train_step.py:
ExFuse-ResNet-101 and its GCN baseline, random init, SGD); ``quickstart`` is
configs/quickstart.yaml's model compiled as train.py compiles it. After one warm-up step (the
trace), ``--steps`` ``train_on_batch`` steps run under ``tf.profiler``; the CPU op events of its
XSpace are summed per op type (Conv2DBackpropFilter, ...) and per layer, forward and backward
together (``gradient_tape/exfuse_1/gcn_res2_1/...`` and ``exfuse_1/gcn_res2_1/...`` both count
for ``gcn_res2``; every backbone op counts for ``backbone``).

Op times add up over TensorFlow's threads, so their sum exceeds the wall time of a step when
ops overlap; the shares are of the summed op time.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import shutil
import sys
import tempfile
import time


from exfuse_keras.config import OUTPUT_STRIDE


def layer_of(op_name: str) -> str:
    """The layer an op event belongs to: ``gradient_tape/exfuse_1/dap_1/depthwise`` -> ``dap``."""
    parts = [p for p in op_name.split("/") if p and p != "gradient_tape"]
    if not parts:
        return op_name
    if len(parts) > 1 and re.fullmatch(r"exfuse(_\d+)?|resnet101_head(_\d+)?", parts[0]):
        parts = parts[1:]
    return re.sub(r"_\d+$", "", parts[0])


def op_type_of(name: str) -> str:
    """TF's op type without the oneDNN prefix TensorFlow gives its CPU kernels on CPUs where it
    turns oneDNN on (``_MklNativeConv2DBackpropFilter`` -> ``Conv2DBackpropFilter``), so
    profiles from machines with and without it read alike."""
    return re.sub(r"^_Mkl(Native)?", "", name)


def op_times(xspace_bytes: bytes, steps: int) -> tuple[collections.Counter, collections.Counter]:
    """(ms per step by op type, ms per step by layer) from a serialized XSpace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(xspace_bytes)
    by_type, by_layer = collections.Counter(), collections.Counter()
    for plane in space.planes:
        metadata = plane.event_metadata
        for line in plane.lines:
            for event in line.events:
                name = metadata[event.metadata_id].name
                if "/" not in name or ":" not in name:  # TF op events are "scope/op:Type"
                    continue
                op_name, op_type = name.rsplit(":", 1)
                ms = event.duration_ps / 1e9 / steps
                by_type[op_type_of(op_type)] += ms
                by_layer[layer_of(op_name)] += ms
    return by_type, by_layer


def _model_and_batch(name: str, size: int, batch: int):
    from exfuse_keras.bench.train_step import NUM_CLASSES, build_exfuse, random_batch

    if name in ("exfuse", "gcn"):
        model, _ = build_exfuse(name)
        return (model, *random_batch(model, size, batch, NUM_CLASSES))
    if name == "quickstart":
        from exfuse_keras.config import load_config
        from exfuse_keras.training.run import build_training_model

        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        cfg = load_config(os.path.join(root, "configs", "quickstart.yaml"))
        model = build_training_model(cfg, jit_compile=False)
        return (model, *random_batch(model, size, batch, cfg.data.num_classes))
    raise ValueError(f"unknown model {name!r}; expected exfuse, gcn or quickstart")


def profile(name: str, size: int, batch: int, steps: int = 1) -> dict:
    """{"wall_ms", "by_type", "by_layer"} per training step of ``name``."""
    import tensorflow as tf

    model, images, targets = _model_and_batch(name, size, batch)
    model.train_on_batch(images, targets)
    started = time.perf_counter()
    model.train_on_batch(images, targets)
    wall_ms = (time.perf_counter() - started) * 1000
    logdir = tempfile.mkdtemp(prefix="exfuse_profile_")
    try:
        tf.profiler.experimental.start(logdir)
        for _ in range(steps):
            model.train_on_batch(images, targets)
        tf.profiler.experimental.stop()
        files = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        if not files:
            raise RuntimeError(f"the TensorFlow profiler wrote no .xplane.pb under {logdir}")
        with open(files[0], "rb") as f:
            by_type, by_layer = op_times(f.read(), steps)
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    return {"wall_ms": wall_ms, "by_type": by_type, "by_layer": by_layer}


def format_profile(result: dict, top: int) -> str:
    total = sum(result["by_type"].values())
    lines = [f"one training step: {result['wall_ms']:.0f} ms wall, {total:.0f} ms of op time (summed over threads)"]
    for title, counter in (("op type", result["by_type"]), ("layer (forward + backward)", result["by_layer"])):
        lines += ["", f"{'ms':>9} {'share':>6}  {title}"]
        lines += [f"{ms:9.1f} {ms / total:6.1%}  {key}" for key, ms in counter.most_common(top)]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="exfuse", choices=("exfuse", "gcn", "quickstart"))
    parser.add_argument("--size", type=int, default=None, help="image side (512; quickstart: 128)")
    parser.add_argument("--batch", type=int, default=None, help="images per step (2; quickstart: 8)")
    parser.add_argument("--steps", type=int, default=1, help="profiled steps (averaged)")
    parser.add_argument("--top", type=int, default=25, help="rows per table")
    args = parser.parse_args(argv)
    size = args.size or (128 if args.model == "quickstart" else 512)
    batch = args.batch or (8 if args.model == "quickstart" else 2)
    if size % OUTPUT_STRIDE:
        print(f"error: --size must be a multiple of {OUTPUT_STRIDE}, got {size}", file=sys.stderr)
        return 2
    print(f"profiling {args.model} at {size}x{size}, batch {batch}")
    print(format_profile(profile(args.model, size, batch, args.steps), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
