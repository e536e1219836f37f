"""How often a trained run's TFLite files give Keras' class, pixel by pixel, on a data split.

Usage::

    python -m exfuse_keras.bench.tflite_agreement --weights runs/quickstart \\
        runs/quickstart/export/tflite/exfuse_int8.tflite runs/quickstart/export/tflite/exfuse_float32.tflite

For each image of ``--split`` (default val; ``--images N`` for the first N), the run's Keras model
(``best.keras``) and each file predict at the file's input size (``data.crop_size``: the pipeline's
evaluation images, padded to it) and the argmax maps are compared.
Prints, per file, the share of pixels where the two argmaxes agree, and the CPU. ``--json PATH``
also writes them. This is the check behind docs/benchmarks.md's int8 agreement figure; the tests
(tests/test_export.py) assert the same quantity on the test fixture.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def agreements(cfg, model, files, split: str = "val", images: int | None = None) -> tuple[dict, int]:
    """(``{file: share of pixels whose TFLite argmax equals Keras'}``, images compared) over the split."""
    from exfuse_keras.data.pipeline import make_dataset
    from exfuse_keras.export import tflite

    runners = {path: tflite.interpreter(path) for path in files}
    for path, runner in runners.items():
        shape = tuple(runner.get_input_details()[0]["shape"][1:3])
        side = cfg.data.crop_size
        if shape != (side, side):
            raise ValueError(f"{path}: input {shape[0]}x{shape[1]}, but the run's evaluation images are "
                             f"{side}x{side} (data.crop_size); export with --tflite-size {side},{side}")
    equal = {path: 0.0 for path in files}
    count = 0
    for batch, _ in make_dataset(cfg, split, training=False, batch_size=1):
        if images is not None and count >= images:
            break
        reference = model(batch, training=False)["logits"].numpy().argmax(-1)
        for path, runner in runners.items():
            equal[path] += float((tflite.run(runner, batch.numpy()).argmax(-1) == reference).mean())
        count += 1
    if count == 0:
        raise ValueError(f"the {split} split has no images")
    return {path: total / count for path, total in equal.items()}, count


def main(argv=None) -> int:
    from exfuse_keras.onednn import prefer_onednn

    prefer_onednn()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help=".tflite files exported from the run")
    parser.add_argument("--weights", required=True, help="the training run's folder (or a .keras file with --config)")
    parser.add_argument("--config", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--split", default="val")
    parser.add_argument("--images", type=int, default=None, help="only the first N images")
    parser.add_argument("--json", default=None, metavar="PATH")
    args = parser.parse_args(argv)
    for path in args.files:
        if not os.path.isfile(path):
            print(f"error: {path}: no such .tflite file", file=sys.stderr)
            return 2

    from exfuse_keras.inference.loading import load_run
    from exfuse_keras.machine import cpu_description

    cfg, model = load_run(args.weights, args.config, args.overrides)
    try:
        shares, count = agreements(cfg, model, args.files, args.split, args.images)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"CPU: {cpu_description()}")
    for path, share in shares.items():
        print(f"{os.path.basename(path)}: argmax agreement with Keras {share:.4f} over {count} {args.split} images")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"cpu": cpu_description(), "split": args.split, "images": count,
                       "agreement": {os.path.basename(p): s for p, s in shares.items()}}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
