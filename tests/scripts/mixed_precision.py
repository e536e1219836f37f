"""Trains the tiny ExFuse (every module, SS heads, synchronized BatchNorm) 20 SGD steps from one
start under each precision, with and without XLA, on one device and on 2 MirroredStrategy
replicas, and prints JSON: per run, the losses, the optimizer's class and how far its weights
moved from float32's run.

Run as a script (two logical CPUs must be configured before TensorFlow starts). The measure is
``||w_run - w_f32|| / ||w_f32 - w_0||`` over all trainable weights: the deviation from float32's
trajectory relative to the distance float32 travelled. ``float32 (again)`` repeats float32 to
give the noise floor (oneDNN on, as the entry points run).

    python tests/scripts/mixed_precision.py [--steps 20] [--only PRECISION:XLA:STRATEGY,...]
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from exfuse_keras import build_model  # noqa: E402
from exfuse_keras.config import config_from_dict  # noqa: E402
from exfuse_keras.losses import build_losses  # noqa: E402
from exfuse_keras.training.run import build_training_model, with_targets  # noqa: E402
from tests.helpers import tiny_config_dict  # noqa: E402

# (precision, XLA, how): "one" is train.py's model (build_training_model: the config's optimiser,
# losses and metric) on one device, "mirrored" the same under a 2-replica MirroredStrategy,
# "public" a user's own script on the public API (build_model + build_losses + compile with
# keras.optimizers.SGD and jit_compile + fit). Each run is compared with the float32 run of its
# kind's family ("one"/"mirrored": float32 one; "public": float32 public). XLA under
# MirroredStrategy is left out: on logical CPU devices TensorFlow's XLA cannot read a replica's
# variables from another device (its known issue "tf.Variable on a different device"), whatever the
# precision; it needs a host with one accelerator per replica.
RUNS = [("float32", False, "one"), ("float32 (again)", False, "one"), ("float32", True, "one"),
        ("mixed_bfloat16", False, "one"), ("mixed_bfloat16", True, "one"),
        ("mixed_float16", False, "one"), ("mixed_float16", True, "one"),
        ("mixed_bfloat16", False, "mirrored"), ("mixed_float16", False, "mirrored"),
        ("float32", False, "public"), ("mixed_bfloat16", True, "public"), ("mixed_float16", True, "public")]


LEARNING_RATE = 0.005


def family(kind: str) -> str:
    return "public" if kind == "public" else "train.py"


def config(steps: int):
    values = tiny_config_dict()
    values["model"]["backbone"]["norm"] = "sync_batch"
    # Plain SGD at a small rate keeps 20 steps near-linear: with momentum 0.9 at 0.02 float32 with
    # XLA already drifted 9% from float32 without it (rounding amplified by the dynamics), which
    # would hide a precision's own error.
    values["train"] = {"optimizer": "sgd", "learning_rate": LEARNING_RATE, "momentum": 0.0, "warmup_steps": 0,
                       "batch_size": 4, "reference_batch_size": 4, "weight_decay": 0.0, "epochs": 1,
                       "steps_per_epoch": steps}
    return config_from_dict(values)


def train(cfg, precision, jit, kind, initial, images, masks, steps):
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(precision.split(" ")[0])
    strategy = (tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]) if kind == "mirrored"
                else tf.distribute.OneDeviceStrategy("/cpu:0"))
    with strategy.scope():
        if kind == "public":
            # A user's own script: build_model, build_losses, compile(jit_compile=True), fit.
            model = build_model(cfg)
            losses, weights = build_losses(cfg, list(model.output.keys()))
            model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss=losses, loss_weights=weights,
                          jit_compile=jit)
        else:
            model = build_training_model(cfg, jit_compile=jit)
        model.set_weights(initial)
    data = with_targets(tf.data.Dataset.from_tensor_slices((images, masks)).batch(len(images)).repeat(),
                        list(model.output.keys()))
    start = time.perf_counter()
    history = model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
    seconds = time.perf_counter() - start
    trainable = [v.numpy() for v in model.trainable_weights]
    # An eager call, not predict(): predict would compile a second XLA program (the forward) for the
    # same dtype question; the logits' dtype is the layers' policy either way.
    logits = model(images[:1], training=False)["logits"]
    return {"loss": [float(v) for v in history.history["loss"]], "optimizer": type(model.optimizer).__name__,
            "logits_dtype": keras.backend.standardize_dtype(logits.dtype), "fit_seconds": seconds}, trainable


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--only", default=None)
    args = parser.parse_args()
    runs = RUNS
    if args.only:
        wanted = {tuple(item.split(":")) for item in args.only.split(",")}
        runs = [r for r in RUNS if (r[0], "on" if r[1] else "off", r[2]) in wanted]
        # Each family's float32 reference first.
        references = [("float32", False, "one"), ("float32", False, "public")]
        runs = [r for r in references if any(family(w[2]) == family(r[2]) for w in runs) and r not in runs] + runs
    cfg = config(args.steps)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    masks = rng.integers(0, 5, (4, 64, 64)).astype("int32")
    masks[:, :32] = rng.integers(0, 2, (4, 32, 64))  # some structure: two classes dominate the top half
    keras.utils.set_random_seed(0)
    model = build_training_model(cfg, jit_compile=False)
    initial = model.get_weights()
    initial_trainable = [v.numpy() for v in model.trainable_weights]
    out, reference = [], {}
    for precision, jit, kind in runs:
        record, trainable = train(cfg, precision, jit, kind, initial, images, masks, args.steps)
        reference.setdefault(family(kind), trainable)
        base = reference[family(kind)]
        travelled = np.sqrt(sum(float(np.sum((r - w0) ** 2)) for r, w0 in zip(base, initial_trainable)))
        deviation = np.sqrt(sum(float(np.sum((w - r) ** 2)) for w, r in zip(trainable, base)))
        record.update(precision=precision, jit=jit, strategy=kind, family=family(kind),
                      relative_deviation=deviation / travelled, travelled=travelled,
                      finite=bool(np.all(np.isfinite(record["loss"]))))
        out.append(record)
        print(f"{precision:18s} XLA {'on ' if jit else 'off'} {kind:8s} loss {record['loss'][-1]:.4f} "
              f"deviation {record['relative_deviation']:.2e} ({record['optimizer']}, fit {record['fit_seconds']:.0f} s)", file=sys.stderr, flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
