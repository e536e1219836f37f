"""Export latency and size: ms per 512x512 image and artefact size for every deployment format.

Usage::

    python -m exfuse_keras.bench.export_latency [--run runs/quickstart] [--size 512] [--repeats 10] [--json PATH]
    python -m exfuse_keras.bench.export_latency --quick     # a smoke test of this script: 64x64, seconds

For each model

- **quick start**: the trained run of ``--run`` (default ``runs/quickstart``; ``configs/quickstart.yaml``
  with random weights when that folder does not exist: latency does not depend on the weights),
- **ExFuse-ResNet-101**: ``configs/exfuse_resnet101.yaml`` with ``model.backbone.weights=null``
  (random initialisation, nothing downloaded),
- **ExFuse-MobileNetV3-Large**: ``configs/exfuse_mobilenetv3.yaml``, likewise,

exports every format into a temporary folder and times one ``--size`` x ``--size`` image at a time
(batch 1), after ``--warmup`` untimed calls, as the median of ``--repeats`` calls:

- ``keras predict``: ``model.predict`` (all heads, as a training run's model is called);
- ``SavedModel serving_default``: the encoded JPEG in, the mask out (decode, pad, network, argmax:
  what TF Serving runs per request, without the server);
- ``SavedModel network_logits``: the bare exported network;
- ``TFLite float32 / float16 / dynamic / int8 / int8_io``: ``ai_edge_litert`` Interpreter with
  ``--threads`` (2) threads, XNNPACK as the interpreter sets it up; int8 calibrated on
  ``--calibration-images`` smooth random images (latency does not depend on the calibration);
  int8_io fed int8 pixels (the values less 128) and read as int8 logits, as an app calls it;
- ``ONNX``: onnxruntime, CPU provider, ``--threads`` intra-op threads.

Sizes are the bytes on disk of each artefact (the SavedModel folder in total). Agreement, for the
formats that return logits (``network_logits``, TFLite, ONNX): the fraction of pixels whose argmax
equals Keras' on ``--agreement-images`` smooth random images other than the calibration ones (the
quick start's val split is the better check: tests/test_export.py). Prints one line per
measurement and a Markdown table; ``--json PATH`` also writes the rows (``model``, ``format``,
``ms``, ``mb``, ``agreement``; null where not measured) with the CPU and versions. Machines are
noisy, so compare figures from the same run only.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from exfuse_keras.bench.models import benchmark_models
from exfuse_keras.config import OUTPUT_STRIDE
from exfuse_keras.machine import cpu_description


def _megabytes(path) -> float:
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6
    return path.stat().st_size / 1e6


def _median_ms(call, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def smooth_image(size: int, seed: int) -> np.ndarray:
    """uint8 [size, size, 3]: a random 6x8 colour grid upsampled (photo-like, compresses like one)."""
    from PIL import Image

    grid = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(grid).resize((size, size), Image.BICUBIC))


def argmax_agreement(logits: list, reference: list) -> float:
    """The fraction of pixels whose argmax over the last axis matches ``reference``'s."""
    return float(np.mean([np.mean(a.argmax(-1) == b.argmax(-1)) for a, b in zip(logits, reference)]))


def measure(name, cfg, model, args, folder: Path) -> list[dict]:
    """Rows ``{"model", "format", "ms", "mb", "agreement"}`` for one model (module doc)."""
    import tensorflow as tf
    from PIL import Image

    from exfuse_keras.export import tflite
    from exfuse_keras.export.onnx import export_onnx
    from exfuse_keras.export.saved_model import export_saved_model

    size = args.size
    image = smooth_image(size, 0)
    batch = image[None].astype(np.float32)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    encoded = tf.constant([buffer.getvalue()])
    seeds = range(args.calibration_images + 1, args.calibration_images + 1 + args.agreement_images)
    checks = [smooth_image(size, seed)[None].astype(np.float32) for seed in seeds]
    reference = [_logits(model.predict(check, verbose=0)) for check in checks]
    rows = []

    def record(fmt, milliseconds, path, logits_of=None):
        row = {"model": name, "format": fmt, "ms": milliseconds,
               "mb": _megabytes(path) if path is not None else None,
               "agreement": argmax_agreement([logits_of(c) for c in checks], reference) if logits_of else None}
        rows.append(row)
        print(f"{name}, {fmt}: {milliseconds:.1f} ms/image" + (f", {row['mb']:.2f} MB" if path else "")
              + (f", argmax agreement {row['agreement']:.4f}" if logits_of else ""), flush=True)

    keras_path = folder / "model.keras"
    model.save(keras_path)
    record("keras predict", _median_ms(lambda: model.predict(batch, verbose=0), args.warmup, args.repeats),
           keras_path)

    saved_model = export_saved_model(cfg, model, str(folder / "saved_model"))
    loaded = tf.saved_model.load(saved_model)
    serving_default, network = loaded.signatures["serving_default"], loaded.signatures["network_logits"]
    record("SavedModel serving_default (JPEG in, mask out)",
           _median_ms(lambda: serving_default(image_bytes=encoded)["mask"].numpy(), args.warmup, args.repeats),
           saved_model)
    network_logits = lambda x: network(images=tf.constant(x))["logits"].numpy()  # noqa: E731
    record("SavedModel network_logits", _median_ms(lambda: network_logits(batch), args.warmup, args.repeats), None,
           network_logits)

    calibration = [smooth_image(size, seed)[None].astype(np.float32) for seed in range(1, args.calibration_images + 1)]
    for quantization in tflite.QUANTIZATIONS:
        path = folder / f"model_{quantization}.tflite"
        tflite.export_tflite(cfg, model, str(path), quantization, (size, size),
                             representative=lambda: iter(calibration))
        runner = tflite.interpreter(path, num_threads=args.threads)
        # int8_io is timed as an app calls it: int8 pixels (less 128) in, its int8 logits out as they are.
        raw = quantization == "int8_io"
        run = lambda x, runner=runner, raw=raw: tflite.run(runner, x, raw=raw)  # noqa: E731
        timed = (batch - 128).astype(np.int8) if raw else batch
        record(f"TFLite {quantization} ({args.threads} threads)", _median_ms(lambda: run(timed), args.warmup,
                                                                             args.repeats), path, run)

    if not args.no_onnx:
        import onnxruntime

        path = export_onnx(model, str(folder / "model.onnx"))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        onnx_logits = lambda x: session.run(None, {"images": x})[0]  # noqa: E731
        record(f"ONNX onnxruntime ({args.threads} threads)",
               _median_ms(lambda: onnx_logits(batch), args.warmup, args.repeats), path, onnx_logits)
    return rows


def _logits(outputs) -> np.ndarray:
    return np.asarray(outputs["logits"] if isinstance(outputs, dict) else outputs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/quickstart", help="the quick-start run folder")
    parser.add_argument("--models", default="quickstart,r101,mobilenetv3",
                        help="comma-separated: quickstart, r101, mobilenetv3, mobilenetv3_min")
    parser.add_argument("--size", type=int, default=512, help="image side (a multiple of 32)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per format (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first")
    parser.add_argument("--threads", type=int, default=2, help="TFLite / onnxruntime threads")
    parser.add_argument("--calibration-images", type=int, default=16, help="int8 calibration images")
    parser.add_argument("--agreement-images", type=int, default=4,
                        help="images on which each format's argmax is compared with Keras'")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON to PATH")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX row")
    parser.add_argument("--quick", action="store_true",
                        help="check the script runs: the quick-start model only, 64x64, one timed call")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.size, args.repeats, args.warmup = "quickstart", 64, 1, 1
        args.calibration_images, args.agreement_images = 2, 1
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.size % OUTPUT_STRIDE:
        parser.error(f"--size {args.size}: expected a multiple of {OUTPUT_STRIDE}")
    from exfuse_keras.bench.models import MODELS

    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; expected some of {', '.join(MODELS)}")

    import tensorflow as tf

    cpu = cpu_description()
    print(f"{args.size}x{args.size} images, batch 1, {os.cpu_count()} CPUs ({cpu}), TensorFlow {tf.__version__}")
    rows = []
    for name, cfg, model in benchmark_models(args.run, args.models):
        with tempfile.TemporaryDirectory(prefix="bench_export_") as folder:
            rows += measure(name, cfg, model, args, Path(folder))
    print(f"\n| model | format | ms / {args.size}² image | size (MB) | argmax agreement |\n|---|---|---|---|---|")
    for row in rows:
        size = f"{row['mb']:.2f}" if row["mb"] is not None else "(same folder)"
        agreement = f"{row['agreement']:.4f}" if row["agreement"] is not None else ""
        print(f"| {row['model']} | {row['format']} | {row['ms']:.1f} | {size} | {agreement} |")
    if args.json:
        from exfuse_keras.export.common import write_json

        write_json(args.json, {"size": args.size, "threads": args.threads, "repeats": args.repeats, "cpu": cpu,
                               "cpus": os.cpu_count(), "tensorflow": tf.__version__,
                               "agreement_images": args.agreement_images, "rows": rows})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
