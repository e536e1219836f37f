"""Training-step throughput and achieved GFLOP/s: ExFuse against its baselines, in one run.

Usage::

    python -m exfuse_keras.bench.train_step [--size 512] [--batch 2] [--warmup 3] [--steps 10]
        [--models exfuse,gcn,backbone,peer,quickstart,mobilenetv3,mobilenetv3_min]
        [--precisions float32,mixed_bfloat16]
        [--jit-compile off,on] [--peer-python PATH] [--quick]

Each model gets a compiled ``train_on_batch`` step (SGD) on random images and masks of
``--size``², batch ``--batch``, once per precision of ``--precisions`` (a global Keras policy;
float32 is the CPU default, ``mixed_bfloat16`` pays only where the CPU has bfloat16 instructions)
and per setting of ``--jit-compile`` (``off``, the CPU default, or ``on``: XLA). After
``--warmup`` steps (the first traces, and with XLA compiles, the graph), ``--steps`` steps are
timed. Models:

- **exfuse**: ExFuse-ResNet-101 (configs/exfuse_resnet101.yaml, random init) with all its
  outputs and losses (main, ECRE);
- **gcn**: the GCN baseline on the same backbone (SEB, ECRE, DAP and SS off);
- **mobilenetv3**: ExFuse on MobileNetV3-Large (configs/exfuse_mobilenetv3.yaml, random init);
  **mobilenetv3_min** the same on its minimalistic variant (configs/exfuse_mobilenetv3_min.yaml);
- **quickstart**: the quick start's model (configs/quickstart.yaml) with its outputs and losses,
  at ``--quickstart-size``² and batch ``--quickstart-batch`` (128, 8: its recipe's);
- **backbone**: keras.applications ResNet101 + a 1×1 head at stride 32, its logits resized
  to the input (the bare backbone's cost);
- **peer**: keras-cv's DeepLabV3Plus on a ResNet50V2 backbone built offline from explicit
  arguments. keras-cv is frozen upstream and not in our requirements: pass the Python of an
  environment that has it (``--peer-python``; ``make bench-env`` builds ``.venv-peer``); the peer
  runs there in a subprocess.

FLOPs are counted on the traced forward graph (exfuse_keras/summary.py; 2 × MACs of convs and
dense layers); a training step is taken as 3 × forward. Achieved GFLOP/s = that × img/s.
The ratio the issue tracks: ExFuse's achieved GFLOP/s over the bare backbone's (target ≥ 0.85).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_CLASSES = 21


def _exfuse_config(variant: str):
    from exfuse_keras.config import load_config

    if variant == "quickstart":
        return load_config(os.path.join(ROOT, "configs", "quickstart.yaml"))
    if variant in ("mobilenetv3", "mobilenetv3_min"):
        name = "exfuse_mobilenetv3.yaml" if variant == "mobilenetv3" else "exfuse_mobilenetv3_min.yaml"
        return load_config(os.path.join(ROOT, "configs", name), ["model.backbone.weights=null"])
    overrides = ["model.backbone.weights=null", "model.ss.levels=[]"]
    if variant == "gcn":
        overrides += ["model.seb.enabled=false", "model.ecre.enabled=false", "model.ecre.supervised=false",
                      "model.dap.enabled=false"]
    return load_config(os.path.join(ROOT, "configs", "exfuse_resnet101.yaml"), overrides)


def build_exfuse(variant: str, jit_compile: bool = False):
    """(compiled model, forward model) of ExFuse-ResNet-101, its GCN baseline or the quick start's."""
    import keras

    from exfuse_keras.losses import build_losses
    from exfuse_keras.model import build_model

    cfg = _exfuse_config(variant)
    model = build_model(cfg)
    losses, weights = build_losses(cfg, list(model.output.keys()))
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss=losses, loss_weights=weights,
                  jit_compile=jit_compile)
    return model, model


def build_bare_backbone(jit_compile: bool = False):
    """keras.applications ResNet101 + 1×1 head (stride 32), resized to the input for the loss."""
    import keras

    from exfuse_keras.layers import ResizeToMatch
    from exfuse_keras.losses import SegmentationCrossEntropy

    image = keras.Input((None, None, 3), name="image")
    features = keras.applications.ResNet101(weights=None, include_top=False, input_tensor=image)
    logits = keras.layers.Conv2D(NUM_CLASSES, 1, name="head")(features.output)
    logits = ResizeToMatch(name="resize")([logits, image])
    model = keras.Model(image, logits, name="resnet101_head")
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=SegmentationCrossEntropy(NUM_CLASSES, 255), jit_compile=jit_compile)
    return model, model


def forward_gflops(model, size: int) -> float:
    from exfuse_keras.summary import count_flops

    return sum(count_flops(model, size, size).values()) / 1e9


def random_batch(model, size: int, batch: int, num_classes: int = NUM_CLASSES):
    """(images, targets) of random pixels and masks; every output of a multi-output model gets
    the mask (each loss derives its own target from it, as in training)."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    masks = rng.integers(0, num_classes, (batch, size, size)).astype("int32")
    targets = {name: masks for name in model.output.keys()} if isinstance(model.output, dict) else masks
    return images, targets


def time_steps(model, size: int, batch: int, warmup: int, steps: int) -> float:
    """img/s of ``train_on_batch`` after ``warmup`` steps."""
    images, targets = random_batch(model, size, batch)
    for _ in range(warmup):
        model.train_on_batch(images, targets)
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, targets)
    return batch * steps / (time.perf_counter() - started)


def measure(name: str, size: int, batch: int, warmup: int, steps: int, precision: str = "float32",
            jit_compile: bool = False) -> dict:
    import keras

    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(precision)
    if name in ("exfuse", "gcn", "quickstart", "mobilenetv3", "mobilenetv3_min"):
        model, forward = build_exfuse(name, jit_compile)
    elif name == "backbone":
        model, forward = build_bare_backbone(jit_compile)
    else:
        raise ValueError(f"unknown model {name!r}")
    gflops = forward_gflops(forward, size)
    img_s = time_steps(model, size, batch, warmup, steps)
    keras.mixed_precision.set_global_policy("float32")
    return {"model": name, "precision": precision, "jit_compile": jit_compile, "size": size, "batch": batch,
            "params": int(model.count_params()),
            "forward_gflops": gflops, "img_per_s": img_s, "achieved_gflops_per_s": 3 * gflops * img_s}


PEER_SCRIPT = r"""
import json, os, sys, time
import numpy as np
import keras, keras_cv
sys.path.insert(0, os.environ["EXFUSE_ROOT"])
from exfuse_keras.summary import count_flops
size, batch, warmup, steps = map(int, sys.argv[1:5])
backbone = keras_cv.models.ResNetV2Backbone(stackwise_filters=[64, 128, 256, 512], stackwise_blocks=[3, 4, 6, 3],
                                            stackwise_strides=[1, 2, 2, 2], include_rescaling=False,
                                            input_shape=(None, None, 3))
model = keras_cv.models.DeepLabV3Plus(num_classes=21, backbone=backbone)
model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=False), jit_compile=False)
rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
y = rng.integers(0, 21, (batch, size, size, 1)).astype("int32")
for _ in range(warmup):
    model.train_on_batch(x, y)
t = time.perf_counter()
for _ in range(steps):
    model.train_on_batch(x, y)
img_s = batch * steps / (time.perf_counter() - t)
gflops = sum(count_flops(model, size, size).values()) / 1e9
print(json.dumps({"img_per_s": img_s, "params": int(model.count_params()), "forward_gflops": gflops}))
"""


def measure_peer(python: str, size: int, batch: int, warmup: int, steps: int) -> dict:
    """keras-cv DeepLabV3Plus-ResNet50V2, run by another environment's Python (FLOPs counted there
    with this project's counter)."""
    out = subprocess.run([python, "-c", PEER_SCRIPT, str(size), str(batch), str(warmup), str(steps)],
                         capture_output=True, text=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", EXFUSE_ROOT=ROOT))
    if out.returncode != 0:
        raise RuntimeError(f"peer failed in {python}:\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"model": "peer", "achieved_gflops_per_s": 3 * result["forward_gflops"] * result["img_per_s"], **result}


LABELS = {"exfuse": "ExFuse-ResNet-101 (SEB, ECRE, DAP)", "gcn": "GCN baseline, same backbone",
          "quickstart": "the quick start's model", "mobilenetv3": "ExFuse-MobileNetV3-Large",
          "mobilenetv3_min": "ExFuse-MobileNetV3-Large-minimalistic",
          "backbone": "keras.applications ResNet101 + 1x1 head",
          "peer": "keras-cv DeepLabV3Plus-ResNet50V2"}


def format_table(rows, size: int, batch: int) -> str:
    from exfuse_keras.machine import cpu_description

    lines = [f"training step, {cpu_description()}",
             f"{'model':<42}{'precision':>16}{'XLA':>5}{'size':>6}{'batch':>6}{'params':>13}{'fwd GFLOPs':>12}"
             f"{'img/s':>9}{'GFLOP/s':>10}"]
    for row in rows:
        params = f"{row['params']:,}" if "params" in row else "-"
        xla = "on" if row.get("jit_compile") else "off"
        lines.append(f"{LABELS[row['model']]:<42}{row.get('precision', 'float32'):>16}{xla:>5}"
                     f"{row.get('size', size):>6}{row.get('batch', batch):>6}{params:>13}{row['forward_gflops']:>12.1f}"
                     f"{row['img_per_s']:>9.3f}{row['achieved_gflops_per_s']:>10.1f}")
    for name in LABELS:
        pair = [r for r in rows if r["model"] == name and r.get("precision", "float32") == "float32"]
        if len(pair) == 2 and pair[0].get("jit_compile") != pair[1].get("jit_compile"):
            off, on = sorted(pair, key=lambda r: bool(r.get("jit_compile")))
            lines.append(f"{LABELS[name]}: XLA on / off img/s = {on['img_per_s'] / off['img_per_s']:.2f}")
    rows = [r for r in rows if not r.get("jit_compile")]  # the ratios below compare the default (no XLA) rows
    by_name = {(row["model"], row.get("precision", "float32")): row for row in rows}
    if ("exfuse", "float32") in by_name and ("backbone", "float32") in by_name:
        ratio = (by_name[("exfuse", "float32")]["achieved_gflops_per_s"]
                 / by_name[("backbone", "float32")]["achieved_gflops_per_s"])
        lines.append(f"ExFuse / bare backbone achieved GFLOP/s: {ratio:.2f} (target >= 0.85)")
    for name in LABELS:
        if (name, "float32") in by_name and (name, "mixed_bfloat16") in by_name:
            speedup = by_name[(name, "mixed_bfloat16")]["img_per_s"] / by_name[(name, "float32")]["img_per_s"]
            lines.append(f"{LABELS[name]}: mixed_bfloat16 / float32 img/s = {speedup:.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--models", default="exfuse,gcn,backbone,peer")
    parser.add_argument("--precisions", default="float32",
                        help="comma-separated Keras policies, each model timed under each (peer: float32 only)")
    parser.add_argument("--jit-compile", default="off", help="comma-separated off/on: XLA, each model timed under each")
    parser.add_argument("--quickstart-size", type=int, default=128)
    parser.add_argument("--quickstart-batch", type=int, default=8)
    parser.add_argument("--peer-python", default=os.path.join(ROOT, ".venv-peer", "bin", "python"),
                        help="a Python with keras-cv 0.9 (the peer is skipped, saying so, when it is missing)")
    parser.add_argument("--quick", action="store_true", help="64x64, 1+1 steps: check that it runs")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.warmup, args.steps = 64, 1, 1
    settings = args.jit_compile.split(",")
    if set(settings) - {"off", "on"}:
        parser.error(f"--jit-compile {args.jit_compile}: expected off, on or off,on")
    rows = []
    for name in args.models.split(","):
        if name == "peer":
            if not os.path.exists(args.peer_python):
                print(f"peer skipped: no Python with keras-cv at {args.peer_python} (make bench-env)")
                continue
            row = measure_peer(args.peer_python, args.size, args.batch, args.warmup, args.steps)
            print(json.dumps(row), flush=True)
            rows.append(row)
            continue
        for precision in args.precisions.split(","):
            for setting in settings:
                size, batch = ((args.quickstart_size if not args.quick else 64, args.quickstart_batch)
                               if name == "quickstart" else (args.size, args.batch))
                row = measure(name, size, batch, args.warmup, args.steps, precision, setting == "on")
                print(json.dumps(row), flush=True)
                rows.append(row)
    print(format_table(rows, args.size, args.batch))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    from exfuse_keras.onednn import prefer_onednn

    prefer_onednn()  # before TensorFlow is imported, as the entry points do
    sys.exit(main())
