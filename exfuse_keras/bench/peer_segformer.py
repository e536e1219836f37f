"""keras-hub's SegFormer-B0 (MiT-B0 encoder, 3.7 M parameters), the mobile peer of ExFuse-MobileNetV3,
timed in its own environment (keras-hub is not a dependency: it pulls the full ``tensorflow``
wheel beside ``tensorflow-cpu``; ``make bench-env`` installs it in ``.venv-peer``).

Usage (with that environment's Python; this file imports nothing of exfuse_keras but the FLOP
counter)::

    .venv-peer/bin/python exfuse_keras/bench/peer_segformer.py train --size 512 --batch 2 --warmup 2 --steps 4
    .venv-peer/bin/python exfuse_keras/bench/peer_segformer.py latency --size 512 --threads 2 --repeats 10
    .venv-peer/bin/python exfuse_keras/bench/peer_segformer.py accuracy --data configs/data/scenes_128.yaml \
        --steps 2000 --seed 0 --output runs/scenes_accuracy/segformer_b0/seed0

Built offline from keras-hub's MiT-B0 arguments (hidden sizes 32/64/160/256, depths 2/2/2/2,
heads 1/2/5/8, reduction ratios 8/4/2/1) with random weights and 21 classes: time does not depend
on the weights. ``train`` times ``train_on_batch`` (SGD, no XLA) like
``exfuse_keras.bench.train_step``; ``latency`` exports the logits at ``--size``² to TFLite float32
and int8 (calibrated on 4 smooth random images) and times one image per call in the TFLite
interpreter with ``--threads`` threads (median of ``--repeats``), like
``exfuse_keras.bench.export_latency``. ``accuracy`` trains it from random weights on ``--data``
with our pipeline, optimiser and schedule exactly as ``exfuse_keras.bench.scenes_accuracy``
trains the quick-start ExFuse models (that command calls it), inputs scaled to [-1, 1] inside the
model, and scores the last weights on val with evaluate.py's protocol. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

NUM_CLASSES = 21


def build_segformer_b0(size: int, num_classes: int = NUM_CLASSES):
    import keras_hub

    encoder = keras_hub.models.MiTBackbone(
        layerwise_depths=[2, 2, 2, 2], num_layers=4, layerwise_num_heads=[1, 2, 5, 8],
        layerwise_sr_ratios=[8, 4, 2, 1], max_drop_path_rate=0.1, layerwise_patch_sizes=[7, 3, 3, 3],
        layerwise_strides=[4, 2, 2, 2], image_shape=(size, size, 3), hidden_dims=[32, 64, 160, 256])
    backbone = keras_hub.models.SegFormerBackbone(image_encoder=encoder, projection_filters=256)
    return keras_hub.models.SegFormerImageSegmenter(backbone=backbone, num_classes=num_classes)


def _gflops(model, size: int) -> float:
    sys.path.insert(0, os.environ.get("EXFUSE_ROOT", os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))))
    from exfuse_keras.summary import count_flops

    return sum(count_flops(model, size, size).values()) / 1e9


def train(args) -> dict:
    import keras

    model = build_segformer_b0(args.size)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=False)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.batch, args.size, args.size, 3)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, (args.batch, args.size, args.size, 1)).astype("int32")
    for _ in range(args.warmup):
        model.train_on_batch(x, y)
    started = time.perf_counter()
    for _ in range(args.steps):
        model.train_on_batch(x, y)
    img_s = args.batch * args.steps / (time.perf_counter() - started)
    return {"model": "segformer_b0", "img_per_s": img_s, "params": int(model.count_params()),
            "forward_gflops": _gflops(model, args.size),
            "size": args.size, "batch": args.batch}


def _smooth(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (1, 8, 8, 3)).astype("float32")
    return np.kron(coarse, np.ones((1, size // 8, size // 8, 1), "float32"))


def latency(args) -> dict:
    import tensorflow as tf

    model = build_segformer_b0(args.size)
    rows = {"model": "segformer_b0", "params": int(model.count_params()), "size": args.size,
            "threads": args.threads, "forward_gflops": _gflops(model, args.size)}
    with tempfile.TemporaryDirectory() as folder:
        # Keras' own SavedModel export freezes the variables' reads the TFLite converter needs.
        model.export(folder, format="tf_saved_model", verbose=False,
                     input_signature=[tf.TensorSpec([1, args.size, args.size, 3], tf.float32)])
        for quantization in ("float32", "int8"):
            converter = tf.lite.TFLiteConverter.from_saved_model(folder)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            if quantization == "int8":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                converter.representative_dataset = lambda: ([_smooth(args.size, k)] for k in range(4))
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            flatbuffer = converter.convert()
            runner = tf.lite.Interpreter(model_content=flatbuffer, num_threads=args.threads)
            runner.allocate_tensors()
            (inputs,), image = runner.get_input_details(), _smooth(args.size, 9)
            runner.set_tensor(inputs["index"], image)
            for _ in range(args.warmup):
                runner.invoke()
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                runner.invoke()
                times.append(time.perf_counter() - started)
            rows[f"tflite_{quantization}_ms"] = 1000 * statistics.median(times)
            rows[f"tflite_{quantization}_mb"] = len(flatbuffer) / 1e6
    return rows


def _with_input_scaling(segmenter):
    """0-255 RGB in, as every model here takes: scaled to [-1, 1] in front of SegFormer (keras-hub
    leaves the scaling to its preprocessor, which a from-scratch run does not have)."""
    import keras

    inputs = keras.Input(segmenter.input.shape[1:], name="image")
    return keras.Model(inputs, segmenter(keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)),
                       name="segformer_b0")


def accuracy(args) -> dict:
    sys.path.insert(0, os.environ.get("EXFUSE_ROOT", os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))))
    import keras

    from exfuse_keras.bench.scenes_accuracy import EXFUSE_MODELS, ROOT, run_overrides
    from exfuse_keras.config import load_config_stack
    from exfuse_keras.data.pipeline import make_dataset
    from exfuse_keras.evaluation.evaluate import evaluate
    from exfuse_keras.losses import SegmentationCrossEntropy
    from exfuse_keras.training.optim import build_optimizer

    # The quick start's recipe (batch, optimiser, schedule) on --data: what the ExFuse runs get.
    # --learning-rate: the peer's own peak rate instead of the recipe's (a transformer from scratch
    # need not train at a ResNet's rate); everything else stays the shared recipe.
    lr = [f"train.learning_rate={args.learning_rate}"] if args.learning_rate is not None else []
    cfg = load_config_stack([os.path.join(ROOT, EXFUSE_MODELS["quickstart"]), args.data],
                            run_overrides(args.steps, args.seed) + lr)
    keras.utils.set_random_seed(args.seed)
    model = _with_input_scaling(build_segformer_b0(cfg.data.crop_size, cfg.data.num_classes))
    model.compile(optimizer=build_optimizer(cfg, args.steps),
                  loss=SegmentationCrossEntropy(cfg.data.num_classes, cfg.data.ignore_label), jit_compile=False)
    import tensorflow as tf

    crop = cfg.data.crop_size  # SegFormer's patch embedding needs the static size the crops have
    data = make_dataset(cfg, "train", training=True, repeat=True).map(
        lambda images, masks: (tf.ensure_shape(images, [None, crop, crop, 3]), masks))
    started = time.perf_counter()
    history = model.fit(data, epochs=1, steps_per_epoch=args.steps, verbose=0)
    seconds = time.perf_counter() - started
    os.makedirs(args.output, exist_ok=True)
    model.save(os.path.join(args.output, "last.keras"))
    # A predictor (exfuse_keras/inference/loading.py) that states the static size: the val images
    # are crop_size x crop_size here (scenes), which the model is built for.
    scores = evaluate(cfg, lambda images: model(tf.ensure_shape(images, [None, crop, crop, 3]), training=False),
                      "val", progress=False)
    return {"train_seconds": seconds, "steps_run": args.steps, "params": int(model.count_params()),
            "learning_rate": float(cfg.train.learning_rate),
            "final_loss": float(history.history["loss"][-1]), "val_miou": scores["miou"],
            "per_class_iou": dict(zip(cfg.data.class_names, map(float, scores["iou"])))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("train", "latency", "accuracy"))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--data", default="configs/data/scenes_128.yaml", help="accuracy: the dataset config")
    parser.add_argument("--seed", type=int, default=0, help="accuracy: data order and initialisation")
    parser.add_argument("--output", default="runs/scenes_accuracy/segformer_b0/seed0", help="accuracy: run folder")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="accuracy: peak learning rate (default: the shared recipe's, "
                             "configs/quickstart.yaml's train.learning_rate)")
    args = parser.parse_args(argv)
    what = {"train": train, "latency": latency, "accuracy": accuracy}[args.what]
    print(json.dumps(what(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
